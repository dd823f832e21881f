"""Upload one cached attachment to the lake: verify the cached file, stream it to the storage backend
(storage.py) behind the endpoint's circuit breaker, and delete the cache file only after a verified
upload. Never raises for a failed upload: the outcome says what happened.

The cache file is read at `cache.cache_path(settings.cache_dir, task_id)`, derived from the task id
alone; the message's `cache_uri` is information only, so a message cannot make the upload read
and publish a file of its choosing. A task id that is not one (32 lowercase hex characters) is a
permanent failure (category internal) and nothing is read.

When the cache file is missing, unreadable or does not match the size and sha256 the download
recorded, the upload first asks the lake whether the destination already holds exactly those
bytes (find_stored): a duplicate message of an upload that completed (its cache file deleted
after verification) is then reported completed again instead of being downloaded again. Only
when the lake does not hold them is the outcome cache_lost (a fresh download). If the lake cannot
be asked (its breaker is open, or the request fails), the outcome is that storage failure, so the
upload is retried rather than the task downloaded again.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pipeline_lib.cache import InvalidTaskId, cache_path
from pipeline_lib.circuit_breaker import BreakerRegistry, shared_registry
from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, DownloadTask
from pipeline_lib.failures import Failure, failure
from pipeline_lib.upload.storage import (
    CacheProblem,
    LakeStorage,
    StorageFailure,
    StoredFile,
    check_blob_path,
    lake_storage,
    verified_chunks,
)


@dataclass(frozen=True)
class UploadOutcome:
    cached: CachedAttachment
    task: DownloadTask
    finished_at: datetime
    seconds: float
    stored: StoredFile | None = None
    failure: Failure | None = None
    breaker_opened: bool = False
    already_stored: bool = False  # the lake already held the verified file: nothing was uploaded
    refetched: bool = False  # the cache file was missing here and this host downloaded it again
    refetch_failed: bool = False  # that download failed: `failure` is the source's (routed as a download's)

    @property
    def bytes(self) -> int:
        return self.stored.bytes if self.stored else 0


def cache_problem(source: Path, expected_bytes: int) -> str | None:
    """Why the cache file cannot be uploaded as it is (missing, not a regular file, unreadable,
    another size), or None."""
    try:
        st = os.stat(source)
    except (FileNotFoundError, NotADirectoryError):
        return f"the cached file {source} is missing (another host, or the cache was lost)"
    except OSError as exc:
        return f"the cached file {source} cannot be read: {exc}"
    if not stat.S_ISREG(st.st_mode):
        return f"the cached file {source} is not a regular file"
    if st.st_size != expected_bytes:
        return f"the cached file {source} has {st.st_size} bytes, not {expected_bytes}"
    return None


class Uploader:
    def __init__(self, settings: Settings, storage: LakeStorage | None = None, breakers: BreakerRegistry | None = None):
        self.storage = storage or lake_storage(settings)
        self.cache_dir = settings.cache_dir
        self.chunk_bytes = settings.upload.chunk_bytes
        b = settings.upload.breaker
        self.breaker = (breakers or shared_registry("upload", b.failure_threshold, b.open_seconds)).get(
            self.storage.endpoint
        )

    def upload(self, cached: CachedAttachment) -> UploadOutcome:
        task = cached.download_task
        started = time.monotonic()

        def done(
            stored: StoredFile | None = None,
            result: Failure | None = None,
            opened: bool = False,
            already: bool = False,
        ) -> UploadOutcome:
            now = datetime.now(UTC)
            return UploadOutcome(cached, task, now, time.monotonic() - started, stored, result, opened, already)

        try:
            source = cache_path(self.cache_dir, task.task_id)
            check_blob_path(task.blob_path)
        except InvalidTaskId as exc:
            return done(result=failure("internal", str(exc)))
        except StorageFailure as exc:
            return done(result=exc.failure)

        problem = cache_problem(source, cached.bytes)
        if problem is None:
            if not self.breaker.allow():
                return done(result=self._circuit_open())
            chunks = verified_chunks(source, cached.bytes, cached.sha256, self.chunk_bytes)
            try:
                stored = self.storage.put(
                    chunks, task.blob_path, size=cached.bytes, sha256=cached.sha256, content_type=cached.content_type
                )
            except CacheProblem as exc:
                problem = str(exc)  # the put made no commit; the breaker's permission covers the check below
            except StorageFailure as exc:
                return done(result=exc.failure, opened=self._record(exc.failure))
            else:
                self.breaker.record_success()
                try:
                    source.unlink()  # only after a verified upload
                except OSError:
                    pass  # already gone: another copy of this message uploaded it
                return done(stored=stored)
            finally:
                chunks.close()
        elif not self.breaker.allow():
            return done(result=self._circuit_open(f"{problem}; the lake could not be checked for a completed upload"))

        # The cache cannot be used: is the verified file already in the lake (a duplicate message)?
        try:
            found = self.storage.find_stored(task.blob_path, size=cached.bytes, sha256=cached.sha256)
        except StorageFailure as exc:
            why = f"{problem}; checking the lake for a completed upload failed: {exc.failure.message}"
            checked = replace(exc.failure, message=why)
            return done(result=checked, opened=self._record(exc.failure))
        self.breaker.record_success()
        if found is not None:
            return done(stored=found, already=True)
        return done(result=failure("cache_lost", f"{problem}; the lake does not hold the verified file"))

    def _circuit_open(self, why: str = "") -> Failure:
        message = f"circuit breaker for {self.storage.endpoint} is open; no request made"
        text = f"{why}: {message}" if why else message
        return Failure("circuit_open", True, text, retry_after_seconds=self.breaker.seconds_until_probe())

    def _record(self, result: Failure) -> bool:
        """Count a storage failure on the breaker; True when it opened it."""
        if result.transient:
            return self.breaker.record_failure()
        self.breaker.record_neutral()
        return False
