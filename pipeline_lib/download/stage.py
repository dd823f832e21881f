"""The download stage's work on one batch of pending records, without Spark: decode each task,
download up to `download.concurrency` at a time, and route every outcome (routing.py).

The Spark job calls `DownloadStage.for_settings(settings).process(records)` inside mapInArrow;
tests and the benchmark call it directly. The loop itself (total per record) is record_stage.RecordStage.
"""

from __future__ import annotations

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DownloadTask, SourceRef
from pipeline_lib.download.downloader import Downloader, DownloadOutcome
from pipeline_lib.record_stage import RecordStage
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.routing import OutMessage, Routed, Topics, result_message, route_failure

STAGE = "download"


class DownloadStage(RecordStage[DownloadTask, DownloadOutcome]):
    name = STAGE
    message_cls = DownloadTask

    def __init__(self, settings: Settings, downloader: Downloader | None = None) -> None:
        super().__init__(settings, settings.download.concurrency)
        self.downloader = downloader or Downloader.from_settings(settings)
        self.cached_topic = settings.topics.cached.name

    def work(self, message: DownloadTask) -> DownloadOutcome:
        return self.downloader.download(message)

    def task_of(self, message: DownloadTask) -> DownloadTask:
        return message

    def route(self, outcome: DownloadOutcome, source: SourceRef | None) -> Routed:
        return route_download(outcome, source, self.topics, self.retry_policy, self.cached_topic)


def route_download(
    outcome: DownloadOutcome, source: SourceRef | None, topics: Topics, policy: RetryPolicy, cached_topic: str
) -> Routed:
    """A download's messages: the cached file to `cached_topic` and a `downloaded` result, or the
    failure's retry or dead letter and its result (routing.route_failure)."""
    task, at = outcome.task, outcome.finished_at
    if outcome.cached is not None:
        cached = outcome.cached
        result = result_message(
            task,
            STAGE,
            "downloaded",
            at,
            bytes=cached.bytes,
            sha256=cached.sha256,
            content_type=cached.content_type,
            downloaded_at=cached.downloaded_at,
        )
        return Routed(
            [
                OutMessage("cached", cached_topic, task.trace_id, cached),
                OutMessage("result", topics.results, task.trace_id, result),
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
        policy=policy,
        topics=topics,
        return_topic=topics.pending,
    )
    return Routed([failed, result_msg], outcome)
