"""Download: xact.downloads.pending -> the cache, routed by outcome through one Kafka sink to
xact.downloads.cached, a retry tier or the DLQ, plus xact.downloads.results (stage_io.py has the
I/O stages' wiring, download/stage.py the work)."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings, Stage
from pipeline_lib.download.stage import DownloadStage
from pipeline_lib.spark.stage_io import io_stage
from pipeline_lib.spark.stage_query import start_stage

DOWNLOAD = io_stage(
    Stage.DOWNLOAD.value,
    stage_for=DownloadStage.for_settings,
    outcomes=("cached", "retry", "held", "dead", "malformed", "internal"),
)


def run_download(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the download query; with `available_now`, it processes what is there and stops."""
    return start_stage(spark, settings, DOWNLOAD, available_now=available_now)
