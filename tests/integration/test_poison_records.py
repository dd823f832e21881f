"""No input stops a query: for every stage, a poison record in the middle of good ones is
dead-lettered with its provenance, the good ones complete, and the query is still running (each
runs on its processing-time trigger, as in production, not Trigger.AvailableNow). The download
stage also runs against the hostile source mode: randomised status lines, headers and bodies."""

from __future__ import annotations

import json

import pytest

from pipeline_lib.contracts import CachedAttachment, DeadLetter, DownloadTask
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.samples import sample_event, sample_task
from pipeline_lib.routing import result_message
from pipeline_lib.spark.dlq_table import run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.ingest import run_ingest
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
from pipeline_lib.spark.upload import run_upload
from tests.streaming import run_available_now, run_until

pytestmark = pytest.mark.integration


def messages(settings, topic):
    return [v for _, v, _ in consume_all(settings, topic)]


def dead_letters(settings):
    return [DeadLetter.decode(v) for v in messages(settings, settings.topics.dlq.name)]


# Poisons that used to stop a query (issue #13), plus plain garbage.
HOSTILE_TASK_FIELDS = [
    {"url": 7},
    {"attempt": "2"},
    {"attempt": 10**12},
    {"task_id": "../../x"},
    {"blob_path": "../../../etc/cron.d/x"},
    {"due_at": "9999-12-31T23:59:59-01:00"},
]


def test_ingest_survives_hostile_events(spark, make_kafka_settings):
    s = make_kafka_settings(url_policy__allowed_hosts=[".example.com"])
    good = [json.dumps(sample_event(i, "https://files.example.com", attachments=1)) for i in range(1, 4)]
    poison = [
        json.dumps(
            {
                **sample_event(9, "https://files.example.com", attachments=0),
                "data": {
                    "assignmentId": "A",
                    "attachments": ["https://files.example.com:99999/a.pdf", "https://[files.example.com/b.pdf"],
                },
            }
        ),
        json.dumps(
            {**sample_event(8, "https://files.example.com", attachments=0), "utcDateTime": "9999-12-31T23:59:59-01:00"}
        ),
        b"\xff\xfe not utf-8",
    ]
    produce(s, s.topics.events_raw.name, [("k", v) for v in [good[0], *poison, *good[1:]]])
    run_until(run_ingest, spark, s, lambda: len(messages(s, s.topics.pending.name)) >= 3 and len(dead_letters(s)) >= 4)
    tasks = [DownloadTask.decode(v) for v in messages(s, s.topics.pending.name)]
    assert len(tasks) == 3
    reasons = {d.category: d.reason for d in dead_letters(s)}
    assert set(reasons) == {"policy", "malformed"}
    assert "9999-12-31" in " ".join(d.reason for d in dead_letters(s))  # the overflowing time, by field


def test_download_survives_poison_tasks_and_a_hostile_source(spark, make_kafka_settings, sample_server):
    s = make_kafka_settings(
        upload__mode="decoupled",  # the download alone: its good files on xact.downloads.cached
        download__total_timeout_seconds=3,
        download__read_timeout_seconds=2,
        url_policy__allow_private_addresses=False,
        url_policy__allowed_networks=["127.0.0.1/32"],
    )
    good = [sample_task(sample_server.url(f"good/{i}.pdf", 5000), f"{i}.pdf", trace_id=f"G{i}") for i in range(3)]
    hostile = [
        sample_task(sample_server.url(f"h/{seed}.pdf", mode="hostile", seed=seed), f"{seed}.pdf", trace_id=f"H{seed}")
        for seed in range(24)
    ]
    body = json.loads(good[0].encode())
    poisons = [json.dumps({**body, **fields}) for fields in HOSTILE_TASK_FIELDS] + ['{"schema": "download_task"']
    records = [(t.trace_id, t.encode()) for t in good[:1]] + [("p", p) for p in poisons]
    records += [(t.trace_id, t.encode()) for t in (*good[1:], *hostile)]
    produce(s, s.topics.pending.name, records)
    everything = len(good) + len(hostile)

    def routed():
        results = {json.loads(v)["task_id"] for v in messages(s, s.topics.results.name)}
        return len(results) >= everything and len(dead_letters(s)) >= len(poisons)

    run_until(run_download, spark, s, routed)
    cached = {CachedAttachment.decode(v).download_task.task_id for v in messages(s, s.topics.cached.name)}
    assert {t.task_id for t in good} <= cached
    poisoned = [d for d in dead_letters(s) if d.category == "malformed"]
    assert len(poisoned) == len(poisons) and all(d.source.topic == s.topics.pending.name for d in poisoned)


