"""The download stage's work on one batch of pending records, without Spark: decode each task,
download up to `download.concurrency` at a time, and route every outcome (routing.py).

The Spark job calls `DownloadStage.for_settings(settings).process(records)` inside mapInArrow;
tests and the benchmark call it directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DownloadTask, SourceRef
from pipeline_lib.download.downloader import Downloader, DownloadOutcome
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
from pipeline_lib.worker_state import per_worker

STAGE = "download"


class DownloadStage:
    def __init__(self, settings: Settings, downloader: Downloader | None = None) -> None:
        self.downloader = downloader or Downloader.from_settings(settings)
        self.retry_policy = RetryPolicy.from_settings(settings)
        self.topics = Topics.from_settings(settings)
        self.cached_topic = settings.topics.cached.name
        self.concurrency = settings.download.concurrency
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="download")

    @classmethod
    def for_settings(cls, settings: Settings) -> DownloadStage:
        """The stage of this worker process for these settings (worker_state.per_worker)."""
        return per_worker(cls, settings)

    def process(self, records: Iterable[PendingRecord]) -> Iterator[Routed]:
        """Route every record, downloading up to `concurrency` at once; yields in input order."""
        return process_records(
            records,
            DownloadTask,
            self.downloader.download,
            self.route,
            self._pool,
            stage=STAGE,
            dlq_topic=self.topics.dlq,
        )

    def route(self, outcome: DownloadOutcome, source: SourceRef | None) -> Routed:
        task, at = outcome.task, outcome.finished_at
        if outcome.cached is not None:
            cached = outcome.cached
            result = result_message(
                task, STAGE, "downloaded", at,
                bytes=cached.bytes, sha256=cached.sha256, content_type=cached.content_type,
                downloaded_at=cached.downloaded_at,
            )  # fmt: skip
            return Routed(
                [
                    OutMessage("cached", self.cached_topic, task.trace_id, cached),
                    OutMessage("result", self.topics.results, task.trace_id, result),
                ],
                outcome,
            )
        assert outcome.failure is not None
        failed, result_msg = route_failure(
            task,
            outcome.failure,
            stage=STAGE,
            source=source,
            at=at,
            policy=self.retry_policy,
            topics=self.topics,
            return_topic=self.topics.pending,
        )
        return Routed([failed, result_msg], outcome)
