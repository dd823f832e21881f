"""Upload: xact.downloads.cached -> the lake (local directory or OneLake), routed by outcome
through one Kafka sink: results (completed), pending (cache lost: download again), a retry tier
or the DLQ (stage_io.py has the wiring, upload_stage.py the work)."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings
from pipeline_lib.spark.stage_io import run_stage
from pipeline_lib.upload.stage import UploadStage

JOB_NAME = "upload"
OUTCOMES = ("completed", "refetch", "retry", "dead", "malformed", "internal")


def run_upload(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the upload query; with `available_now`, it processes what is there and stops."""
    return run_stage(
        spark, settings, name=JOB_NAME, topic=settings.topics.cached.name, stage_for=UploadStage.for_settings,
        outcomes=OUTCOMES, available_now=available_now,
    )  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-upload` and jobs/upload.py: load settings, get the session, run the upload job."""
    from pipeline_lib.spark.runner import job_main

    return job_main(JOB_NAME, argv)
