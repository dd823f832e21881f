"""xact_dlq and replay against the real broker, Spark and Delta: a round trip from a dead download
to a successful one, idempotent table writes, dry runs, a second replay that does nothing, resolve."""

from __future__ import annotations

import json

import pytest

from pipeline_lib.contracts import AttachmentResult, DownloadTask
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.samples import sample_task
from pipeline_lib.replay import DlqSelection
from pipeline_lib.spark.dlq_table import run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.replay import replay, resolve
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.tables import read_table
from tests.streaming import run_available_now

pytestmark = pytest.mark.integration


def inventory(spark, settings):
    return {r.task_id: r for r in spark.read.format("delta").load(settings.table_path("attachments")).collect()}


def values(settings, topic):
    return [v for _, v, _ in consume_all(settings, topic)]


def test_dead_downloads_land_once_in_xact_dlq_and_a_replay_round_trip_succeeds(spark, kafka_settings, sample_server):
    s, server = kafka_settings, sample_server
    # 404 on the first request only: dead on the first run, fine when replayed.
    tasks = [
        sample_task(server.url(f"{n}.pdf", 1000, mode="flaky", fail=1, status=404, sig="SECRET"), f"{n}.pdf")
        for n in ("a", "b")
    ]
    produce(s, s.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks])
    run_available_now(run_download, spark, s)
    produce(s, s.topics.dlq.name, [("junk", "not a dead letter")])
    run_available_now(run_dlq_table, spark, s)
    # The same dead letters delivered again (at-least-once upstream) add no row.
    letters = [v for v in values(s, s.topics.dlq.name) if b'"schema":"dead_letter"' in v]
    assert len(letters) == 2
    produce(s, s.topics.dlq.name, [(None, v) for v in letters])
    run_available_now(run_dlq_table, spark, s)

    rows = {r.task_id or r.stage: r for r in read_table(spark, s, "dlq").collect()}
    assert len(rows) == 3 and {r.status for r in rows.values()} == {"open"}
    dead = rows[tasks[0].task_id]
    assert (dead.stage, dead.category, dead.http_status, dead.host, dead.attempts) == (
        "download",
        "http_permanent",
        404,
        "127.0.0.1",
        1,
    )
    assert "SECRET" not in dead.url and "SECRET" not in dead.task_json
    assert dead.source_topic == s.topics.pending.name and json.loads(dead.error_history_json)[0]["http_status"] == 404
    assert (rows["dlq"].category, rows["dlq"].payload) == ("malformed", "not a dead letter")

    selection = DlqSelection(categories=("http_permanent",))
    dry = replay(spark, s, selection, dry_run=True)
    assert sorted(r["task_id"] for r in dry.replayed) == sorted(t.task_id for t in tasks)
    assert len(values(s, s.topics.pending.name)) == 2  # a dry run publishes nothing
    assert {r.status for r in read_table(spark, s, "dlq").collect()} == {"open"}

    everything = replay(spark, s, DlqSelection(), dry_run=True)
    assert [x["reason"] for x in everything.skipped] == [
        "a dlq dead letter carries no task; fix the input upstream and re-send it"
    ]

    # Kafka down: the dry run says so in one line and lists every row as skipped; a replay refuses.
    down = s.model_copy(update={"kafka": s.kafka.model_copy(update={"bootstrap_servers": "127.0.0.1:1"})})
    offline = replay(spark, down, selection, dry_run=True)
    assert not offline.replayed and {x["reason"] for x in offline.skipped} == {
        "its source record cannot be read: Kafka is not reachable"
    }
    with pytest.raises(PipelineError, match="replay needs Kafka .* 127.0.0.1:1"):
        replay(spark, down, selection, dry_run=False)
    assert {r.status for r in read_table(spark, s, "dlq").collect()} == {"open"}

    report = replay(spark, s, selection, dry_run=False, note="source fixed")
    assert len(report.replayed) == 2 and not report.skipped
    again = [t for t in map(DownloadTask.decode, values(s, s.topics.pending.name)) if t.replay_id]
    assert len(again) == 2
    assert all(t.attempt == 0 and t.replay_id == report.replay_id and t.history == [] for t in again)
    assert {t.url for t in again} == {t.url for t in tasks}  # the live URL, recovered from the source record
    marked = {r.task_id: r for r in read_table(spark, s, "dlq").collect() if r.task_id}
    assert {(r.status, r.replay_id, r.replay_count, r.note) for r in marked.values()} == {
        ("replayed", report.replay_id, 1, "source fixed")
    }
    assert json.loads(marked[tasks[0].task_id].replay_selection)["categories"] == ["http_permanent"]

    second = replay(spark, s, selection, dry_run=False)
    assert second.replayed == [] and len(values(s, s.topics.pending.name)) == 4
    assert len(replay(spark, s, selection, dry_run=True, force=True).replayed) == 2

    run_available_now(run_results, spark, s)  # the first life: dead after attempt 0
    assert {r.status for r in inventory(spark, s).values()} == {"dead"}
    run_available_now(run_download, spark, s)  # the combined pass: downloaded and uploaded in one go
    completed = [r for r in map(AttachmentResult.decode, values(s, s.topics.results.name)) if r.status == "completed"]
    assert sorted(r.task_id for r in completed) == sorted(t.task_id for t in tasks)
    assert {r.replay_id for r in completed} == {report.replay_id} and {r.replay_generation for r in completed} == {1}
    assert values(s, s.topics.cached.name) == []  # nothing left for the upload stage
    run_available_now(run_results, spark, s)
    # The replay restarted at attempt 0, yet its completion replaces the dead row: lineage ranks first.
    rows = inventory(spark, s)
    assert {(r.status, r.attempt, r.replay_generation, r.replay_id) for r in rows.values()} == {
        ("completed", 0, 1, report.replay_id)
    }

    assert resolve(spark, s, DlqSelection(stages=("dlq",)), "junk from a test producer") == 1
    junk = next(r for r in read_table(spark, s, "dlq").collect() if r.stage == "dlq")
    assert (junk.status, junk.note) == ("resolved", "junk from a test producer") and junk.resolved_at is not None
