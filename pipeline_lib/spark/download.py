"""Download: xact.downloads.pending -> the cache, routed by outcome through one Kafka sink to
xact.downloads.cached, a retry tier or the DLQ, plus xact.downloads.results (stage_io.py has the
wiring, download_stage.py the work)."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings
from pipeline_lib.download.stage import DownloadStage
from pipeline_lib.spark.stage_io import run_stage

JOB_NAME = "download"
OUTCOMES = ("cached", "retry", "held", "dead", "malformed", "internal")


def run_download(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the download query; with `available_now`, it processes what is there and stops."""
    return run_stage(
        spark, settings, name=JOB_NAME, topic=settings.topics.pending.name, stage_for=DownloadStage.for_settings,
        outcomes=OUTCOMES, available_now=available_now,
    )  # fmt: skip

