"""One true final state per task, through the real jobs (broker, Spark, Delta, a real source):
two events that list one URL are two tasks; a duplicate cached message after a verified upload
leaves the task completed; a reprocessed dead letter adds no second xact_dlq row, even when it
comes back stamped with another day; tables maintain cleans the cache."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline_lib.cache import cache_path, part_path
from pipeline_lib.contracts import CachedAttachment, DeadLetter, DownloadTask, SourceRef
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.spark.dlq_table import run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.ingest import run_ingest
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.table_admin import maintain
from pipeline_lib.spark.upload import run_upload
from tests.streaming import run_available_now

pytestmark = pytest.mark.integration


def values(settings, topic):
    return [v for _, v, _ in consume_all(settings, topic)]


def inventory(spark, settings):
    return {r.task_id: r for r in spark.read.format("delta").load(settings.table_path("attachments")).collect()}


def lake_files(settings):
    root = Path(settings.storage.resolve(settings.storage.lake.local_root))
    return sorted(p for p in root.rglob("*") if p.is_file())


def cache_files(settings):
    return sorted(p for p in Path(settings.cache_dir).rglob("*") if p.is_file())


def event(trace, event_type, at, urls):
    return json.dumps(
        {
            "type": f"verisk.claims.property.xn.{event_type}",
            "utcDateTime": at,
            "traceId": trace,
            "data": {"assignmentId": "A1", "attachments": urls},
        }
    )


def test_two_events_of_one_trace_listing_one_url_are_two_tasks_end_to_end(spark, make_kafka_settings, sample_server):
    s = make_kafka_settings()
    url = sample_server.url("shared/photo.jpg", 20_000)
    produce(
        s,
        s.topics.events_raw.name,
        [
            ("T-1", event("T-1", "documentsReceived", "2026-11-26T10:00:00Z", [url])),
            ("T-1", event("T-1", "documentsReceived", "2026-11-27T09:00:00Z", [url])),  # a later event, same URL
        ],
    )
    for start in (run_ingest, run_download, run_upload, run_results):
        run_available_now(start, spark, s)

    tasks = [DownloadTask.decode(v) for v in values(s, s.topics.pending.name)]
    assert len({t.task_id for t in tasks}) == 2 and len({t.event_id for t in tasks}) == 2
    rows = inventory(spark, s)
    assert set(rows) == {t.task_id for t in tasks}
    assert {r.status for r in rows.values()} == {"completed"} and len({r.blob_path for r in rows.values()}) == 2
    assert {str(r.event_date) for r in rows.values()} == {"2026-11-26", "2026-11-27"}
    assert len(lake_files(s)) == 2 and cache_files(s) == []  # one file each; the cache freed after upload


def test_a_duplicate_cached_message_after_a_verified_upload_leaves_the_task_completed(
    spark, make_kafka_settings, sample_server
):
    s = make_kafka_settings(upload__mode="decoupled")  # a cached message to redeliver
    task = replace(_task(sample_server), attempt=4)  # its last attempt: a refetch could only end dead
    produce(s, s.topics.pending.name, [(task.trace_id, task.encode())])
    for start in (run_download, run_upload, run_results):
        run_available_now(start, spark, s)
    assert inventory(spark, s)[task.task_id].status == "completed"

    (cached,) = values(s, s.topics.cached.name)
    produce(s, s.topics.cached.name, [(task.trace_id, cached)])  # redelivered or re-forwarded
    run_available_now(run_upload, spark, s)
    run_available_now(run_results, spark, s)
    row = inventory(spark, s)[task.task_id]
    assert (row.status, row.attempt) == ("completed", 4)
    assert len(values(s, s.topics.pending.name)) == 1  # no refetch: the lake already held the verified file
    assert sample_server.requests_for("dup/report.pdf") == 1
    assert not [v for v in values(s, s.topics.dlq.name)]


def _task(server):
    from pipeline_lib.local.samples import sample_task

    return sample_task(server.url("dup/report.pdf", 30_000), "report.pdf", trace_id="T-dup")


def test_a_dead_letter_reprocessed_later_or_stamped_another_day_adds_no_second_row(spark, kafka_settings):
    s = kafka_settings
    source = SourceRef(s.topics.pending.name, 0, 5)
    first = DeadLetter(
        dlq_id="a" * 32,
        stage="download",
        category="http_permanent",
        reason="HTTP 404",
        failed_at="2026-11-26T23:59:59.000Z",
        attempts=1,
        source=source,
        task_id="1" * 32,
    )
    after_midnight = DeadLetter(**{**first.__dict__, "failed_at": "2026-11-27T00:00:03.000Z"})  # re-emitted
    produce(s, s.topics.dlq.name, [("k", first.encode()), ("junk", b"\xff not a dead letter")])
    run_available_now(run_dlq_table, spark, s)
    produce(s, s.topics.dlq.name, [("k", after_midnight.encode())])
    run_available_now(run_dlq_table, spark, s)
    # The whole topic again from a new checkpoint (a user resets the job): nothing new either.
    fresh = s.model_copy(update={"storage": s.storage.model_copy(update={"checkpoint_root": "checkpoints-2"})})
    run_available_now(run_dlq_table, spark, fresh)
    rows = spark.read.format("delta").load(s.table_path("dlq")).collect()
    assert sorted((r.stage, r.category) for r in rows) == [("dlq", "malformed"), ("download", "http_permanent")]
    assert {r.failed_date for r in rows if r.stage == "download"} == {"2026-11-26"}


def test_tables_maintain_removes_stale_parts_and_files_of_final_tasks_only(spark, make_kafka_settings, sample_server):
    s = make_kafka_settings(upload__mode="decoupled")  # a downloaded file that waits in the cache
    done = _task(sample_server)
    produce(s, s.topics.pending.name, [(done.trace_id, done.encode())])
    run_available_now(run_download, spark, s)
    run_available_now(run_results, spark, s)  # `downloaded`: not final, so its cache file stays
    waiting = cache_path(s.cache_dir, done.task_id)
    stale = part_path(cache_path(s.cache_dir, "b" * 32))
    orphan = cache_path(s.cache_dir, "c" * 32)  # a task the inventory does not know: kept
    for path in (stale, orphan):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    old = time.time() - 10 * 86400
    for path in (waiting, stale, orphan):
        os.utime(path, (old, old))
    maintain(s, 168, spark=spark)
    assert waiting.exists() and orphan.exists() and not stale.exists()

    run_available_now(run_upload, spark, s)  # verified upload frees the cache itself
    assert not waiting.exists()
    cached = CachedAttachment.decode(values(s, s.topics.cached.name)[0])
    leftover = cache_path(s.cache_dir, cached.download_task.task_id)  # e.g. a crash before the unlink
    leftover.write_bytes(b"y")
    os.utime(leftover, (old, old))
    run_available_now(run_results, spark, s)  # now completed: final
    maintain(s, 168, spark=spark)
    assert not leftover.exists() and orphan.exists()
