"""The combined pass (upload/combined.py), without Spark: a real download from the local source
server, a real upload (local lake, or OneLake on the local DFS server), and its routing."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from pipeline_lib.cache import cache_path
from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.contracts import CachedAttachment, DownloadTask, SourceRef
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.download.stage import DownloadStage
from pipeline_lib.local.samples import sample_task
from pipeline_lib.records import InputRecord
from pipeline_lib.upload.combined import CombinedStage
from pipeline_lib.upload.stage import UploadStage
from tests.unit.upload.support import onelake, uploader


def combined(settings, storage=None) -> CombinedStage:
    return CombinedStage(
        settings, Downloader.from_settings(settings, breakers=BreakerRegistry(100, 60)), uploader(settings, storage)
    )


def record(task: DownloadTask | str, offset: int = 0) -> InputRecord:
    value = task.encode() if isinstance(task, DownloadTask) else task
    return InputRecord(
        "T-1", value.encode(), SourceRef("xact.downloads.pending", 0, offset, "2026-12-05T00:00:00.000Z")
    )


def lake_bytes(settings, task: DownloadTask) -> bytes:
    from pathlib import Path

    return (Path(settings.storage.lake.local_root) / settings.storage.lake.files_prefix / task.blob_path).read_bytes()


def test_a_downloaded_file_is_uploaded_in_the_same_pass_and_goes_straight_to_results(settings, sample_server):
    task = sample_task(sample_server.url("a.pdf", 70_000), "a.pdf")
    (routed,) = combined(settings).process([record(task)])
    (message,) = routed.messages  # no cached message, no `downloaded` result: one hop fewer
    assert (message.outcome, message.topic) == ("completed", "xact.downloads.results")
    result = message.message
    # stage upload: in the results fold it outranks the attempt's `downloaded`, as the upload stage's does
    assert (result.status, result.stage, result.bytes, result.task_id) == ("completed", "upload", 70_000, task.task_id)
    assert result.sha256 == hashlib.sha256(lake_bytes(settings, task)).hexdigest()
    assert result.downloaded_at and result.uploaded_at
    assert not cache_path(settings.cache_dir, task.task_id).exists()  # deleted after the verified upload


def test_what_the_lake_refuses_is_left_to_the_upload_stage_in_the_cache(settings, sample_server, dfs):
    """OneLake answering 503: the file stays in the cache and goes to xact.downloads.cached with a
    `downloaded` result, exactly what the decoupled download emits; the upload stage completes it."""
    dfs.fail("any", 503, times=100)
    stage = combined(settings, onelake(dfs))
    task = sample_task(sample_server.url("b.pdf", 50_000), "b.pdf")
    (routed,) = stage.process([record(task)])
    out = {m.outcome: m for m in routed.messages}
    assert set(out) == {"cached", "result"}
    assert out["cached"].topic == "xact.downloads.cached" and out["result"].message.status == "downloaded"
    cached = CachedAttachment.decode(out["cached"].message.encode())
    assert cached.download_task == task and cache_path(settings.cache_dir, task.task_id).exists()

    dfs.faults.clear()  # the lake is back: the upload stage takes the handed-over message as it is
    later = UploadStage(settings, uploader(settings, onelake(dfs)))
    (done,) = later.process(
        [InputRecord("T-1", cached.encode().encode(), SourceRef("xact.downloads.cached", 0, 0, ""))]
    )
    assert [m.message.status for m in done.messages] == ["completed"]


def test_an_open_storage_breaker_hands_over_without_a_request(settings, sample_server, dfs):
    stage = combined(settings, onelake(dfs))
    breaker = stage.uploader.breaker
    for _ in range(3):
        breaker.record_failure()
    dfs.log.clear()
    task = sample_task(sample_server.url("c.pdf", 10_000), "c.pdf")
    (routed,) = stage.process([record(task)])
    assert [m.outcome for m in routed.messages] == ["cached", "result"]
    assert dfs.log == []  # no request to the lake while its breaker is open


@pytest.mark.parametrize("mode", [dict(mode="status", status=503), dict(mode="status", status=404)])
def test_a_failed_download_is_routed_exactly_as_the_download_stage_routes_it(settings, sample_server, mode):
    task = sample_task(sample_server.url("d.pdf", **mode), "d.pdf", attempt=1)
    alone = DownloadStage(settings, Downloader.from_settings(settings, breakers=BreakerRegistry(100, 60)))
    (theirs,) = alone.process([record(task)])
    (ours,) = combined(settings).process([record(task)])

    def shape(routed):
        return [
            (m.outcome, m.topic, m.message.to_dict().get("status"), m.message.to_dict().get("attempt"))
            for m in routed.messages
        ]

    assert shape(ours) == shape(theirs)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.one_of(st.binary(max_size=300).map(lambda b: b.decode("utf-8", "replace")), st.text(max_size=300)))
def test_any_record_ends_in_its_own_messages_and_never_raises(settings, raw):
    """Whatever arrives on pending: a dead letter of its own (malformed or internal), never an exception."""
    (routed,) = combined(settings).process([record(raw)])
    assert routed.messages and all(
        m.topic in {"xact.downloads.dlq", "xact.downloads.results"} or ".retry." in m.topic for m in routed.messages
    )