def test_upload_survives_a_poison_cached_message(spark, make_kafka_settings, sample_server):
    s = make_kafka_settings(upload__mode="decoupled")  # the upload stage's input from a real download
    tasks = [sample_task(sample_server.url(f"u/{i}.pdf", 4000), f"{i}.pdf", trace_id=f"U{i}") for i in range(3)]
    produce(s, s.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks])
    run_available_now(run_download, spark, s)
    cached = messages(s, s.topics.cached.name)
    bad_task = json.dumps({**json.loads(cached[0]), "task": "not an object"})
    produce(s, s.topics.cached.name, [("p", bad_task)])  # after the three good ones
    run_until(run_upload, spark, s, lambda: len(messages(s, s.topics.results.name)) >= 6 and dead_letters(s))
    completed = [json.loads(v) for v in messages(s, s.topics.results.name) if b'"completed"' in v]
    assert len(completed) == 3
    (dead,) = dead_letters(s)
    assert (dead.category, dead.stage, dead.source.topic) == ("malformed", "upload", s.topics.cached.name)


def test_results_survive_poison_results(spark, kafka_settings):
    s = kafka_settings
    good = sample_task("https://files.example.com/r.pdf", "r.pdf", trace_id="R1")
    from datetime import UTC, datetime

    ok = result_message(good, "upload", "completed", datetime.now(UTC)).encode()
    poison = json.dumps({**json.loads(ok), "attempt": 9223372036854775807, "http_status": "x"})
    produce(s, s.topics.results.name, [("R1", ok), ("R1", poison), ("R1", b"\x00\x01")])

    def done():
        try:
            rows = spark.read.format("delta").load(s.table_path("attachments")).count()
        except Exception:  # noqa: BLE001 - the table appears with the first batch
            return False
        return rows == 1 and len(dead_letters(s)) == 2

    run_until(run_results, spark, s, done)
    assert {d.source.offset for d in dead_letters(s)} == {1, 2}


def test_the_retry_scheduler_survives_poison_retry_messages(spark, kafka_settings):
    s = kafka_settings
    tier = s.retry_topics[0]
    task = sample_task(
        "https://files.example.com/s.pdf",
        "s.pdf",
        trace_id="S1",
        attempt=1,
        due_at="2026-01-01T00:00:00.000Z",
        retry_stage="download",
        return_topic=s.topics.pending.name,
    )
    headers = task.headers()
    far = {**headers, "xact.retry.due_at": "2199-12-31T00:00:00Z"}
    produce(
        s,
        tier,
        [
            ("S1", task.encode(), headers),
            ("p", "x", far),
            ("p", "y", {"xact.retry.due_at": "²"}),
            ("S1b", task.encode(), headers),
        ],
    )

    run_until(run_retry_scheduler, spark, s, lambda: messages(s, s.topics.pending.name) and len(dead_letters(s)) == 2)
    assert all(d.stage == "retry" and d.source.topic == tier for d in dead_letters(s))
    assert any("later than any retry tier" in d.reason for d in dead_letters(s))


def test_the_dlq_table_job_turns_poison_into_rows_and_never_writes_back_to_the_dlq(spark, kafka_settings):
    s = kafka_settings
    good = DeadLetter(
        dlq_id="b" * 32, stage="download", category="expired", reason="expired", failed_at="2026-11-27T10:00:00.000Z"
    )
    hostile = json.dumps(
        {
            **json.loads(good.encode()),
            "dlq_id": "c" * 32,
            "error_history": [{"http_status": "NaN"}, {"http_status": 10**30}],
        }
    )
    produce(s, s.topics.dlq.name, [("a", good.encode()), ("b", b"\xff"), ("c", hostile), ("d", "[]")])

    def done():
        try:
            return spark.read.format("delta").load(s.table_path("dlq")).count() == 4
        except Exception:  # noqa: BLE001 - the table appears with the first batch
            return False

    run_until(run_dlq_table, spark, s, done)
    rows = {r.dlq_id: r for r in spark.read.format("delta").load(s.table_path("dlq")).collect()}
    assert rows["c" * 32].http_status is None  # a hostile number never reaches the table
    assert sorted(r.stage for r in rows.values()) == ["dlq", "dlq", "download", "download"]
    assert len(messages(s, s.topics.dlq.name)) == 4  # nothing sent back onto the DLQ topic
