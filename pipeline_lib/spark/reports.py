"""DataFrame -> DataFrame summaries for the analyst notebooks (no I/O beyond reading the tables)."""

from __future__ import annotations

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import Settings


def events_table_df(spark: SparkSession, settings: Settings) -> DataFrame:
    return spark.read.format("delta").load(settings.table_path("events"))


def events_by_day(events: DataFrame) -> DataFrame:
    """Per event date and status subtype: events, events with attachments, attachments listed."""
    return (
        events.groupBy("event_date", "status_subtype")
        .agg(
            F.count("*").alias("events"),
            F.sum(F.when(F.col("attachment_count") > 0, 1).otherwise(0)).alias("with_attachments"),
            F.sum("attachment_count").alias("attachments"),
            F.sum(F.size("task_ids")).alias("tasks"),
        )
        .orderBy(F.col("event_date").desc(), "status_subtype")
    )


def refused_attachments(events: DataFrame) -> DataFrame:
    """Events that listed more attachments than became tasks (the rest were refused by the URL policy)."""
    return (
        events.withColumn("refused", F.col("attachment_count") - F.size("task_ids"))
        .filter(F.col("refused") > 0)
        .select(
            "event_date", "trace_id", "assignment_id", "status_subtype", "attachment_count", "refused", "attachments"
        )
    )
