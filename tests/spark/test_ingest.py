"""chispa tests of ingest's parse/route and flatten transforms on static DataFrames."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from chispa import assert_df_equality
from pyspark.sql import Row
from pyspark.sql import functions as F

from pipeline_lib.ids import event_id
from pipeline_lib.spark.ingest import route_events
from pipeline_lib.spark.kafka_io import kafka_records
from pipeline_lib.spark.sinks import event_rows
from pipeline_lib.spark.tables import EVENTS_SCHEMA

pytestmark = pytest.mark.integration


def raw_df(spark, values):
    rows = [
        Row(
            key=f"k{i}".encode(),
            value=None if v is None else v.encode(),
            topic="raw",
            partition=0,
            offset=i,
            timestamp=datetime(2026, 11, 27, 12, 0, i),
        )
        for i, v in enumerate(values)
    ]
    return spark.createDataFrame(
        rows, "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    )


def good(trace, urls, subtype="documentsReceived"):
    return json.dumps(
        {
            "type": f"verisk.claims.property.xn.{subtype}",
            "version": "1",
            "utcDateTime": "2026-11-26T10:00:00Z",
            "traceId": trace,
            "data": {"assignmentId": "A1", "attachments": urls},
        }
    )


def test_route_events_emits_events_tasks_and_dead_letters(spark, make_settings):
    settings = make_settings()
    routed = route_events(
        raw_df(
            spark,
            [
                good("T1", ["http://127.0.0.1/a.pdf", "ftp://h/b.pdf"]),
                "not json",
                None,
            ],
        ),
        settings,
    )
    counts = {r["kind"]: r["count"] for r in routed.groupBy("kind").count().collect()}
    assert counts == {"event": 1, "task": 1, "dlq": 3}
    kinds_topics = {(r.kind, r.topic) for r in routed.select("kind", "topic").collect()}
    assert kinds_topics == {("event", None), ("task", settings.topics.pending.name), ("dlq", settings.topics.dlq.name)}
    # The malformed records keep the producer's key for the operator.
    dlq_keys = sorted(r.key or "" for r in routed.filter("kind = 'dlq'").select("key").collect())
    assert dlq_keys == ["T1", "k1", "k2"]


def test_event_rows_flatten_to_the_table_schema(spark, make_settings):
    settings = make_settings()
    routed = route_events(
        raw_df(spark, [good("T1", []), good("T2", ["http://127.0.0.1/x.jpg"], "firstNoticeOfLossReceived")]), settings
    )
    actual = event_rows(routed).select("trace_id", "status_subtype", "event_date", "attachment_count", "event_id")
    expected = spark.createDataFrame(
        [
            (
                "T1",
                "documentsReceived",
                datetime(2026, 11, 26).date(),
                0,
                event_id("T1", "verisk.claims.property.xn.documentsReceived", "2026-11-26T10:00:00.000Z"),
            ),
            (
                "T2",
                "firstNoticeOfLossReceived",
                datetime(2026, 11, 26).date(),
                1,
                event_id("T2", "verisk.claims.property.xn.firstNoticeOfLossReceived", "2026-11-26T10:00:00.000Z"),
            ),
        ],
        actual.schema,
    )
    assert_df_equality(actual, expected, ignore_row_order=True, ignore_nullable=True)
    # The routed struct makes every field nullable; the Delta table enforces NOT NULL at write time.
    assert [(f.name, f.dataType) for f in event_rows(routed).schema] == [(f.name, f.dataType) for f in EVENTS_SCHEMA]


def test_kafka_records_carry_headers_as_binary(spark, make_settings):
    settings = make_settings()
    routed = route_events(raw_df(spark, [good("T1", ["http://127.0.0.1/a.pdf"])]), settings)
    record = kafka_records(routed.filter("kind = 'task'")).collect()[0]
    headers = {h["key"]: bytes(h["value"]).decode() for h in record.headers}
    assert headers["xact.trace_id"] == "T1" and headers["xact.attempt"] == "0"
    assert record.key == "T1" and json.loads(record.value)["schema"] == "download_task"
    assert kafka_records(routed).schema["headers"].dataType.simpleString() == "array<struct<key:string,value:binary>>"


def test_timestamps_are_utc(spark, make_settings):
    routed = route_events(raw_df(spark, [good("T1", [])]), make_settings())
    ts = event_rows(routed).select(F.date_format("utc_datetime", "yyyy-MM-dd HH:mm:ss").alias("t")).first().t
    assert ts == "2026-11-26 10:00:00"


def test_reports_summarise_events_and_refusals(spark, make_settings):
    from pipeline_lib.spark.ingest_report import events_by_day, refused_attachments

    routed = route_events(
        raw_df(spark, [good("T1", ["http://127.0.0.1/a.pdf", "ftp://h/b.pdf"]), good("T2", [])]), make_settings()
    )
    events = event_rows(routed)
    (row,) = events_by_day(events).collect()
    assert (row.events, row.with_attachments, row.attachments, row.tasks) == (2, 1, 2, 1)
    assert [r.trace_id for r in refused_attachments(events).collect()] == ["T1"]


def test_ingest_overview_notebook_runs(spark, make_settings, capsys):
    # Execute the notebook's code cells as papermill would, parameters injected after the first cell.
    from pathlib import Path

    from pipeline_lib.spark.tables import create_table, events_table

    settings = make_settings()
    create_table(spark, events_table(settings))
    events = event_rows(route_events(raw_df(spark, [good("T1", ["http://127.0.0.1/a.pdf", "ftp://h/b"])]), settings))
    events.write.format("delta").mode("append").save(settings.table_path("events"))

    notebook = Path(__file__).resolve().parents[2] / "notebooks" / "ingest_overview.ipynb"
    cells = [c for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "code"]
    import ast

    import matplotlib

    matplotlib.use("Agg")  # the chart cells draw off screen
    namespace: dict = {}
    exec("".join(cells[0]["source"]), namespace)
    namespace["overrides"] = [f"storage.root={settings.storage.root}"]
    shown = []  # what a notebook displays: each cell's last expression
    for c in cells[1:]:
        tree = ast.parse("".join(c["source"]))
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        exec(compile(tree, "cell", "exec"), namespace)
        if last is not None:
            shown.append(repr(eval(compile(ast.Expression(last.value), "cell", "eval"), namespace)))
    out = capsys.readouterr().out + "\n".join(shown)
    assert "documentsReceived" in out and "T1" in out
    assert "events arrived: " in out and "attachments of the events: 3 bar group(s)" in out


def test_drop_duplicate_keys_keeps_one_row_per_key_and_leaves_unique_rows_alone(spark):
    from pipeline_lib.spark.sinks import drop_duplicate_keys

    df = spark.createDataFrame(
        [("a", 1, "x"), ("a", 1, "x"), ("b", 2, "y"), ("c", 3, "z")], "k string, n int, v string"
    )
    assert_df_equality(
        drop_duplicate_keys(df, ["k"]),
        spark.createDataFrame([("a", 1, "x"), ("b", 2, "y"), ("c", 3, "z")], df.schema),
        ignore_row_order=True,
    )
    unique = df.filter("k != 'a'")
    assert drop_duplicate_keys(unique, ["k"]) is unique  # no duplicates: the same DataFrame, no extra work
