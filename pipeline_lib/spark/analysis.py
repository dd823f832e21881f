"""What the analyst notebooks show, as functions: each takes Spark DataFrames (or the settings) and
returns a small pandas DataFrame to display or plot (`.plot.bar()`, `.plot()`: matplotlib through
pandas, which renders in Jupyter, Fabric and Databricks alike). Heavy work (grouping, percentiles)
runs in Spark; only the summary reaches pandas.

    load_table(spark, settings, "dlq")             # xact_dlq (also: events, attachments, metrics)
    dead_by(dlq, "category")                       # counts per category (stage, host, http_status, ...)
    journey(spark, settings, task_id=...)          # every topic message and table row of one task
    health_now(metrics, now)                       # is anything wrong right now?

Everything that reads a topic redacts what it returns: pending, retry and cached carry live
presigned URLs by design.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import end_offsets, read_window
from pipeline_lib.records import InputRecord
from pipeline_lib.redaction import redact_payload
from pipeline_lib.spark.tables import TableMissing, all_tables, require_table

TABLES = {
    "events": "xact_events",
    "attachments": "xact_attachments",
    "dlq": "xact_dlq",
    "metrics": "xact_pipeline_metrics",
}


def load_table(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """A pipeline table by its name (`dlq` or `xact_dlq`, `attachments`, `events`, `metrics`)."""
    wanted = name.removeprefix("xact_").removeprefix("pipeline_")
    for spec in all_tables(settings):
        if spec.name in (name, TABLES.get(wanted)):
            return require_table(spark, spec).toDF()
    raise PipelineError(f"no table named {name!r}; choose from {', '.join(TABLES.values())}")


# --- dead letters -------------------------------------------------------------------------------


def dead_by(dlq: DataFrame, column: str, top: int | None = None) -> pd.DataFrame:
    """Dead letters per value of `column` (category, stage, host, http_status, attempts, status)."""
    counts = dlq.groupBy(column).count().orderBy(F.col("count").desc(), F.col(column))
    if top:
        counts = counts.limit(top)
    return counts.toPandas().set_index(column)


def dead_per_hour(dlq: DataFrame) -> pd.DataFrame:
    """Dead letters per hour (rows) and category (columns), zeros where none: a time series."""
    hourly = dlq.groupBy(F.date_trunc("hour", "failed_at").alias("hour"), "category").count().toPandas()
    if hourly.empty:
        return pd.DataFrame()
    return hourly.pivot_table(index="hour", columns="category", values="count", fill_value=0).sort_index()


def dlq_overview(dlq: DataFrame) -> pd.DataFrame:
    """Counts per status, stage, category and host: where to look first."""
    return (
        dlq.groupBy("status", "stage", "category", "host")
        .agg(F.count("*").alias("rows"), F.max("failed_at").alias("last_failed_at"))
        .orderBy(F.col("rows").desc())
        .toPandas()
    )


def error_history(dlq: DataFrame, task_id: str) -> pd.DataFrame:
    """Every failed attempt of one task, from its dead letters (oldest first), with where each dead
    letter's source record sits on Kafka (topic, partition, offset)."""
    rows = dlq.filter(F.col("task_id") == task_id).orderBy("failed_at").collect()
    out: list[dict[str, Any]] = []
    for row in rows:
        for entry in json.loads(row.error_history_json or "[]"):
            out.append({
                "at": entry.get("at"), "stage": entry.get("stage"), "attempt": entry.get("attempt"),
                "category": entry.get("category"), "http_status": entry.get("http_status"),
                "message": entry.get("message"), "dead_letter": row.dlq_id,
                "source": f"{row.source_topic}/{row.source_partition}/{row.source_offset}",
            })  # fmt: skip
    return pd.DataFrame(out)


def last_dead_task(dlq: DataFrame) -> str:
    """The task id of the dead letter that failed last (a default for the drill-down)."""
    row = dlq.filter(F.col("task_id").isNotNull()).orderBy(F.col("failed_at").desc()).select("task_id").first()
    if row is None:
        raise PipelineError("xact_dlq holds no dead letter with a task")
    return str(row.task_id)


def peek_topic(
    settings: Settings, topic: str, *, max_messages: int = 20, since: datetime | None = None, key: str | None = None
) -> pd.DataFrame:
    """The latest messages of a topic (from `since`, by default the last day), redacted."""
    now = datetime.now(UTC)
    start = since or now - timedelta(days=1)
    records = read_window(settings, topic, int(start.timestamp() * 1000), int(now.timestamp() * 1000), key=key)
    return pd.DataFrame([_message_row(r) for r in records[-max_messages:]])


# --- one task's journey --------------------------------------------------------------------------


