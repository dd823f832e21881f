"""The download job against the real broker and Spark, with a real HTTP source on loopback."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from pipeline_lib.contracts import AttachmentResult, CachedAttachment, DeadLetter, DownloadTask
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.sample_server import sample_bytes, sample_sha256
from pipeline_lib.local.samples import presigned, sample_task
from pipeline_lib.spark.download import run_download

pytestmark = pytest.mark.integration


def test_download_job_caches_retries_and_dead_letters_each_outcome_through_one_sink(
    spark, make_kafka_settings, sample_server
):
    settings = make_kafka_settings(
        upload__mode="decoupled",  # the download alone: every downloaded file goes to xact.downloads.cached
        download__concurrency=4,
        download__read_timeout_seconds=2,
        retry__max_retry_after_seconds=60,  # Retry-After 30 is a minimum above the 1 s tier (capped at 60)
        url_policy__allow_private_addresses=False,
        url_policy__allowed_networks=["127.0.0.1/32"],
    )
    server = sample_server
    old = datetime.now(UTC) - timedelta(hours=3)
    tasks = {
        "ok": sample_task(server.url("ok.pdf", 200_000), "ok.pdf"),
        "docx": sample_task(
            server.url("memo.docx", 3000, mode="redirect", hops=2, type="application/octet-stream"), "memo.docx"
        ),
        "busy": sample_task(server.url("busy.pdf", mode="status", status=429, retry_after=30), "busy.pdf"),
        "gone": sample_task(server.url("gone.pdf", mode="status", status=404), "gone.pdf"),
        "expired": sample_task(presigned(server.url("old.pdf"), old, 3600), "old.pdf"),
        "last": sample_task(server.url("last.pdf", mode="status", status=503), "last.pdf", attempt=4),
    }
    records = [(t.trace_id, t.encode()) for t in tasks.values()] + [("junk", "{not a task")]
    produce(settings, settings.topics.pending.name, records)
    metrics = download_metrics(spark, settings)
    assert server.requests_for("old.pdf") == 0

    def read(topic):
        return [v for _, v, _ in consume_all(settings, topic)]

    cached = {
        CachedAttachment.decode(v).download_task.task_id: CachedAttachment.decode(v)
        for v in read(settings.topics.cached.name)
    }
    assert set(cached) == {tasks["ok"].task_id, tasks["docx"].task_id}
    ok = cached[tasks["ok"].task_id]
    assert (ok.bytes, ok.sha256) == (200_000, sample_sha256("ok.pdf", 200_000))
    cache_file = Path(urlsplit(ok.cache_uri).path)
    assert cache_file.is_relative_to(settings.cache_dir)
    assert hashlib.sha256(cache_file.read_bytes()).hexdigest() == ok.sha256

    retry_topic = settings.retry_topics[0]
    (retry,) = [DownloadTask.decode(v) for v in read(retry_topic)]
    assert retry.task_id == tasks["busy"].task_id and retry.attempt == 1
    waited = datetime.fromisoformat(retry.due_at.replace("Z", "+00:00")) - datetime.fromisoformat(
        retry.history[0]["at"].replace("Z", "+00:00")
    )
    assert waited.total_seconds() == pytest.approx(30, abs=0.01)  # Retry-After 30 s beats the 1 s tier

    dead = {d.task_id: d for d in (DeadLetter.decode(v) for v in read(settings.topics.dlq.name))}
    assert {d.category for d in dead.values()} == {"http_permanent", "expired", "exhausted", "malformed"}
    assert dead[tasks["expired"].task_id].reason.startswith("expired:")
    assert dead[tasks["last"].task_id].attempts == 5
    (junk,) = [d for d in dead.values() if d.category == "malformed"]
    assert junk.source.topic == settings.topics.pending.name and junk.payload == "{not a task"
    assert all(b"X-Amz-Signature=0123" not in v for v in read(settings.topics.dlq.name))

    results = [AttachmentResult.decode(v) for v in read(settings.topics.results.name)]
    assert sorted(r.status for r in results) == ["dead", "dead", "dead", "downloaded", "downloaded", "retrying"]

    assert {k: metrics[k] for k in ("cached", "retry", "dead", "malformed", "breaker_openings")} == {
        "cached": 2,
        "retry": 1,
        "dead": 3,
        "malformed": 1,
        "breaker_openings": 0,
    }
    assert metrics["bytes"] == 203_000 and metrics["worker_peak_rss_bytes"] > 0


def test_the_combined_pass_uploads_in_the_download_query_and_hands_over_what_the_lake_refused(
    spark, make_kafka_settings, sample_server, tmp_path
):
    """upload.mode combined (the default): a downloaded file is in the lake with a `completed` result
    after the download query alone; a file whose lake folder cannot be written goes to
    xact.downloads.cached with a `downloaded` result, for the upload stage; a failed download is
    routed as before."""
    lake = tmp_path / "lake"
    settings = make_kafka_settings(
        download__read_timeout_seconds=2,
        storage__lake__local_root=str(lake),
        url_policy__allow_private_addresses=False,
        url_policy__allowed_networks=["127.0.0.1/32"],
    )
    assert settings.upload.mode == "combined"
    server = sample_server
    tasks = {
        "ok": sample_task(server.url("ok.pdf", 120_000), "ok.pdf", trace_id="T-ok"),
        "refused": sample_task(server.url("refused.pdf", 4000), "refused.pdf", trace_id="T-refused"),
        "gone": sample_task(server.url("gone.pdf", mode="status", status=404), "gone.pdf", trace_id="T-gone"),
    }
    # The refused file's lake folder is a file: its upload fails, and nothing else's does.
    refused_dir = lake / settings.storage.lake.files_prefix / Path(tasks["refused"].blob_path).parent
    refused_dir.parent.mkdir(parents=True, exist_ok=True)
    refused_dir.write_bytes(b"not a folder")
    produce(settings, settings.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks.values()])
    metrics = download_metrics(spark, settings)

    ok = tasks["ok"]
    assert (lake / settings.storage.lake.files_prefix / ok.blob_path).read_bytes() == sample_bytes("ok.pdf", 120_000)
    results = {(r.task_id, r.status, r.stage) for r in map(AttachmentResult.decode, read(settings, "results"))}
    assert results == {
        (ok.task_id, "completed", "upload"),
        (tasks["refused"].task_id, "downloaded", "download"),
        (tasks["gone"].task_id, "dead", "download"),
    }
    (handed,) = [CachedAttachment.decode(v) for v in read(settings, "cached")]
    assert handed.download_task == tasks["refused"]
    assert Path(urlsplit(handed.cache_uri).path).exists()  # kept in the cache for the upload stage
    assert {k: metrics[k] for k in ("completed", "cached", "dead")} == {"completed": 1, "cached": 1, "dead": 1}


def read(settings, role: str) -> list[bytes]:
    return [v for _, v, _ in consume_all(settings, getattr(settings.topics, role).name)]


def download_metrics(spark, settings) -> dict:
    """Run the download query over what pending holds; its first batch's observed metrics."""
    query = run_download(spark, settings, available_now=True)
    try:
        query.awaitTermination(300)
        assert query.exception() is None
        progress = next(p for p in query.recentProgress if p["numInputRows"])
        metrics = progress["observedMetrics"]["download"]
        return metrics.asDict() if hasattr(metrics, "asDict") else dict(metrics)
    finally:
        query.stop()
