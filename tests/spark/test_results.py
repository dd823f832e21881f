"""The results job's transforms and Delta writes (chispa, real Spark and Delta)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from pyspark.sql import Row

from pipeline_lib.contracts import AttachmentResult
from pipeline_lib.spark.results import latest_per_task, merge_results, parse_results
from pipeline_lib.spark.tables import ATTACHMENTS_SCHEMA, TableMissing, attachments_table, create_table

pytestmark = pytest.mark.integration


def result(task="t1", attempt=0, status="retrying", at="2026-11-27T10:00:00Z", **kw) -> str:
    fields = dict(
        task_id=task, trace_id="T1", attempt=attempt, stage="download", status=status, occurred_at=at,
        event_date="2026-11-20", attachment_url="https://h/c/a.PDF?X-Amz-Signature=SECRET",
        blob_path="documentsReceived/A1/T1/A1_a_0123456789.PDF", created_at="2026-11-27T09:59:00Z",
    )  # fmt: skip
    fields.update(kw)
    return AttachmentResult(**fields).encode()


def kafka_df(spark, values):
    rows = [
        Row(key=b"T1", value=v.encode(), topic="results", partition=0, offset=i, timestamp=datetime(2026, 11, 27, 12))
        for i, v in enumerate(values)
    ]
    schema = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    return spark.createDataFrame(rows, schema)


def good_rows(spark, values):
    return parse_results(kafka_df(spark, values)).filter("_malformed IS NULL")


def table_rows(spark, spec):
    return spark.read.format("delta").load(spec.path)


@pytest.fixture
def spec(spark, make_settings):
    spec = attachments_table(make_settings())
    create_table(spark, spec)
    return spec


def test_parse_marks_malformed_results_with_a_reason(spark):
    parsed = parse_results(kafka_df(spark, [
        result(), "not json", '{"schema": "download_task", "version": 1}',
        '{"schema": "attachment_result", "version": 1, "trace_id": "T"}',
        result().replace("2026-11-27T10:00:00Z", "yesterday"),
        result().replace("2026-11-20", "someday"),
    ]))  # fmt: skip
    reasons = [r._malformed for r in parsed.orderBy("offset").collect()]
    assert reasons == [
        None,
        "the message is not a JSON object with a schema field",
        "expected schema attachment_result, got download_task",
        "required field task_id or trace_id is missing",
        "field occurred_at must be an ISO 8601 date-time",
        "field event_date must be YYYY-MM-DD",
    ]
    row = parsed.filter("_malformed IS NULL").first()
    assert row.file_type == "pdf" and row.attempts == 1 and "SECRET" not in row.attachment_url


DONE = "2026-11-27T10:09:00Z"


def test_latest_outcome_wins_within_a_batch_and_first_seen_is_the_earliest(spark):
    rows = good_rows(spark, [
        result(attempt=1, status="completed", stage="upload", at=DONE, bytes=10, uploaded_at=DONE),
        result(attempt=0, status="retrying", at="2026-11-27T10:00:00Z", http_status=503),
        result(attempt=1, status="downloaded", at="2026-11-27T10:08:00Z"),
        result(attempt=1, status="completed", stage="upload", at=DONE, bytes=10, uploaded_at=DONE),
    ])  # fmt: skip
    (row,) = latest_per_task(rows).collect()
    assert (row.status, row.attempt, row.attempts, row.bytes) == ("completed", 1, 2, 10)
    assert row.first_seen_at == datetime(2026, 11, 27, 10, 0) and row.updated_at == datetime(2026, 11, 27, 10, 9)


def test_a_late_older_outcome_never_overwrites_a_newer_one(spark, spec):
    merge_results(
        latest_per_task(good_rows(spark, [result(attempt=2, status="completed", at="2026-11-27T11:00:00Z")])), spec
    )
    merge_results(latest_per_task(good_rows(spark, [
        result(attempt=1, status="retrying", at="2026-11-27T10:30:00Z", http_status=429),
        result(task="t2", attempt=0, status="dead", at="2026-11-27T10:31:00Z", error_category="permanent"),
    ])), spec)  # fmt: skip
    rows = {r.task_id: r for r in table_rows(spark, spec).collect()}
    assert set(rows) == {"t1", "t2"}
    assert rows["t1"].status == "completed" and rows["t1"].attempt == 2 and rows["t1"].http_status is None
    assert rows["t1"].first_seen_at == datetime(2026, 11, 27, 10, 30)  # moved earlier by the late message
    assert rows["t2"].status == "dead" and rows["t2"].error_category == "permanent"


def test_replaying_a_whole_batch_changes_nothing(spark, spec):
    batch = latest_per_task(good_rows(spark, [result(), result(task="t2", status="completed", attempt=0)]))
    merge_results(batch, spec)
    before = table_rows(spark, spec).collect()
    merge_results(batch, spec)
    assert_df_equality(table_rows(spark, spec), spark.createDataFrame(before, table_rows(spark, spec).schema),
                       ignore_row_order=True)  # fmt: skip
    assert table_rows(spark, spec).count() == 2


def test_rerunning_a_committed_batch_id_is_skipped_by_delta(spark, spec):
    # A crash after the Delta commit but before the checkpoint: Spark re-runs the same batch id.
    merge_results(latest_per_task(good_rows(spark, [result()])), spec, app_id="results-q1", batch_id=7)
    version = DeltaTable.forPath(spark, spec.path).history(1).first().version
    merge_results(latest_per_task(good_rows(spark, [result(attempt=3, status="completed")])), spec, "results-q1", 7)
    assert DeltaTable.forPath(spark, spec.path).history(1).first().version == version
    assert table_rows(spark, spec).first().status == "retrying"
    # The next batch id is applied.
    merge_results(latest_per_task(good_rows(spark, [result(attempt=3, status="completed")])), spec, "results-q1", 8)
    assert table_rows(spark, spec).first().status == "completed"
    assert spark.conf.get("spark.databricks.delta.write.txnAppId", None) is None  # session left clean


def test_table_schema_and_partitioning(spark, spec):
    table = table_rows(spark, spec)
    assert [(f.name, f.dataType) for f in table.schema] == [(f.name, f.dataType) for f in ATTACHMENTS_SCHEMA]
    detail = DeltaTable.forPath(spark, spec.path).detail().first()
    assert detail.partitionColumns == ["event_date"]


def test_no_table_is_created_or_overwritten_on_failure(spark, spec, tmp_path):
    missing = replace(spec, path=str(tmp_path / "nowhere" / "xact_attachments"))
    with pytest.raises(TableMissing, match=r"does not exist at .*; create it with `xact-pipeline tables create`"):
        merge_results(latest_per_task(good_rows(spark, [result()])), missing)
    assert not DeltaTable.isDeltaTable(spark, missing.path)

    merge_results(latest_per_task(good_rows(spark, [result()])), spec)
    version = DeltaTable.forPath(spark, spec.path).history(1).first().version
    broken = latest_per_task(good_rows(spark, [result(task="t9")])).withColumn("trace_id", spark_null())
    with pytest.raises(Exception):  # noqa: B017 - Delta's NOT NULL violation
        merge_results(broken, spec)
    assert DeltaTable.forPath(spark, spec.path).history(1).first().version == version
    assert [r.task_id for r in table_rows(spark, spec).collect()] == ["t1"]
    create_table(spark, spec)  # creating again is a no-op, never a replace
    assert table_rows(spark, spec).count() == 1


def spark_null():
    from pyspark.sql import functions as F

    return F.lit(None).cast("string")