def journey(
    spark: SparkSession,
    settings: Settings,
    *,
    task_id: str | None = None,
    trace_id: str | None = None,
    margin: timedelta = timedelta(hours=1),
) -> pd.DataFrame:
    """Every topic message and table row of one task (or one trace), in time order, redacted.

    The tables give the trace id and a time window (the task's first and last times, widened by
    `margin`); each pipeline topic is then read only in that window and only in the partition the
    trace id's key maps to (every pipeline message is keyed by its trace id), so this is a bounded
    read, practical against Event Hubs, not a scan of whole topics.
    """
    if not (task_id or trace_id):
        raise PipelineError("journey needs a task_id or a trace_id")
    rows: list[dict[str, Any]] = []
    times: list[datetime] = []
    inventory = _safe_table(spark, settings, "attachments")
    dlq = _safe_table(spark, settings, "dlq")
    events = _safe_table(spark, settings, "events")
    if inventory is not None:
        match = F.col("task_id") == F.lit(task_id) if task_id else F.col("trace_id") == F.lit(trace_id)
        for r in inventory.filter(match).collect():
            trace_id = trace_id or r.trace_id
            times += [t for t in (r.event_produced_at, r.first_seen_at, r.recorded_at, r.updated_at) if t]
            rows.append(_row(r.recorded_at or r.updated_at, "table", "xact_attachments", r.task_id, r.attempt,
                             r.status, f"{r.stage} {r.error_category or ''} {r.blob_path or ''}".strip()))  # fmt: skip
    if dlq is not None:
        match = F.col("task_id") == F.lit(task_id) if task_id else F.col("trace_id") == F.lit(trace_id)
        for r in dlq.filter(match).collect():
            trace_id = trace_id or r.trace_id
            times.append(r.failed_at)
            rows.append(_row(r.failed_at, "table", "xact_dlq", r.task_id, r.attempts, r.category, r.reason))
    if events is not None and trace_id:
        for r in events.filter(F.col("trace_id") == trace_id).collect():
            times += [t for t in (r.kafka_timestamp, r.ingested_at) if t]
            rows.append(_row(r.ingested_at, "table", "xact_events", None, None, r.event_type, r.event_id))
    if not times or not trace_id:
        raise PipelineError("no row of that task or trace in xact_attachments, xact_dlq or xact_events")
    start, end = min(times) - margin, max(times) + margin
    start_ms, end_ms = (int(_aware(t).timestamp() * 1000) for t in (start, end))
    t = settings.topics
    topics = [t.events_raw.name, t.pending.name, *settings.retry_topics, t.cached.name, t.results.name, t.dlq.name]
    for topic in topics:
        for record in read_window(settings, topic, start_ms, end_ms, key=trace_id):
            if task_id and task_id not in record.text and record.headers.get("xact.task_id") != task_id:
                continue
            rows.append(_message_row(record))
    frame = pd.DataFrame(rows)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def _safe_table(spark: SparkSession, settings: Settings, name: str) -> DataFrame | None:
    try:
        return load_table(spark, settings, name)
    except TableMissing:
        return None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # Spark's timestamps are UTC (session zone)


def _row(at: Any, source: str, where: str, task: str | None, attempt: Any, what: Any, detail: Any) -> dict[str, Any]:
    return {"time": pd.Timestamp(_aware(at)) if at else pd.NaT, "source": source, "where": where,
            "task_id": task, "attempt": attempt, "what": what, "detail": redact_payload(str(detail or ""))}  # fmt: skip


def _message_row(record: InputRecord) -> dict[str, Any]:
    try:
        body = json.loads(record.value or b"")
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    task = body.get("task") if isinstance(body.get("task"), dict) else body
    what = body.get("status") or body.get("category") or body.get("schema")
    if "xact.retry.forwarded_at" in record.headers:
        what = f"{what} (forwarded by the retry scheduler)"
    return {
        "time": pd.Timestamp(record.source.timestamp), "source": "topic",
        "where": f"{record.source.topic}/{record.source.partition}/{record.source.offset}",
        "task_id": task.get("task_id"), "attempt": task.get("attempt"), "what": what,
        "detail": redact_payload(record.text)[:300],
    }  # fmt: skip


# --- pipeline health ----------------------------------------------------------------------------


def recent_metrics(spark: SparkSession, settings: Settings, hours: float = 24) -> DataFrame:
    """xact_pipeline_metrics rows of the last `hours`."""
    since = datetime.now(UTC) - timedelta(hours=hours)
    metrics = load_table(spark, settings, "metrics")
    return metrics.filter(F.col("batch_time") >= F.lit(since.strftime("%Y-%m-%d %H:%M:%S")).cast("timestamp"))


def health_now(metrics: DataFrame, now: datetime | None = None) -> pd.DataFrame:
    """Is anything wrong right now? Per stage: its last batch, how long ago, its lag and rate."""
    now = now or datetime.now(UTC)
    latest = metrics.groupBy("stage").agg(F.max_by(F.struct(*metrics.columns), "batch_time").alias("m"))
    frame = latest.select(
        "stage", F.col("m.batch_id").alias("last_batch"), F.col("m.batch_time").alias("last_batch_at"),
        F.col("m.lag_max").alias("lag"), F.col("m.processed_rows_per_second").alias("rows_per_second"),
        F.col("m.duration_ms").alias("last_batch_ms"),
    ).orderBy("stage").toPandas()  # fmt: skip
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
            F.percentile_approx(latency, 0.5).alias("p50"), F.percentile_approx(latency, 0.95).alias("p95"),
            F.percentile_approx(latency, 0.99).alias("p99"), F.count("*").alias("tasks"),
        )
        .orderBy("time")
        .toPandas()
    )  # fmt: skip
    return frame.set_index("time") if not frame.empty else frame


def topic_offsets(settings: Settings, metrics: DataFrame | None = None) -> pd.DataFrame:
    """Every pipeline topic: the records it holds now and, where a stage reads it, that stage's
    latest lag (Spark commits no offsets to Kafka; its lag comes from the stage's progress)."""
    held = end_offsets(settings, settings.topic_partitions())
    lag: dict[str, Any] = {}
    if metrics is not None:
        now = health_now(metrics)
        reads = {"ingest": [settings.topics.events_raw.name], "download": [settings.topics.pending.name],
                 "upload": [settings.topics.cached.name], "results": [settings.topics.results.name],
                 "dlq-table": [settings.topics.dlq.name], "retry-scheduler": list(settings.retry_topics)}  # fmt: skip
        for stage, topics in reads.items():
            if stage in now.index:
                for topic in topics:
                    lag[topic] = now.loc[stage, "lag"]
    return pd.DataFrame(
        [{"topic": name, "records": held.get(name), "lag_of_its_reader": lag.get(name)} for name in held]
    ).set_index("topic")
