"""The upload stage's work on a batch of cached records, without Spark: verify the cached file,
stream it to the lake (storage.py) up to `upload.concurrency` at a time, delete the cache file
only after a verified upload, and route every outcome.

| outcome                                        | goes to                                   |
| ---------------------------------------------- | ----------------------------------------- |
| uploaded and verified                          | results (status completed)                |
| cached file missing or not matching its sha256 | pending, attempt + 1: a fresh download    |
| transient storage failure, attempts left       | retry tier (a CachedAttachment, back to cached) |
| permanent failure, or no attempt left          | DLQ                                       |
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pipeline_lib.circuit_breaker import BreakerRegistry, shared_registry
from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, DownloadTask, SourceRef
from pipeline_lib.failures import Failure, failure
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.routing import (
    OutMessage,
    PendingRecord,
    Routed,
    Topics,
    process_records,
    result_message,
    route_failure,
)
from pipeline_lib.storage import ChunksChanged, LakeStorage, StorageFailure, StoredFile, lake_storage, verified_chunks
from pipeline_lib.times import iso_utc
from pipeline_lib.worker_state import per_worker

STAGE = "upload"


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
            now = datetime.now(timezone.utc)
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


class UploadStage:
    def __init__(self, settings: Settings, uploader: Uploader | None = None) -> None:
        self.uploader = uploader or Uploader(settings)
        self.retry_policy = RetryPolicy.from_settings(settings)
        self.topics = Topics.from_settings(settings)
        self.cached_topic = settings.topics.cached.name
        self._pool = ThreadPoolExecutor(settings.upload.concurrency, thread_name_prefix="upload")

    @classmethod
    def for_settings(cls, settings: Settings) -> UploadStage:
        """The stage of this worker process for these settings (worker_state.per_worker)."""
        return per_worker(cls, settings)

    def process(self, records: Iterable[PendingRecord]) -> Iterator[Routed]:
        """Route every record, uploading up to `upload.concurrency` at once; yields in input order."""
        return process_records(
            records,
            CachedAttachment,
            self.uploader.upload,
            self.route,
            self._pool,
            stage=STAGE,
            dlq_topic=self.topics.dlq,
        )

    def route(self, outcome: UploadOutcome, source: SourceRef | None) -> Routed:
        task, cached, at = outcome.task, outcome.cached, outcome.finished_at
        if outcome.stored is not None:
            result = result_message(
                task, STAGE, "completed", at, bytes=outcome.stored.bytes, sha256=outcome.stored.sha256,
                content_type=cached.content_type, downloaded_at=cached.downloaded_at, uploaded_at=iso_utc(at),
            )  # fmt: skip
            return Routed([OutMessage("completed", self.topics.results, task.trace_id, result)], outcome)
        assert outcome.failure is not None
        f = outcome.failure
        failed, result_msg = route_failure(
            task, f, stage=STAGE, source=source, at=at, policy=self.retry_policy, topics=self.topics,
            return_topic=self.cached_topic, wrap=lambda retry: replace(cached, task=retry.to_dict()),
            # A lost or changed cache file needs a fresh download, at once, not an upload retry later.
            requeue_topic=self.topics.pending if f.category == "cache_lost" else None,
        )  # fmt: skip
        return Routed([failed, result_msg], outcome)
