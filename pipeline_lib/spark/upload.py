"""Upload: xact.downloads.cached -> the lake (local directory or OneLake), routed by outcome
through one Kafka sink: results (completed), pending (cache lost: download again), a retry tier
or the DLQ (stage_io.py has the wiring, upload/stage.py the work). At start it removes `.part`
files a crashed download left in the cache (tables maintain also removes final tasks' files)."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.cache import clean_stale_parts
from pipeline_lib.config import Settings
from pipeline_lib.spark.stage_io import run_stage
from pipeline_lib.upload.stage import UploadStage

JOB_NAME = "upload"
OUTCOMES = ("completed", "refetch", "retry", "held", "dead", "malformed", "internal")


def run_upload(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the upload query; with `available_now`, it processes what is there and stops."""
    clean_stale_parts(settings.cache_dir, settings.download.total_timeout_seconds)
    return run_stage(
        spark, settings, name=JOB_NAME, topic=settings.topics.cached.name, stage_for=UploadStage.for_settings,
        outcomes=OUTCOMES, available_now=available_now,
    )  # fmt: skip
