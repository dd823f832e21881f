"""Upload: xact.downloads.cached -> the lake (local directory or OneLake), routed by outcome
through one Kafka sink: results (completed), pending (cache lost: download again), a retry tier
or the DLQ (stage_io.py has the I/O stages' wiring, upload/stage.py the work). At start it
removes `.part` files a crashed download left in the cache (tables maintain also removes final
tasks' files)."""

from __future__ import annotations

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.cache import clean_stale_parts
from pipeline_lib.config import Settings, Stage
from pipeline_lib.spark.stage_io import io_stage
from pipeline_lib.spark.stage_query import start_stage
from pipeline_lib.upload.stage import UploadStage


def _clean_stale_parts(spark: SparkSession, settings: Settings) -> None:
    clean_stale_parts(settings.cache_dir, settings.download.total_timeout_seconds)


UPLOAD = io_stage(
    Stage.UPLOAD.value,
    stage_for=UploadStage.for_settings,
    outcomes=("completed", "refetch", "retry", "held", "dead", "malformed", "internal"),
    prepare=_clean_stale_parts,
)


def run_upload(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the upload query; with `available_now`, it processes what is there and stops."""
    return start_stage(spark, settings, UPLOAD, available_now=available_now)
