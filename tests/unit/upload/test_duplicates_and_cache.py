"""The upload's hardening, end to end through Uploader and UploadStage.route:

- a duplicate of a completed upload (its cache file deleted after verification) is completed
  again, never sent back for a download nor dead-lettered; a destination that does not hold the
  verified bytes still means cache_lost;
- a cache file that cannot be read is cache_lost, never a lake failure nor an exception;
- the file read is the one derived from the task id, whatever `cache_uri` says; a malformed task
  id or blob path is dead-lettered without reading or writing anything.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
from pathlib import Path

import pytest

from pipeline_lib.cache import cache_path
from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.contracts import CachedAttachment, SourceRef
from pipeline_lib.local.samples import sample_task
from pipeline_lib.records import InputRecord
from pipeline_lib.upload import storage as storage_module
from pipeline_lib.upload.stage import UploadStage
from pipeline_lib.upload.uploader import Uploader
from tests.unit.upload.support import cache, onelake, uploader


def lake_file(settings, item: CachedAttachment) -> Path:
    return Path(settings.storage.lake.local_root) / settings.storage.lake.files_prefix / item.download_task.blob_path


def cached_file(settings, item: CachedAttachment) -> Path:
    return cache_path(settings.cache_dir, item.download_task.task_id)


def route(stage: UploadStage, item: CachedAttachment):
    return stage.route(stage.uploader.upload(item), None)


def ops(dfs) -> list[str]:
    return [op for op, _, _ in dfs.log]


# 1. A duplicate never turns a completed task into a dead one.


@pytest.mark.parametrize("attempt", [0, 2])  # 2: the last attempt (delays [1, 2]), where cache_lost was dead
def test_a_duplicate_after_a_verified_local_upload_is_completed_again(settings, attempt):
    stage = UploadStage(settings, uploader(settings))
    data = os.urandom(70_000)
    item = cache(settings, "dup.pdf", data, attempt=attempt)
    first = route(stage, item)
    assert first.messages[0].message.status == "completed" and not cached_file(settings, item).exists()

    again = stage.uploader.upload(item)  # redelivered, or re-forwarded: the cache file is gone
    assert again.failure is None and again.already_stored and again.stored.sha256 == item.sha256
    routed = stage.route(again, None)
    assert [(m.outcome, m.topic) for m in routed.messages] == [("completed", settings.topics.results.name)]
    assert routed.messages[0].message.status == "completed" and routed.messages[0].message.sha256 == item.sha256
    assert lake_file(settings, item).read_bytes() == data


def test_a_duplicate_after_a_verified_onelake_upload_asks_the_lake_and_writes_nothing(settings, dfs):
    stage = UploadStage(settings, uploader(settings, onelake(dfs)))
    item = cache(settings, "dup.pdf", os.urandom(5000))
    assert route(stage, item).messages[0].outcome == "completed"
    writes = len(dfs.log)
    routed = route(stage, item)
    assert [m.outcome for m in routed.messages] == ["completed"]
    assert ops(dfs)[writes:] == ["properties"]  # one HEAD: no create, append, flush or rename


def test_a_changed_cache_file_whose_verified_copy_is_in_the_lake_is_completed(settings):
    up = uploader(settings)
    data = b"a" * 1000
    item = cache(settings, "c.pdf", data)
    assert up.upload(item).failure is None
    cached_file(settings, item).write_bytes(b"b" * 1000)  # e.g. a late duplicate download rewrote it
    outcome = up.upload(item)
    assert outcome.failure is None and outcome.already_stored
    assert lake_file(settings, item).read_bytes() == data  # the changed bytes were not published


def test_a_destination_holding_other_bytes_is_still_cache_lost(settings, dfs):
    for storage in (None, onelake(dfs)):
        stage = UploadStage(settings, uploader(settings, storage))
        first = cache(settings, "m.pdf", b"1" * 100)
        assert stage.uploader.upload(first).failure is None
        other = cache(settings, "m.pdf", b"2" * 100)  # the same task, other bytes: same size, other sha256
        cached_file(settings, other).unlink()
        routed = route(stage, other)
        assert (routed.messages[0].outcome, routed.messages[0].topic) == ("refetch", "xact.downloads.pending")
        assert routed.messages[0].message.history[-1]["category"] == "cache_lost"
        shorter = cache(settings, "m.pdf", b"1" * 99)  # other size
        cached_file(settings, shorter).unlink()
        assert stage.uploader.upload(shorter).failure.category == "cache_lost"


def test_when_the_lake_cannot_be_asked_the_upload_is_retried_not_downloaded_again(settings, dfs):
    stage = UploadStage(settings, uploader(settings, onelake(dfs)))
    item = cache(settings, "q.pdf", b"x" * 10)
    cached_file(settings, item).unlink()
    dfs.fail("properties", 503, times=5)
    failed, result = route(stage, item).messages
    assert (failed.outcome, failed.topic) == ("retry", settings.retry_topics[0])
    assert isinstance(failed.message, CachedAttachment)  # back to cached: the lake is asked again
    assert failed.message.download_task.history[-1]["category"] == "http_transient"
    assert "missing" in result.message.error_message and "checking the lake" in result.message.error_message


def test_with_the_breaker_open_a_lost_cache_makes_no_request(settings, dfs):
    breakers = BreakerRegistry(1, 60)
    up = Uploader(settings, onelake(dfs), breakers=breakers)
    dfs.fail("create", 503)
    assert up.upload(cache(settings, "o1.pdf", b"x")).breaker_opened
    item = cache(settings, "o2.pdf", b"y")
    cached_file(settings, item).unlink()
    before = len(dfs.log)
    outcome = up.upload(item)
    assert outcome.failure.category == "circuit_open" and len(dfs.log) == before


# 3. A cache that cannot be read is cache_lost.


def test_a_directory_where_the_cache_file_should_be_is_cache_lost(settings):
    stage = UploadStage(settings, uploader(settings))
    item = cache(settings, "d.pdf", b"x" * 10)
    path = cached_file(settings, item)
    path.unlink()
    path.mkdir()
    routed = route(stage, item)
    assert routed.messages[0].outcome == "refetch" and "not a regular file" in routed.messages[1].message.error_message


def fail_reading(monkeypatch, target: Path) -> None:
    """The second read of `target` fails with EIO (a lost mount, a bad disk)."""
    real_open = open

    class Failing:
        def __init__(self, f):
            self.f, self.reads = f, 0

        def read(self, n):
            self.reads += 1
            if self.reads > 1:
                raise OSError(errno.EIO, "Input/output error")
            return self.f.read(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def fake(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        return Failing(f) if Path(path) == target else f

    monkeypatch.setattr(storage_module, "open", fake, raising=False)


@pytest.mark.parametrize("backend", ["local", "onelake"])
def test_a_read_error_in_the_middle_of_the_cache_file_is_cache_lost(settings, dfs, monkeypatch, backend):
    stage = UploadStage(settings, uploader(settings, onelake(dfs) if backend == "onelake" else None))
    item = cache(settings, "e.pdf", os.urandom(200_000))  # several chunks of upload.chunk_bytes
    fail_reading(monkeypatch, cached_file(settings, item))
    outcome = stage.uploader.upload(item)
    assert outcome.failure.category == "cache_lost" and "Input/output error" in outcome.failure.message
    assert route(stage, item).messages[0].outcome == "refetch"
    if backend == "onelake":
        assert dfs.files == {} and "flush" not in ops(dfs)
    else:
        assert not [p for p in Path(settings.storage.lake.local_root).rglob("*") if p.is_file()]


# 4. The cache path comes from the task id only.


def test_a_hostile_cache_uri_is_never_read(settings, tmp_path):
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"-----BEGIN PRIVATE KEY-----")
    stage = UploadStage(settings, uploader(settings))
    item = cache(settings, "h.pdf", b"x" * 10)
    cached_file(settings, item).unlink()
    hostile = dataclasses.replace(
        item,
        cache_uri=secret.as_uri(),
        bytes=secret.stat().st_size,
        sha256=hashlib.sha256(secret.read_bytes()).hexdigest(),
    )
    routed = route(stage, hostile)
    assert routed.messages[0].outcome == "refetch"
    assert not [p for p in Path(settings.storage.lake.local_root).rglob("*") if p.is_file()]
    assert secret.exists()  # nor deleted


def test_the_file_uploaded_is_the_task_ids_cache_file_whatever_the_uri_says(settings, tmp_path):
    other = tmp_path / "other.pdf"
    other.write_bytes(b"o" * 10)
    item = cache(settings, "r.pdf", b"r" * 10)
    moved = dataclasses.replace(item, cache_uri=other.as_uri())
    outcome = uploader(settings).upload(moved)
    assert outcome.failure is None and lake_file(settings, item).read_bytes() == b"r" * 10
    assert other.exists() and not cached_file(settings, item).exists()


@pytest.mark.parametrize("task_id", ["../../../etc/passwd", "A" * 32, "", "0" * 31 + "/"])
def test_a_malformed_task_id_is_dead_lettered_without_reading_anything(settings, dfs, task_id):
    stage = UploadStage(settings, uploader(settings, onelake(dfs)))
    task = sample_task("https://files.example.com/t.pdf", "t.pdf", task_id=task_id)
    item = CachedAttachment(
        task=task.to_dict(),
        cache_uri="file:///etc/passwd",
        bytes=1,
        sha256="0" * 64,
        content_type=None,
        downloaded_at="2026-11-27T10:00:00.000Z",
    )
    (routed,) = stage.process([InputRecord("k", item.encode(), SourceRef("cached", 0, 1))])
    (dead,) = routed.messages  # refused when decoded: no task to report a result for
    assert (dead.topic, dead.message.category) == (settings.topics.dlq.name, "malformed")
    assert "32 lowercase hex" in dead.message.reason
    assert dfs.log == []


@pytest.mark.parametrize("blob_path", ["../../../../escaped.pdf", "/tmp/abs.pdf", "a/../../b.pdf"])
def test_a_blob_path_leaving_the_lake_is_dead_lettered_without_writing_anything(settings, tmp_path, blob_path):
    stage = UploadStage(settings, uploader(settings))
    item = cache(settings, "p.pdf", b"x" * 10, blob_path=blob_path)
    (routed,) = stage.process([InputRecord("k", item.encode(), SourceRef("cached", 0, 1))])
    (dead,) = routed.messages
    assert dead.message.category == "malformed" and "not a safe relative lake path" in dead.message.reason
    assert not (tmp_path / "escaped.pdf").exists() and not Path("/tmp/abs.pdf").exists()
    assert not [p for p in Path(settings.storage.lake.local_root).rglob("*") if p.is_file()]
    assert cache_path(settings.cache_dir, item.task["task_id"]).exists()  # kept: a fixed message can use it
