"""What the dead-letter notebook (notebooks/dlq_analysis.ipynb) shows, as functions: each takes
Spark DataFrames (or the settings) and returns a small pandas DataFrame to display or plot.
Heavy work runs in Spark; only the summary reaches pandas. Replaying and resolving is
spark/replay.py.

    dlq = read_table(spark, settings, "dlq")        # spark/tables.py: the one way to read a table
    dead_by(dlq, "category")                        # counts per category (stage, host, http_status, ...)
    journey(spark, settings, task_id=...)           # every topic message and table row of one task

Everything that reads a topic redacts what it returns: pending, retry and cached carry live
presigned URLs by design.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import IntegralType

from pipeline_lib.config import Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import read_window, topics_unreadable
from pipeline_lib.records import InputRecord
from pipeline_lib.redaction import redact_payload
from pipeline_lib.spark.tables import table_or_none

NONE_LABEL = "(none)"  # a dead letter without the value (an ingest one has no host)


def dead_by(dlq: DataFrame, column: str, top: int | None = None) -> pd.DataFrame:
    """Dead letters per value of `column` (category, stage, host, http_status, attempts, status).
    A missing value reads "(none)" for text and <NA> for numbers (whole numbers stay whole: an
    HTTP status is 404, not 404.0)."""
    counts = dlq.groupBy(column).count().orderBy(F.col("count").desc(), F.col(column))
    if top:
        counts = counts.limit(top)
    numeric = isinstance(dlq.schema[column].dataType, IntegralType)
    frame = counts.toPandas()
    frame[column] = frame[column].astype("Int64") if numeric else frame[column].fillna(NONE_LABEL)
    return frame.set_index(column)


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
            out.append(
                {
                    "at": entry.get("at"),
                    "stage": entry.get("stage"),
                    "attempt": entry.get("attempt"),
                    "category": entry.get("category"),
                    "http_status": entry.get("http_status"),
                    "message": entry.get("message"),
                    "dead_letter": row.dlq_id,
                    "source": f"{row.source_topic}/{row.source_partition}/{row.source_offset}",
                }
            )
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
    """The latest messages of a topic (from `since`, by default the last day), redacted. With Kafka
    unreachable, one line says so and the frame is empty."""
    unreadable = topics_unreadable(settings)
    if unreadable is not None:
        print(unreadable)
        return pd.DataFrame()
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
    inventory = table_or_none(spark, settings, "attachments")
    dlq = table_or_none(spark, settings, "dlq")
    events = table_or_none(spark, settings, "events")
    if inventory is not None:
        match = F.col("task_id") == F.lit(task_id) if task_id else F.col("trace_id") == F.lit(trace_id)
        for r in inventory.filter(match).collect():
            trace_id = trace_id or r.trace_id
            times += [t for t in (r.event_produced_at, r.first_seen_at, r.recorded_at, r.updated_at) if t]
            rows.append(
                _row(
                    r.recorded_at or r.updated_at,
                    "table",
                    "xact_attachments",
                    r.task_id,
                    r.attempt,
                    r.status,
                    f"{r.stage} {r.error_category or ''} {r.blob_path or ''}".strip(),
                )
            )
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
    unreadable = topics_unreadable(settings)
    if unreadable is not None:
        print(unreadable)  # the journey through the tables only
        topics = []
    for topic in topics:
        for record in read_window(settings, topic, start_ms, end_ms, key=trace_id):
            if task_id and task_id not in record.text and record.headers.get("xact.task_id") != task_id:
                continue
            rows.append(_message_row(record))
    frame = pd.DataFrame(rows)
    return frame.sort_values("time", kind="stable").reset_index(drop=True)


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # Spark's timestamps are UTC (session zone)


def _row(at: Any, source: str, where: str, task: str | None, attempt: Any, what: Any, detail: Any) -> dict[str, Any]:
    return {
        "time": pd.Timestamp(_aware(at)) if at else pd.NaT,
        "source": source,
        "where": where,
        "task_id": task,
        "attempt": attempt,
        "what": what,
        "detail": redact_payload(str(detail or "")),
    }


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
        "time": pd.Timestamp(record.source.timestamp),
        "source": "topic",
        "where": f"{record.source.topic}/{record.source.partition}/{record.source.offset}",
        "task_id": task.get("task_id"),
        "attempt": task.get("attempt"),
        "what": what,
        "detail": redact_payload(record.text)[:300],
    }
