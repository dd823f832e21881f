"""The upload stage's work on a batch of cached records, without Spark: upload each (uploader.py) up
to `upload.concurrency` at a time and route every outcome.

| outcome                                         | goes to                                         |
| ----------------------------------------------- | ----------------------------------------------- |
| uploaded and verified (or already in the lake)  | results (status completed)                      |
| cache file missing here or not matching         | downloaded again on this host and uploaded: no  |
|                                                 | attempt used, at most upload.max_refetches      |
|                                                 | times per task, then pending with attempt + 1   |
| that download failed                            | routed as the download stage would              |
| transient storage failure, attempts left        | retry tier (a CachedAttachment, back to cached) |
| the lake's circuit breaker open                 | waits for it on its tier (no attempt used)      |
| permanent failure, or no attempt left           | DLQ                                             |

A cache file on another host (a node-local cache on a cluster) is therefore not the source's
failure: the task still completes, at the cost of a second download (counted as `refetches`).
"""

from __future__ import annotations

from dataclasses import replace

from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, DownloadTask, SourceRef
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.record_stage import RecordStage
from pipeline_lib.routing import OutMessage, Routed, Topics, result_message, route_failure
from pipeline_lib.times import iso_utc
from pipeline_lib.upload.uploader import Uploader, UploadOutcome

STAGE = "upload"


class UploadStage(RecordStage[CachedAttachment, UploadOutcome]):
    name = STAGE
    message_cls = CachedAttachment

    def __init__(
        self, settings: Settings, uploader: Uploader | None = None, downloader: Downloader | None = None
    ) -> None:
        super().__init__(settings, settings.upload.concurrency)
        self.settings = settings
        self.uploader = uploader or Uploader(settings)
        self.cached_topic = settings.topics.cached.name
        self.max_refetches = settings.upload.max_refetches
        self._downloader = downloader  # made on the first refetch when not given

    def work(self, message: CachedAttachment) -> UploadOutcome:
        outcome = self.uploader.upload(message)
        lost = outcome.failure is not None and outcome.failure.category == "cache_lost"
        if not lost or outcome.task.refetches >= self.max_refetches:
            return outcome
        return self._refetch_and_upload(outcome)

    def _refetch_and_upload(self, lost: UploadOutcome) -> UploadOutcome:
        """The cache file is not here (lost, or written on another host): download it on this host
        and upload it. No attempt is used (the source did nothing wrong); task.refetches bounds it."""
        task = replace(lost.task, refetches=lost.task.refetches + 1)
        if self._downloader is None:
            self._downloader = Downloader.from_settings(self.settings)
        fetched = self._downloader.download(task)
        if fetched.cached is None:
            assert fetched.failure is not None
            return replace(
                lost,
                task=task,
                failure=fetched.failure,
                refetch_failed=True,
                refetched=True,
                breaker_opened=fetched.breaker_opened,
            )
        return replace(self.uploader.upload(fetched.cached), refetched=True)

    def task_of(self, message: CachedAttachment) -> DownloadTask:
        return message.download_task

    def route(self, outcome: UploadOutcome, source: SourceRef | None) -> Routed:
        task, cached, at = outcome.task, outcome.cached, outcome.finished_at
        if outcome.stored is not None:
            return Routed([completed_message(outcome, self.topics)], outcome)
        assert outcome.failure is not None
        f = outcome.failure
        if outcome.refetch_failed:  # the source failed this host's download: route it as the download stage would
            failed, result_msg = route_failure(
                task,
                f,
                stage="download",
                source=source,
                at=at,
                policy=self.retry_policy,
                topics=self.topics,
                return_topic=self.topics.pending,
            )
            return Routed([failed, result_msg], outcome)
        failed, result_msg = route_failure(
            task,
            f,
            stage=STAGE,
            source=source,
            at=at,
            policy=self.retry_policy,
            topics=self.topics,
            return_topic=self.cached_topic,
            wrap=lambda retry: replace(cached, task=retry.to_dict()),
            # A lost or changed cache file needs a fresh download, at once, not an upload retry later.
            requeue_topic=self.topics.pending if f.category == "cache_lost" else None,
        )
        return Routed([failed, result_msg], outcome)


def completed_message(outcome: UploadOutcome, topics: Topics) -> OutMessage:
    """The `completed` result of a verified upload (stage upload: in the results fold it outranks
    the same attempt's `downloaded`, whichever pass made it)."""
    task, cached, stored, at = outcome.task, outcome.cached, outcome.stored, outcome.finished_at
    assert stored is not None
    result = result_message(
        task,
        STAGE,
        "completed",
        at,
        bytes=stored.bytes,
        sha256=stored.sha256,
        content_type=cached.content_type,
        downloaded_at=cached.downloaded_at,
        uploaded_at=iso_utc(at),
    )
    return OutMessage("completed", topics.results, task.trace_id, result)
