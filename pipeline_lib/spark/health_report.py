"""What the health notebook (notebooks/pipeline_health.ipynb) shows, as functions over
xact_pipeline_metrics (and xact_attachments for latency): each returns a small pandas DataFrame to
display or plot (`.plot()`: matplotlib through pandas, in Jupyter, Fabric and Databricks alike).

    metrics = recent_metrics(spark, settings, hours=24)
    health_now(metrics)                             # is anything wrong right now?
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import STAGES, Settings
from pipeline_lib.kafka_client import end_offsets, topics_unreadable
from pipeline_lib.spark.tables import read_table


def recent_metrics(spark: SparkSession, settings: Settings, hours: float = 24) -> DataFrame:
    """xact_pipeline_metrics rows of the last `hours`."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    metrics = read_table(spark, settings, "metrics")
    return metrics.filter(F.col("batch_time") >= F.lit(since.strftime("%Y-%m-%d %H:%M:%S")).cast("timestamp"))


def health_now(metrics: DataFrame, now: datetime | None = None) -> pd.DataFrame:
    """Is anything wrong right now? Per stage: its last batch, how long ago, its lag and rate."""
    now = now or datetime.now(UTC)
    latest = metrics.groupBy("stage").agg(F.max_by(F.struct(*metrics.columns), "batch_time").alias("m"))
    frame = (
        latest.select(
            "stage",
            F.col("m.batch_id").alias("last_batch"),
            F.col("m.batch_time").alias("last_batch_at"),
            F.col("m.lag_max").alias("lag"),
            F.col("m.processed_rows_per_second").alias("rows_per_second"),
            F.col("m.duration_ms").alias("last_batch_ms"),
        )
        .orderBy("stage")
        .toPandas()
    )
    if frame.empty:
        return frame
    stamps = pd.to_datetime(frame["last_batch_at"], utc=True)
    frame["age_seconds"] = (pd.Timestamp(now) - stamps).dt.total_seconds().round(0)
    return frame.set_index("stage")


def over_time(metrics: DataFrame, column: str, every: str = "1 minute") -> pd.DataFrame:
    """A metric per stage (columns) over time (rows): input/processed rows per second, lag, ..."""
    frame = (
        metrics.groupBy(F.window("batch_time", every).start.alias("time"), "stage")
        .agg(F.avg(column).alias(column))
        .toPandas()
    )
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot_table(index="time", columns="stage", values=column).sort_index()


def outcome_over_time(metrics: DataFrame, outcome: str | Iterable[str], every: str = "10 minutes") -> pd.DataFrame:
    """Counts of one outcome (or several, summed) per stage over time: dead (the DLQ rate),
    retry, held, refetches..."""
    names = [outcome] if isinstance(outcome, str) else list(outcome)
    total = sum((F.coalesce(F.col("outcomes")[n], F.lit(0)) for n in names), F.lit(0))
    frame = (
        metrics.groupBy(F.window("batch_time", every).start.alias("time"), "stage")
        .agg(F.sum(total).alias("count"))
        .toPandas()
    )
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot_table(index="time", columns="stage", values="count", fill_value=0).sort_index()


def retries_per_tier(metrics: DataFrame) -> pd.DataFrame:
    """Retries sent to each tier (columns retry_5m, ...), per stage (rows), over the metrics kept."""
    exploded = metrics.select("stage", F.explode("outcomes").alias("name", "count")).filter(
        F.col("name").startswith("retry_")
    )
    frame = exploded.groupBy("stage", "name").agg(F.sum("count").alias("count")).toPandas()
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot_table(index="stage", columns="name", values="count", fill_value=0)


def breaker_openings(metrics: DataFrame, every: str = "10 minutes") -> pd.DataFrame:
    frame = (
        metrics.groupBy(F.window("batch_time", every).start.alias("time"), "stage")
        .agg(F.sum("breaker_openings").alias("openings"))
        .toPandas()
    )
    if frame.empty:
        return pd.DataFrame()
    return frame.pivot_table(index="time", columns="stage", values="openings", fill_value=0).sort_index()


def latency_percentiles(attachments: DataFrame, every: str = "10 minutes") -> pd.DataFrame:
    """Event-to-inventory latency of completed tasks: from the raw event's Kafka timestamp
    (`event_produced_at`) to the time its row became visible in xact_attachments (`recorded_at`),
    as p50, p95 and p99 seconds per time bucket. The definition the performance benchmark uses."""
    latency = F.col("recorded_at").cast("double") - F.col("event_produced_at").cast("double")
    done = attachments.filter((F.col("status") == "completed") & F.col("event_produced_at").isNotNull())
    frame = (
        done.groupBy(F.window("recorded_at", every).start.alias("time"))
        .agg(
            F.percentile_approx(latency, 0.5).alias("p50"),
            F.percentile_approx(latency, 0.95).alias("p95"),
            F.percentile_approx(latency, 0.99).alias("p99"),
            F.count("*").alias("tasks"),
        )
        .orderBy("time")
        .toPandas()
    )
    return frame.set_index("time") if not frame.empty else frame


def topic_offsets(settings: Settings, metrics: DataFrame | None = None) -> pd.DataFrame:
    """Every pipeline topic: the records it holds now and, where a stage reads it, that stage's
    latest lag (Spark commits no offsets to Kafka; its lag comes from the stage's progress). With
    Kafka unreachable, one line says so and the frame is empty."""
    unreadable = topics_unreadable(settings)
    if unreadable is not None:
        print(unreadable)
        return pd.DataFrame()
    held = end_offsets(settings, settings.topic_partitions())
    lag: dict[str, Any] = {}
    if metrics is not None:
        now = health_now(metrics)
        for stage in STAGES:
            if stage in now.index:
                for topic in settings.stage_inputs(stage):
                    lag[topic] = now.loc[stage, "lag"]
    return pd.DataFrame(
        [{"topic": name, "records": held.get(name), "lag_of_its_reader": lag.get(name)} for name in held]
    ).set_index("topic")
