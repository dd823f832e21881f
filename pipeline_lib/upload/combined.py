"""The combined pass (upload.mode: combined, the default): the download query downloads each task
and uploads it in the same Python worker, so a file that reaches the lake goes straight to
results: one hop, one micro-batch and one Kafka round trip fewer than the decoupled path, and the
file is never read from another host.

| outcome                                          | goes to                                        |
| ------------------------------------------------ | ---------------------------------------------- |
| downloaded, uploaded and verified                | results (`completed`, stage upload)            |
| downloaded, the upload did not complete (lake    | xact.downloads.cached and a `downloaded`       |
| down, throttled, its breaker open, any failure)  | result: the upload stage takes it from there   |
| the download failed                              | routed as the download stage would             |

What the combined pass could not upload is handed to the upload stage exactly as the decoupled
path hands it every file, so every upload rule (retry tiers, breaker waits, refetches, the DLQ)
stays in one place: downloads keep flowing into the cache while OneLake is down, and the upload
stage catches up when it is back. The handed-over upload is tried once more there, so a lake
that refuses a file for good is asked twice before the file is dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DownloadTask, SourceRef
from pipeline_lib.download.downloader import Downloader, DownloadOutcome
from pipeline_lib.download.stage import STAGE, route_download
from pipeline_lib.logs import get_logger
from pipeline_lib.record_stage import RecordStage
from pipeline_lib.routing import Routed
from pipeline_lib.upload.stage import completed_message
from pipeline_lib.upload.uploader import Uploader, UploadOutcome

log = get_logger("upload")


@dataclass(frozen=True)
class CombinedOutcome:
    """A task's download and, when it was downloaded, its upload (None: not tried)."""

    download: DownloadOutcome
    upload: UploadOutcome | None = None

    @property
    def task(self) -> DownloadTask:
        return self.download.task

    @property
    def bytes(self) -> int:
        return self.download.bytes

    @property
    def breaker_opened(self) -> bool:
        return self.download.breaker_opened or bool(self.upload and self.upload.breaker_opened)

    @property
    def completed(self) -> bool:
        return self.upload is not None and self.upload.stored is not None


class CombinedStage(RecordStage[DownloadTask, CombinedOutcome]):
    """Download then upload, per task, `download.concurrency` tasks at a time."""

    name = STAGE  # the download query's stage: its checkpoint, metrics and dead letters
    message_cls = DownloadTask

    def __init__(
        self, settings: Settings, downloader: Downloader | None = None, uploader: Uploader | None = None
    ) -> None:
        super().__init__(settings, settings.download.concurrency)
        self.downloader = downloader or Downloader.from_settings(settings)
        self.uploader = uploader or Uploader(settings)
        self.cached_topic = settings.topics.cached.name

    def work(self, message: DownloadTask) -> CombinedOutcome:
        downloaded = self.downloader.download(message)
        if downloaded.cached is None:
            return CombinedOutcome(downloaded)
        return CombinedOutcome(downloaded, self.uploader.upload(downloaded.cached))

    def task_of(self, message: DownloadTask) -> DownloadTask:
        return message

    def route(self, outcome: CombinedOutcome, source: SourceRef | None) -> Routed:
        if outcome.upload is not None and outcome.upload.stored is not None:
            return Routed([completed_message(outcome.upload, self.topics)], outcome)
        if outcome.upload is not None and outcome.upload.failure is not None:
            f = outcome.upload.failure
            log.debug("task %s: upload left to the upload stage (%s: %s)", outcome.task.task_id, f.category, f.message)
        routed = route_download(outcome.download, source, self.topics, self.retry_policy, self.cached_topic)
        return Routed(routed.messages, outcome)
