"""The ingest job against the real broker, Spark and Delta: the exact tasks, rows and dead letters."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline_lib.contracts import DeadLetter, DownloadTask, SourceRef
from pipeline_lib.events import IngestOptions, IngestResult, ingest_record
from pipeline_lib.ids import event_id, task_id
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.spark import sinks as sinks_module
from pipeline_lib.spark.ingest import ROUTED_SCHEMA, route_events, routed_rows, run_ingest
from pipeline_lib.spark.sinks import IngestBatchWriter, event_rows
from pipeline_lib.spark.tables import create_table, events_table
from pipeline_lib.url_policy import UrlPolicy
from tests.streaming import run_available_now

pytestmark = pytest.mark.integration

OK = "https://files.example.com/claims/{}?X-Amz-Date=20261127T000000Z&X-Amz-Expires=3600&X-Amz-Signature=SECRET"


def event(trace, urls, subtype="documentsReceived", data_as_string=False, **data_extra):
    data = {"assignmentId": f"A-{trace}", "attachments": urls, "estimateVersion": "3.0", **data_extra}
    return json.dumps(
        {
            "type": f"verisk.claims.property.xn.{subtype}",
            "version": "1",
            "utcDateTime": "2026-11-20T08:00:00Z",
            "traceId": trace,
            "data": json.dumps(data) if data_as_string else data,
        }
    )


def run_once(spark, settings):
    run_available_now(run_ingest, spark, settings)


def read_topic(settings, topic):
    return [(k, v, h) for k, v, h in consume_all(settings, topic)]


@pytest.fixture
def settings(make_kafka_settings):
    s = make_kafka_settings(url_policy__allowed_hosts=[".example.com"])
    return s


def test_ingest_produces_exact_tasks_rows_and_dead_letters_and_ignores_duplicates(spark, settings):
    raw = settings.topics.events_raw.name
    traversal = "https://files.example.com/x/..%2F..%2Fetc%2Fpasswd"
    first = [
        ("T1", event("T1", [OK.format("a.jpg"), OK.format("b.pdf")])),
        ("T2", event("T2", [OK.format("est.docx")], "estimatePackageReceived", data_as_string=True)),
        ("T3", event("T3", [])),  # no attachments: a row, no task
        (
            "T4",
            event(
                "T4",
                [OK.format("ok.png"), "ftp://files.example.com/a.pdf", "https://evil.test/x.pdf?sig=SECRET", traversal],
                "firstNoticeOfLossReceived",
            ),
        ),
        ("T1", event("T1", [OK.format("a.jpg"), OK.format("b.pdf")])),  # duplicate in the same batch
        ("bad-1", "definitely { not json"),
        ("bad-2", "[1, 2, 3]"),
        ("bad-3", json.dumps({"type": "a.b.documentsReceived", "utcDateTime": "2026-11-20T08:00:00Z", "data": {}})),
        (
            "bad-4",
            json.dumps({"type": "a.b.c", "utcDateTime": "2026-11-20T08:00:00Z", "traceId": "T5", "data": "{oops"}),
        ),
        (
            "bad-5",
            json.dumps(
                {
                    "type": "a.b.c",
                    "utcDateTime": "2026-11-20T08:00:00Z",
                    "traceId": "T6",
                    "data": {"assignmentId": "A", "attachments": "https://files.example.com/a.pdf"},
                }
            ),
        ),
    ]
    produce(settings, raw, first)
    run_once(spark, settings)

    # Redelivery after a restart (same checkpoint): T1 again and T2 again, plus one new event.
    produce(settings, raw, [first[0], first[1], ("T7", event("T7", [OK.format("late.jpg")]))])
    run_once(spark, settings)

    tasks = [DownloadTask.decode(v) for _, v, _ in read_topic(settings, settings.topics.pending.name)]
    expected_urls = {
        "T1": [OK.format("a.jpg"), OK.format("b.pdf")],
        "T2": [OK.format("est.docx")],
        "T4": [OK.format("ok.png"), traversal],
        "T7": [OK.format("late.jpg")],
    }
    subtype_of = {"T2": "estimatePackageReceived", "T4": "firstNoticeOfLossReceived"}

    def event_of(trace):
        subtype = subtype_of.get(trace, "documentsReceived")
        return event_id(trace, f"verisk.claims.property.xn.{subtype}", "2026-11-20T08:00:00.000Z")

    expected_ids = sorted(task_id(event_of(t), u) for t, urls in expected_urls.items() for u in urls)
    assert sorted(t.task_id for t in tasks) == expected_ids  # exactly once each, duplicates included
    by_trace = {t.trace_id: t for t in tasks}
    assert by_trace["T2"].blob_path.startswith("estimatePackageReceived/A-T2/T2/A-T2_3.0_est_")
    assert all(".." not in t.blob_path and t.blob_path.count("/") == 3 for t in tasks)
    assert any("_FNOL_" in t.blob_path for t in tasks if t.trace_id == "T4")

    rows = spark.read.format("delta").load(settings.table_path("events"))
    assert sorted(r.trace_id for r in rows.select("trace_id").collect()) == ["T1", "T2", "T3", "T4", "T7"]
    assert {r.event_date.isoformat() for r in rows.select("event_date").collect()} == {"2026-11-20"}
    assert rows.filter("raw_json LIKE '%SECRET%'").count() == 0

    dead = sorted(
        (DeadLetter.decode(v) for _, v, _ in read_topic(settings, settings.topics.dlq.name)),
        key=lambda d: (d.source.offset if d.source else -1, d.reason),
    )
    summary = sorted((d.category, d.reason.split(";")[0].split(" (")[0]) for d in dead)
    assert summary == sorted(
        [
            ("malformed", "the message is not valid JSON"),
            ("malformed", "the message is a JSON list"),
            ("malformed", "required field traceId"),
            ("malformed", "field data is a string but not valid JSON"),
            ("malformed", "field data.attachments must be a list of URL strings, got a str"),
            ("policy", "attachment 1 refused"),
            ("policy", "attachment 2 refused"),
        ]
    )
    for d in dead:
        assert d.stage == "ingest" and d.source.topic == raw and d.source.timestamp
    assert "SECRET" not in json.dumps([d.to_dict() for d in dead])
    headers = [h for _, _, h in read_topic(settings, settings.topics.dlq.name)]
    assert all(h["xact.errors.topic"] == raw and "xact.errors.offset" in h for h in headers)


def test_replaying_a_batch_after_the_delta_commit_adds_nothing(spark, settings):
    produce(settings, settings.topics.events_raw.name, [("T1", event("T1", [OK.format("a.jpg")]))])
    routed = route_events(
        spark.read.format("kafka")
        .options(
            **{
                "kafka.bootstrap.servers": settings.kafka.bootstrap_servers,
                "subscribe": settings.topics.events_raw.name,
                "startingOffsets": "earliest",
            }
        )
        .load(),
        settings,
    )
    create_table(spark, events_table(settings))
    writer = IngestBatchWriter(settings, app_id="test-replay")
    writer(routed, 0)
    writer(routed, 0)  # the same batch again: a crash after the commit, before the checkpoint
    assert len(read_topic(settings, settings.topics.pending.name)) == 1
    assert spark.read.format("delta").load(settings.table_path("events")).count() == 1


@pytest.mark.parametrize("lookup", ["literal ids", "broadcast join"])
def test_a_corrected_re_send_adds_its_new_attachments_as_tasks_and_nothing_else(spark, settings, lookup, monkeypatch):
    if lookup == "broadcast join":  # the path of batches with more than MAX_LITERAL_IDS events
        monkeypatch.setattr(sinks_module, "MAX_LITERAL_IDS", 0)
    raw = settings.topics.events_raw.name
    first = event("T8", [OK.format("a.jpg"), OK.format("b.pdf")])
    corrected = event("T8", [OK.format("a.jpg").replace("SECRET", "RESIGNED"), OK.format("c.png")])
    produce(settings, raw, [("T8", first)])
    run_once(spark, settings)
    produce(settings, raw, [("T8", corrected), ("T8", first)])  # the correction, then a plain redelivery
    run_once(spark, settings)
    produce(settings, raw, [("T8", corrected)])  # the correction again, in a later batch
    run_once(spark, settings)

    tasks = [DownloadTask.decode(v) for _, v, _ in read_topic(settings, settings.topics.pending.name)]
    names = sorted(t.blob_path.rsplit("/", 1)[1].split("_")[1] for t in tasks)
    assert names == ["a", "b", "c"]  # a.jpg (re-signed: the same task) once; c.png added by the correction
    rows = spark.read.format("delta").load(settings.table_path("events")).collect()
    assert len(rows) == 2 and len({r.revision for r in rows}) == 2 and len({r.event_id for r in rows}) == 1


def test_an_event_recorded_before_ids_kept_queries_emits_nothing_again_when_redelivered(spark, settings):
    """Record an event as ingest recorded it before attachment identities kept their query (the
    legacy revision and task ids), redeliver it now: nothing is emitted again, so no second
    inventory row or lake file can follow. A new event with the same URLs gets one task each."""
    raw, pending, dlq = settings.topics.events_raw.name, settings.topics.pending.name, settings.topics.dlq.name
    signed = "https://files.example.com/claims/download?fileId={}&X-Amz-Signature=SECRET&X-Amz-Date=20261127T000000Z"
    urls = [signed.format(1001), signed.format(1002), OK.format("plain.pdf"), "ftp://files.example.com/x.pdf"]
    old, new = event("T-OLD", urls), event("T-NEW", urls)
    options = IngestOptions.from_settings(settings)
    policy = UrlPolicy.from_settings(settings.url_policy)
    decided = ingest_record(old, SourceRef(raw, 0, 0, "2026-11-20T08:00:01.000Z"), policy, datetime.now(UTC), options)
    assert decided.legacy_revision is not None and len(decided.tasks) == 3
    # What the earlier ingest recorded: its revision, and one task id for both fileId URLs.
    legacy_ids = list(dict.fromkeys(decided.legacy_task_ids.get(t.task_id, t.task_id) for t in decided.tasks))
    assert len(legacy_ids) == 2
    recorded = {**decided.event, "revision": decided.legacy_revision, "task_ids": legacy_ids, "identity_version": None}
    spec = events_table(settings)
    create_table(spark, spec)
    rows = routed_rows(IngestResult(event=recorded), pending, dlq, None)
    event_rows(spark.createDataFrame(rows, ROUTED_SCHEMA)).write.format("delta").mode("append").save(spec.path)

    produce(settings, raw, [("T-OLD", old), ("T-NEW", new)])
    run_once(spark, settings)

    tasks = [DownloadTask.decode(v) for _, v, _ in read_topic(settings, pending)]
    assert sorted(t.trace_id for t in tasks) == ["T-NEW"] * 3  # the old event: nothing again
    assert len({t.blob_path for t in tasks}) == 3
    dead = [DeadLetter.decode(v) for _, v, _ in read_topic(settings, dlq)]
    assert [d.trace_id for d in dead] == ["T-NEW"]  # the ftp:// refusal was emitted for T-OLD before
    events = spark.read.format("delta").load(spec.path).collect()
    assert sorted(r.trace_id for r in events) == ["T-NEW", "T-OLD"]  # no second row for the old event

    # Recorded under today's rule, a URL that differs from a recorded one only in its query is a
    # new attachment: a correction that adds `?fileId=1002` next to the plain URL emits it.
    plain = "https://files.example.com/claims/download"
    produce(settings, raw, [("T-NOW", event("T-NOW", [plain]))])
    run_once(spark, settings)
    produce(settings, raw, [("T-NOW", event("T-NOW", [plain, f"{plain}?fileId=1002"]))])
    run_once(spark, settings)
    now = [DownloadTask.decode(v) for _, v, _ in read_topic(settings, pending)]
    now = sorted(t.url for t in now if t.trace_id == "T-NOW")
    assert now == [plain, f"{plain}?fileId=1002"]


def test_new_events_skip_the_lookup_and_a_redelivery_is_caught_in_a_later_batch_and_after_a_restart(spark, settings):
    """The per-date filters (pipeline_lib/recorded_ids.py): a batch of new events reads nothing
    from xact_events; a redelivery is looked up whether the job saw it (filters fed before the
    append) or a restarted job did not (filters built from the table)."""
    raw, pending = settings.topics.events_raw.name, settings.topics.pending.name

    def run(writer, *traces):
        produce(settings, raw, [(t, event(t, [OK.format(f"{t}.pdf")])) for t in traces])
        run_available_now(lambda *a, **k: run_ingest(*a, **k, writer=writer), spark, settings)
        return sorted(DownloadTask.decode(v).trace_id for _, v, _ in read_topic(settings, pending))

    writer = IngestBatchWriter(settings)
    assert run(writer, "T20") == ["T20"]
    assert writer.lookups == 0  # only new events: no read of the table's rows
    assert run(writer, "T20", "T21") == ["T20", "T21"]  # the redelivery emits nothing
    assert writer.lookups == 1 and writer.recorded.builds == 1  # one date, built once, then fed

    restarted = IngestBatchWriter(settings)  # another process: nothing in memory
    assert run(restarted, "T21", "T22") == ["T20", "T21", "T22"]
    assert restarted.lookups == 1 and restarted.recorded.builds == 1
    assert run(restarted, "T23") == ["T20", "T21", "T22", "T23"]
    assert restarted.lookups == 1
    rows = spark.read.format("delta").load(settings.table_path("events")).collect()
    assert sorted(r.trace_id for r in rows) == ["T20", "T21", "T22", "T23"]
