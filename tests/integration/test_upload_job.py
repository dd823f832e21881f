"""The upload job on the real broker and Spark, with the cache and the lake on different roots
(as on a cluster): verified uploads, a lost cache file downloaded again by the upload itself
(no attempt used), and the inventory row per task at the end."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_lib.contracts import AttachmentResult, CachedAttachment, DownloadTask
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.sample_server import sample_bytes
from pipeline_lib.local.samples import sample_task
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.upload import run_upload
from tests.streaming import run_available_now

pytestmark = pytest.mark.integration


def test_upload_moves_verified_files_into_the_lake_and_sends_lost_cache_files_back(
    spark, make_kafka_settings, sample_server, tmp_path
):
    s = make_kafka_settings(
        upload__mode="decoupled",  # every downloaded file through xact.downloads.cached
        download__cache_dir=str(tmp_path / "host-a" / "cache"),
        storage__lake__local_root=str(tmp_path / "lakehouse" / "Files"),
    )
    server = sample_server
    tasks = [sample_task(server.url(f"{n}.pdf", 150_000), f"{n}.pdf", trace_id=f"T-{n}") for n in ("kept", "lost")]
    produce(s, s.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks])
    run_available_now(run_download, spark, s)
    cached = {
        CachedAttachment.decode(v).download_task.task_id: CachedAttachment.decode(v)
        for _, v, _ in consume_all(s, s.topics.cached.name)
    }
    Path(cached[tasks[1].task_id].cache_uri.removeprefix("file://")).unlink()  # e.g. the cache of another host

    run_available_now(run_upload, spark, s)
    lake = tmp_path / "lakehouse" / "Files" / "xact/attachments"
    assert (lake / tasks[0].blob_path).read_bytes() == sample_bytes("kept.pdf", 150_000)
    assert not Path(cached[tasks[0].task_id].cache_uri.removeprefix("file://")).exists()
    # The lost file was downloaded again by the upload itself and uploaded: no attempt used, no detour.
    assert (lake / tasks[1].blob_path).read_bytes() == sample_bytes("lost.pdf", 150_000)
    assert server.requests_for("lost.pdf") == 2
    pending = [DownloadTask.decode(v) for _, v, _ in consume_all(s, s.topics.pending.name)]
    assert [t.attempt for t in pending] == [0, 0]
    assert list(consume_all(s, s.topics.dlq.name, idle_timeout=2)) == []

    results = [AttachmentResult.decode(v) for _, v, _ in consume_all(s, s.topics.results.name)]
    completed = sorted((r.task_id, r.attempt) for r in results if r.status == "completed")
    assert completed == sorted([(tasks[0].task_id, 0), (tasks[1].task_id, 0)])
    run_available_now(run_results, spark, s)
    rows = {r.task_id: r for r in spark.read.format("delta").load(s.table_path("attachments")).collect()}
    assert {(r.status, r.stage, r.bytes) for r in rows.values()} == {("completed", "upload", 150_000)}
    assert rows[tasks[1].task_id].attempts == 1 and rows[tasks[0].task_id].uploaded_at is not None
