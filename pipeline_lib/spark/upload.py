"""Upload: xact.downloads.cached -> the lake (local directory or OneLake), routed by outcome
through one Kafka sink: results (completed), pending (cache lost: download again), a retry tier
or the DLQ (stage_io.py has the wiring, upload/stage.py the work). At start it removes `.part`
files a crashed download left in the cache (tables maintain also removes final tasks' files)."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.cache import clean_cache, stale_part_age
from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.stage_io import run_stage
from pipeline_lib.upload.stage import UploadStage

log = get_logger("upload")
JOB_NAME = "upload"
OUTCOMES = ("completed", "refetch", "retry", "held", "dead", "malformed", "internal")


def run_upload(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the upload query; with `available_now`, it processes what is there and stops."""
    clean_stale_parts(settings)
    return run_stage(
        spark, settings, name=JOB_NAME, topic=settings.topics.cached.name, stage_for=UploadStage.for_settings,
        outcomes=OUTCOMES, available_now=available_now,
    )  # fmt: skip


def clean_stale_parts(settings: Settings) -> None:
    """Remove `.part` files far older than any download may take (a crash left them); best effort."""
    try:
        report = clean_cache(
            settings.cache_dir, part_max_age_seconds=stale_part_age(settings.download.total_timeout_seconds)
        )
    except OSError as exc:  # the cache may not be mounted on the driver: the next start tries again
        log.warning("cache janitor skipped: %s", exc)
        return
    if report.removed or report.errors:
        log.info("cache janitor: removed %d stale part file(s), %d bytes; %d error(s)",
                 report.stale_parts, report.stale_part_bytes, report.errors)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-upload` and jobs/upload.py: load settings, get the session, run the upload job."""
    from pipeline_lib.spark.runner import job_main

    return job_main(JOB_NAME, argv)
