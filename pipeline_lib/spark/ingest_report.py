"""What the ingest notebook (notebooks/ingest_overview.ipynb) shows: DataFrame -> DataFrame summaries
of xact_events (read it with spark/tables.py `read_table(spark, settings, "events")`)."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F


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
