"""The upload core without Spark: the local lake, and the real azure-storage-file-datalake client
against a local DFS REST server (pipeline_lib/local/dfs_server.py) with fault modes."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.contracts import CachedAttachment, DownloadTask
from pipeline_lib.upload.stage import Uploader, UploadStage
from pipeline_lib.upload.storage import CallableTokenCredential, LocalLake, OneLakeStorage
from tests.unit.upload.support import cache, onelake, uploader


def test_local_upload_is_verified_renamed_into_place_and_frees_the_cache(settings, tmp_path):
    data = os.urandom(300_000)
    item = cache(settings, "a.pdf", data)
    outcome = uploader(settings).upload(item)
    final = tmp_path / "lake" / "xact/attachments" / item.download_task.blob_path
    assert outcome.failure is None and outcome.stored.uri == str(final)
    assert final.read_bytes() == data
    assert not Path(item.cache_uri.removeprefix("file://")).exists()  # deleted only after the verified upload
    assert not [p for p in final.parent.iterdir() if p.name.endswith(".tmp")]
    try:
        assert os.getxattr(final, "user.sha256").decode() == item.sha256
    except OSError:
        pytest.skip("no user xattrs on this file system")


def test_a_missing_or_changed_cache_file_goes_back_for_a_fresh_download(settings):
    stage = UploadStage(settings, uploader(settings))
    gone = cache(settings, "gone.pdf", b"x" * 100)
    Path(gone.cache_uri.removeprefix("file://")).unlink()
    changed = cache(settings, "changed.pdf", b"y" * 100)
    Path(changed.cache_uri.removeprefix("file://")).write_bytes(b"z" * 100)  # same size, other bytes
    for item in (gone, changed):
        routed = stage.route(stage.uploader.upload(item), None)
        again = routed.messages[0]
        assert (again.outcome, again.topic) == ("refetch", "xact.downloads.pending")
        assert isinstance(again.message, DownloadTask) and again.message.attempt == 1
        assert again.message.url.endswith("sig=SECRET")  # the live URL: pending is a work topic
        assert again.message.history[-1]["category"] == "cache_lost"
        assert routed.messages[1].message.status == "retrying"
    lake = Path(settings.storage.lake.local_root)
    assert not list(lake.rglob("*.pdf"))  # nothing half-uploaded was renamed into place


def test_the_last_attempt_with_a_lost_cache_is_dead_lettered(settings):
    stage = UploadStage(settings, uploader(settings))
    item = cache(settings, "late.pdf", b"x", attempt=2)  # delays [1, 2]: 3 attempts
    Path(item.cache_uri.removeprefix("file://")).unlink()
    routed = stage.route(stage.uploader.upload(item), None)
    assert routed.messages[0].outcome == "dead" and routed.messages[0].message.category == "exhausted"


def test_onelake_upload_with_the_real_sdk_creates_appends_flushes_renames_and_verifies(settings, dfs):
    data = os.urandom(200_000)
    item = cache(settings, "b.pdf", data)
    outcome = uploader(settings, onelake(dfs)).upload(item)
    path = f"ws/lh.Lakehouse/Files/xact/attachments/{item.download_task.blob_path}"
    assert outcome.failure is None and outcome.stored.service_checksum is True
    assert outcome.stored.uri.startswith("abfss://ws@127.0.0.1:") and outcome.stored.uri.endswith(
        item.download_task.blob_path
    )
    entry = dfs.files[path]
    assert bytes(entry.data) == data and entry.metadata == {"sha256": item.sha256}
    assert list(dfs.files) == [path]  # the temporary name is gone
    ops = [op for op, _, _ in dfs.log]
    assert ops[0] == "create" and ops[-2:] == ["rename", "properties"] and "flush" in ops
    assert all(t.startswith("token-") for t in dfs.tokens)


def test_a_rerun_overwrites_the_same_path(settings, dfs):
    storage = onelake(dfs)
    first = uploader(settings, storage).upload(cache(settings, "c.pdf", b"1" * 10))
    second = uploader(settings, storage).upload(cache(settings, "c.pdf", b"2" * 10))
    assert first.stored.uri == second.stored.uri and len(dfs.files) == 1


@pytest.mark.parametrize(
    ("op", "status", "category", "transient"),
    [
        ("append", 503, "http_transient", True),
        ("any", 401, "auth", True),  # a token to refresh: transient
        ("rename", 409, "http_transient", True),
        ("create", 403, "auth", False),  # no permission on the path
    ],
)
def test_storage_failures_are_classified_and_leave_no_temp_file(settings, dfs, op, status, category, transient):
    dfs.fail(op, status, times=5)
    item = cache(settings, "d.pdf", b"x" * 1000)
    outcome = uploader(settings, onelake(dfs)).upload(item)
    assert (outcome.failure.category, outcome.failure.transient, outcome.failure.http_status) == (
        category,
        transient,
        status,
    )
    assert Path(item.cache_uri.removeprefix("file://")).exists()  # kept for the retry
    assert not [p for p in dfs.files if p.endswith(".tmp")]


def test_503_once_then_success_is_absorbed_by_the_sdk_retry(settings, dfs):
    dfs.fail("append", 503, times=1)
    outcome = uploader(settings, onelake(dfs, retries=2)).upload(cache(settings, "e.pdf", b"x" * 1000))
    assert outcome.failure is None
    assert [op for op, _, _ in dfs.log].count("append") == 2
    assert dfs.append_md5s and all(dfs.append_md5s)  # the SDK's retry resends the chunk's Content-MD5


def test_a_slow_response_beyond_the_timeout_is_a_transient_failure(settings, dfs):
    dfs.slow("flush", 3)
    storage = OneLakeStorage(
        dfs.url,
        "ws",
        "x",
        CallableTokenCredential(lambda: ("t", int(time.time()) + 3600)),
        sdk_retries=0,
        timeout=1,
        connection_verify=dfs.ca_file,
    )
    outcome = uploader(settings, storage).upload(cache(settings, "f.pdf", b"x" * 10))
    assert outcome.failure.transient and outcome.failure.category == "connection"


def test_tokens_are_refreshed_before_they_expire():
    calls = []

    def provider():
        calls.append(1)
        return f"t{len(calls)}", int(time.time()) + (100 if len(calls) == 1 else 3600)

    credential = CallableTokenCredential(provider, margin=300)
    assert credential.get_token("scope").token == "t1"
    assert credential.get_token("scope").token == "t2"  # 100 s left < 300 s margin: refreshed
    assert credential.get_token("scope").token == "t2"


def test_the_storage_breaker_opens_and_then_skips_requests(settings, dfs):
    dfs.fail("create", 503, times=100)
    up = Uploader(settings, onelake(dfs), breakers=BreakerRegistry(2, 60))
    outcomes = [up.upload(cache(settings, f"g{i}.pdf", b"x")) for i in range(3)]
    assert [o.failure.category for o in outcomes] == ["http_transient", "http_transient", "circuit_open"]
    assert outcomes[1].breaker_opened


def test_local_lake_rejects_nothing_it_can_write(tmp_path):
    lake = LocalLake(tmp_path, "p")
    stored = lake.put(
        iter([b"ab", b"c"]), "x/y.pdf", size=3, sha256=hashlib.sha256(b"abc").hexdigest(), content_type=None
    )
    assert Path(stored.uri).read_bytes() == b"abc"


def test_a_401_drops_the_cached_token_and_the_next_attempt_succeeds_with_a_fresh_one(settings, dfs):
    fetched: list[float] = []
    storage = onelake(dfs, tokens=fetched)
    dfs.fail("any", 401, times=1)
    first = uploader(settings, storage).upload(cache(settings, "h.pdf", b"x" * 10))
    assert (first.failure.category, first.failure.transient) == ("auth", True)
    second = uploader(settings, storage).upload(cache(settings, "h.pdf", b"x" * 10))
    assert second.failure is None
    assert len(fetched) == 2 and dfs.tokens[-1] == "token-2"  # a new token after the refusal


def test_a_transient_storage_failure_goes_to_its_tier_as_a_cached_attachment_back_to_cached(settings, dfs):
    dfs.fail("append", 503, times=5)
    stage = UploadStage(settings, uploader(settings, onelake(dfs)))
    item = cache(settings, "i.pdf", b"x" * 100)
    failed, result = stage.route(stage.uploader.upload(item), None).messages
    assert (failed.outcome, failed.topic) == ("retry", settings.retry_topics[0])
    retry = failed.message
    assert isinstance(retry, CachedAttachment) and retry.cache_uri == item.cache_uri
    task = retry.download_task
    assert (task.attempt, task.retry_stage, task.return_topic) == (1, "upload", settings.topics.cached.name)
    assert retry.headers()["xact.retry.stage"] == "upload" and retry.headers()["xact.schema"] == "cached_attachment/1"
    assert task.history[-1]["http_status"] == 503 and result.message.status == "retrying"
