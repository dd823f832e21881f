"""The upload stage's work on a batch of cached records, without Spark: upload each (uploader.py) up
to `upload.concurrency` at a time and route every outcome.

| outcome                                        | goes to                                   |
| ---------------------------------------------- | ----------------------------------------- |
| uploaded and verified                          | results (status completed)                |
| cached file missing or not matching its sha256 | pending, attempt + 1: a fresh download    |
| transient storage failure, attempts left       | retry tier (a CachedAttachment, back to cached) |
| permanent failure, or no attempt left          | DLQ                                       |
"""

from __future__ import annotations

from dataclasses import replace

from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, DownloadTask, SourceRef
from pipeline_lib.routing import OutMessage, RecordStage, Routed, result_message, route_failure
from pipeline_lib.times import iso_utc
from pipeline_lib.upload.uploader import Uploader, UploadOutcome

STAGE = "upload"


class UploadStage(RecordStage[CachedAttachment, UploadOutcome]):
    name = STAGE
    message_cls = CachedAttachment

    def __init__(self, settings: Settings, uploader: Uploader | None = None) -> None:
        super().__init__(settings, settings.upload.concurrency)
        self.uploader = uploader or Uploader(settings)
        self.cached_topic = settings.topics.cached.name

    def work(self, message: CachedAttachment) -> UploadOutcome:
        return self.uploader.upload(message)

    def task_of(self, message: CachedAttachment) -> DownloadTask:
        return message.download_task

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
