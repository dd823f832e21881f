"""Routing of download outcomes, without Spark: topics, retry fields, dead letters, results."""

from __future__ import annotations

from datetime import datetime

import pytest

from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.config import load_settings
from pipeline_lib.contracts import CachedAttachment, DeadLetter, DownloadTask, SourceRef
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.download.stage import DownloadStage
from pipeline_lib.local.samples import sample_task
from pipeline_lib.records import InputRecord


@pytest.fixture
def server(sample_server):
    return sample_server


@pytest.fixture
def stage(tmp_path):
    settings = load_settings(
        "local",
        overrides={
            "storage": {"root": str(tmp_path)},
            "retry": {"delays_seconds": [1, 2, 4, 8]},
            "download": {"concurrency": 4, "read_timeout_seconds": 2},
        },
    )
    return DownloadStage(settings, Downloader.from_settings(settings, breakers=BreakerRegistry(100, 60)))


def record(task: DownloadTask | str, offset: int = 0) -> InputRecord:
    value = task.encode() if isinstance(task, DownloadTask) else task
    return InputRecord(
        "T-1", value.encode(), SourceRef("xact.downloads.pending", 1, offset, "2026-11-27T10:00:00.000Z")
    )


def by_topic(routed):
    return {m.topic: m for m in routed.messages}


def test_success_goes_to_cached_with_a_downloaded_result(stage, server):
    task = sample_task(server.url("a.pdf", 5000), "a.pdf")
    (routed,) = stage.process([record(task)])
    out = by_topic(routed)
    cached = CachedAttachment.decode(out["xact.downloads.cached"].message.encode())
    assert cached.download_task == task and cached.bytes == 5000
    result = out["xact.downloads.results"].message
    assert (result.status, result.stage, result.bytes, result.sha256) == ("downloaded", "download", 5000, cached.sha256)
    assert out["xact.downloads.cached"].key == "T-1"


def test_a_transient_failure_goes_to_the_tier_of_its_attempt_with_history_and_due_time(stage, server):
    task = sample_task(server.url("b.pdf", mode="status", status=503), "b.pdf", attempt=1)
    (routed,) = stage.process([record(task)])
    out = by_topic(routed)
    retry = out["xact.downloads.pending.retry.2s"].message
    assert (retry.attempt, retry.retry_stage, retry.return_topic) == (2, "download", "xact.downloads.pending")
    failed_at = datetime.fromisoformat(retry.history[-1]["at"].replace("Z", "+00:00"))
    due = datetime.fromisoformat(retry.due_at.replace("Z", "+00:00"))
    assert (due - failed_at).total_seconds() == pytest.approx(2, abs=0.002)
    assert retry.history[-1] | {"at": None} == {
        "at": None,
        "stage": "download",
        "attempt": 1,
        "category": "http_transient",
        "http_status": 503,
        "message": "HTTP 503 from the source",
    }
    headers = retry.headers()
    assert headers["xact.retry.due_at"] == retry.due_at and headers["xact.attempt"] == "2"
    assert out["xact.downloads.results"].message.status == "retrying"


def test_permanent_and_exhausted_failures_are_dead_lettered_with_provenance(stage, server):
    gone = sample_task(server.url("c.pdf", mode="status", status=404), "c.pdf")
    tired = sample_task(server.url("d.pdf", mode="status", status=503), "d.pdf", attempt=4)
    routed = list(stage.process([record(gone, 7), record(tired, 8)]))
    dead_gone = DeadLetter.decode(by_topic(routed[0])["xact.downloads.dlq"].message.encode())
    dead_tired = DeadLetter.decode(by_topic(routed[1])["xact.downloads.dlq"].message.encode())
    assert (dead_gone.stage, dead_gone.category, dead_gone.attempts) == ("download", "http_permanent", 1)
    assert dead_gone.source == SourceRef("xact.downloads.pending", 1, 7, "2026-11-27T10:00:00.000Z")
    assert dead_gone.task["url"].endswith("size=***&mode=***&status=***")  # every query value redacted
    assert (dead_tired.category, dead_tired.attempts) == ("exhausted", 5)
    assert dead_tired.reason.startswith("gave up after 5 attempts") and "HTTP 503" in dead_tired.reason
    assert [r.messages[1].message.status for r in routed] == ["dead", "dead"]
    assert dead_gone.headers()["xact.errors.offset"] == "7"


def test_an_unreadable_record_is_dead_lettered_and_the_rest_still_download(stage, server):
    good = sample_task(server.url("e.pdf", 100), "e.pdf")
    routed = list(stage.process([record("not json", 3), record(good, 4)]))
    assert [m.outcome for m in routed[0].messages] == ["malformed"]
    dead = routed[0].messages[0].message
    assert dead.payload == "not json" and dead.source.offset == 3 and dead.category == "malformed"
    assert routed[1].messages[0].outcome == "cached"


def test_downloads_run_concurrently(stage, server):
    tasks = [sample_task(server.url(f"slow{i}.pdf", 100, latency_ms=300), f"slow{i}.pdf") for i in range(8)]
    import time

    started = time.monotonic()
    routed = list(stage.process([record(t, i) for i, t in enumerate(tasks)]))
    elapsed = time.monotonic() - started
    assert all(r.messages[0].outcome == "cached" for r in routed)
    assert elapsed < 8 * 0.3 / 2  # 4 at a time: about 0.6 s, serial would be 2.4 s
