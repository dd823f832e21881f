"""A cache file the upload cannot see (lost, or written by a download on another host) is not the
source's failure: the upload downloads it again on its own host and uploads it, without using an
attempt, at most upload.max_refetches times per task."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pipeline_lib.cache import cache_path
from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.contracts import CachedAttachment
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.local.sample_server import sample_sha256
from pipeline_lib.local.samples import sample_task
from pipeline_lib.upload.stage import UploadStage
from tests.unit.upload.support import uploader


def own_downloader(settings) -> Downloader:
    """A downloader with breakers of its own: other tests' failures on 127.0.0.1 must not count."""
    return Downloader.from_settings(settings, breakers=BreakerRegistry(3, 60))


def elsewhere(server, name: str, size: int, status: int | None = None, **task_fields) -> CachedAttachment:
    """A cached message whose file was written on another host: nothing in this host's cache."""
    params = {"mode": "status", "status": status} if status else {}
    task = sample_task(server.url(name, size, **params), name, **task_fields)
    return CachedAttachment(
        task=task.to_dict(),
        cache_uri=f"file:///other-host/cache/{task.task_id}",
        bytes=size,
        sha256=sample_sha256(name, size),
        content_type="application/pdf",
        downloaded_at="2026-11-27T10:00:00.000Z",
    )


def test_a_cache_file_on_another_host_is_downloaded_here_and_uploaded_without_an_attempt(settings, sample_server):
    stage = UploadStage(settings, uploader(settings), own_downloader(settings))
    item = elsewhere(sample_server, "far/report.pdf", 40_000, attempt=1)
    outcome = stage.work(item)
    assert outcome.stored is not None and outcome.refetched and outcome.task.attempt == 1
    (completed,) = stage.route(outcome, None).messages
    assert completed.outcome == "completed" and completed.message.attempt == 1
    lake = Path(settings.storage.lake.local_root) / settings.storage.lake.files_prefix / item.download_task.blob_path
    assert lake.stat().st_size == 40_000
    assert not cache_path(settings.cache_dir, item.download_task.task_id).exists()  # freed after the upload
    assert sample_server.requests_for("far/report.pdf") == 1


def test_refetches_are_bounded_then_the_task_goes_back_to_pending_with_an_attempt(settings, sample_server):
    stage = UploadStage(settings, uploader(settings), own_downloader(settings))
    item = elsewhere(sample_server, "far/bounded.pdf", 1000)
    task = replace(item.download_task, refetches=settings.upload.max_refetches)
    exhausted = replace(item, task=task.to_dict())
    outcome = stage.work(exhausted)
    assert outcome.failure.category == "cache_lost" and not outcome.refetched
    again, _ = stage.route(outcome, None).messages
    assert (again.outcome, again.topic, again.message.attempt) == ("refetch", settings.topics.pending.name, 1)
    assert sample_server.requests_for("far/bounded.pdf") == 0


def test_a_source_failure_during_the_refetch_is_routed_as_the_download_would(settings, sample_server):
    stage = UploadStage(settings, uploader(settings), own_downloader(settings))
    outcome = stage.work(elsewhere(sample_server, "far/gone.pdf", 1000, status=404))
    assert outcome.refetch_failed and outcome.failure.category == "http_permanent"
    dead, result = stage.route(outcome, None).messages
    assert (dead.outcome, dead.message.stage, dead.message.category) == ("dead", "download", "http_permanent")
    assert result.message.status == "dead" and dead.message.task["refetches"] == 1
