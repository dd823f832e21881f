"""Table administration: create every Delta table of the pipeline, and maintain them (metric rows
past retention deleted, OPTIMIZE, VACUUM, then the download cache cleaned of what no task needs).
`xact-pipeline tables create|maintain` and the scheduled maintenance job run these."""

from __future__ import annotations

from collections.abc import Sequence

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline_lib.cache import clean_cache, stale_part_age
from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.metrics import delete_old_metrics
from pipeline_lib.spark.session import session_for
from pipeline_lib.spark.tables import all_tables, attachments_table, create_tables, maintain_tables, metrics_table

log = get_logger("tables")


def create_all_tables(settings: Settings, spark: SparkSession | None = None) -> None:
    """Create every Delta table of the pipeline that does not exist yet."""
    create_tables(spark or session_for(settings), settings)


def maintain(settings: Settings, retain_hours: int, spark: SparkSession | None = None) -> None:
    """Delete metric rows past their retention, OPTIMIZE and VACUUM every pipeline table, then clean
    the download cache: stale `.part` files, and the files of tasks already final in
    xact_attachments (completed or dead)."""
    spark = spark or session_for(settings)
    if DeltaTable.isDeltaTable(spark, metrics_table(settings).path):
        delete_old_metrics(spark, settings)  # rows past metrics.retention_days, before compaction
    maintain_tables(spark, all_tables(settings), retain_hours)
    spec = attachments_table(settings)
    if not DeltaTable.isDeltaTable(spark, spec.path):
        return
    inventory = DeltaTable.forPath(spark, spec.path).toDF()

    def final_ids(batch: Sequence[str]) -> list[str]:
        final = inventory.filter(F.col("task_id").isin(*batch) & F.col("status").isin("completed", "dead"))
        return [r.task_id for r in final.select("task_id").collect()]

    # A file younger than a download deadline may belong to a replayed task between download and upload.
    timeout = settings.download.total_timeout_seconds
    report = clean_cache(
        settings.cache_dir,
        part_max_age_seconds=stale_part_age(timeout),
        final_ids=final_ids,
        final_min_age_seconds=timeout,
    )
    log.info(
        "cache %s: removed %d stale part file(s) and %d file(s) of final tasks (%d bytes); kept %d; %d error(s)",
        settings.cache_dir,
        report.stale_parts,
        report.final_files,
        report.freed_bytes,
        report.kept_files,
        report.errors,
    )
