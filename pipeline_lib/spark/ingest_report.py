"""What the ingest notebook (notebooks/ingest_overview.ipynb) shows: DataFrame -> DataFrame summaries
of xact_events (read it with spark/tables.py `read_table(spark, settings, "events")`)."""

from __future__ import annotations

import pandas as pd
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


def events_arrived(events: DataFrame, every: str = "1 hour") -> pd.DataFrame:
    """Events per bucket of `every` (a Spark window duration) in which they arrived on
    xact.events.raw (their Kafka timestamp; when ingest wrote them if that is missing), one column
    per status subtype: a time series for charts.time_chart."""
    arrived = F.coalesce(F.col("kafka_timestamp"), F.col("ingested_at"))
    hourly: pd.DataFrame = (
        events.groupBy(
            F.window(arrived, every).start.alias("bucket"),
            F.coalesce("status_subtype", F.lit("(none)")).alias("subtype"),
        )
        .count()
        .toPandas()
    )
    if hourly.empty:
        return pd.DataFrame()
    return hourly.pivot_table(index="bucket", columns="subtype", values="count", fill_value=0).sort_index()


def attachment_outcomes(events: DataFrame) -> pd.Series:
    """Attachments the events listed, how many became download tasks, and how many the URL policy
    refused (listed minus tasks): bars for charts.bar_chart."""
    row = events.agg(
        F.coalesce(F.sum("attachment_count"), F.lit(0)).alias("listed"),
        F.coalesce(F.sum(F.size("task_ids")), F.lit(0)).alias("tasks"),
    ).first()
    listed, tasks = (int(row.listed), int(row.tasks)) if row is not None else (0, 0)
    return pd.Series({"listed": listed, "became tasks": tasks, "refused": max(0, listed - tasks)})
