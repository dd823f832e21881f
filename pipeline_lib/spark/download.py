"""Download: xact.downloads.pending -> the cache, routed by outcome through one Kafka sink (stage_io.py
has the I/O stages' wiring).

upload.mode combined (the default): each downloaded file is uploaded in the same pass
(upload/combined.py) and its `completed` result goes to xact.downloads.results; only what could
not be uploaded goes to xact.downloads.cached for the upload stage. decoupled: every downloaded
file goes to xact.downloads.cached (download/stage.py). Either way a failed download goes to a
retry tier or the DLQ, with its result. The query, its checkpoint and its metrics are the same in
both modes, so switching mode re-reads nothing.
"""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings, Stage
from pipeline_lib.download.stage import DownloadStage
from pipeline_lib.record_stage import RecordStage
from pipeline_lib.spark.stage_io import io_stage
from pipeline_lib.spark.stage_query import start_stage
from pipeline_lib.upload.combined import CombinedStage


def download_stage(settings: Settings) -> RecordStage:
    """This worker's stage for the download query: the combined pass or the download alone."""
    if settings.upload.mode == "combined":
        return CombinedStage.for_settings(settings)
    return DownloadStage.for_settings(settings)


DOWNLOAD = io_stage(
    Stage.DOWNLOAD.value,
    stage_for=download_stage,
    # completed: uploaded in the combined pass; cached: handed to the upload stage
    outcomes=("completed", "cached", "retry", "held", "dead", "malformed", "internal"),
)


def run_download(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the download query; with `available_now`, it processes what is there and stops."""
    return start_stage(spark, settings, DOWNLOAD, available_now=available_now)
