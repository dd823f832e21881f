"""Upload one cached attachment to the lake: verify the cached file, stream it to the storage backend
(storage.py) behind the endpoint's circuit breaker, and delete the cache file only after a verified
upload. Never raises for a failed upload: the outcome says what happened.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline_lib.circuit_breaker import BreakerRegistry, shared_registry
from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, DownloadTask
from pipeline_lib.failures import Failure, failure
from pipeline_lib.upload.storage import (
    ChunksChanged,
    LakeStorage,
    StorageFailure,
    StoredFile,
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

    @property
    def bytes(self) -> int:
        return self.stored.bytes if self.stored else 0


def cache_file(uri: str) -> Path:
    parts = urlsplit(uri)
    if parts.scheme not in ("file", ""):
        raise ValueError(f"cache URI {uri!r} is not a file URI")
    return Path(unquote(parts.path))


class Uploader:
    def __init__(self, settings: Settings, storage: LakeStorage | None = None, breakers: BreakerRegistry | None = None):
        self.storage = storage or lake_storage(settings)
        self.chunk_bytes = settings.upload.chunk_bytes
        b = settings.upload.breaker
        self.breaker = (breakers or shared_registry("upload", b.failure_threshold, b.open_seconds)).get(
            self.storage.endpoint
        )

    def upload(self, cached: CachedAttachment) -> UploadOutcome:
        task = cached.download_task
        started = time.monotonic()

        def done(
            stored: StoredFile | None = None, result: Failure | None = None, opened: bool = False
        ) -> UploadOutcome:
            now = datetime.now(UTC)
            return UploadOutcome(cached, task, now, time.monotonic() - started, stored, result, opened)

        try:
            source = cache_file(cached.cache_uri)
        except ValueError as exc:
            return done(result=failure("cache_lost", str(exc)))
        if not source.is_file():
            return done(
                result=failure(
                    "cache_lost", f"the cached file {source} is missing (another host, or the cache was lost)"
                )
            )
        if source.stat().st_size != cached.bytes:
            return done(
                result=failure(
                    "cache_lost", f"the cached file {source} has {source.stat().st_size} bytes, not {cached.bytes}"
                )
            )
        if not self.breaker.allow():
            return done(
                result=failure("circuit_open", f"circuit breaker for {self.storage.endpoint} is open; no request made")
            )
        try:
            stored = self.storage.put(
                verified_chunks(source, cached.bytes, cached.sha256, self.chunk_bytes),
                task.blob_path, size=cached.bytes, sha256=cached.sha256, content_type=cached.content_type,
            )  # fmt: skip
        except ChunksChanged as exc:
            self.breaker.record_neutral()
            return done(result=failure("cache_lost", str(exc)))
        except StorageFailure as exc:
            opened = self.breaker.record_failure() if exc.failure.transient else False
            if not exc.failure.transient:
                self.breaker.record_neutral()
            return done(result=exc.failure, opened=opened)
        self.breaker.record_success()
        try:
            source.unlink()  # only after a verified upload
        except OSError:
            pass  # already gone: another copy of this message uploaded it
        return done(stored=stored)
