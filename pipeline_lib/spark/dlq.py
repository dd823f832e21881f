"""The xact_dlq Delta table, and what analysts do with it: summarise, replay, resolve.

    source (Kafka xact.downloads.dlq) -> dead_letter_rows (mapInPandas over DeadLetter.decode)
        -> foreachBatch: MERGE insert-only on dlq_id  (re-processing adds nothing)

One row per dead letter, i.e. per dead task and attempt chain: the dlq_id is derived from the
stage, task id, replay id and attempt (routing.py), so a replayed task that dies again is a new
row, linked to the first by its task id and replay id. A message on the DLQ topic that is not a
readable dead letter still becomes a row (stage `dlq`, category `malformed`): nothing is dropped.

Replay needs the live URL, which the DLQ never holds (invariant 5): it reads the dead letter's
source record (topic, partition, offset: the provenance) back from Kafka, where the task still
has it, as long as the topic's retention keeps it. A row whose source is gone is reported and
left open.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import orjson
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import IntegerType, LongType, StringType, StructField, StructType, TimestampType

from pipeline_lib import ids
from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, ContractError, DeadLetter, DownloadTask, SourceRef
from pipeline_lib.dlq_selection import DlqSelection
from pipeline_lib.logs import get_logger
from pipeline_lib.redaction import redact, truncate
from pipeline_lib.spark.delta_tables import TableSpec, create_table, require_table
from pipeline_lib.spark.kafka_io import read_topics
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.times import iso_from_millis, iso_utc

log = get_logger("dlq")
JOB_NAME = "dlq-table"

# Everything the parse step emits; timestamps still ISO strings, typed by dead_letter_rows.
_PARSED_FIELDS = [
    ("dlq_id", StringType(), False), ("stage", StringType(), False), ("category", StringType(), False),
    ("reason", StringType(), True), ("failed_at", StringType(), True), ("attempts", IntegerType(), True),
    ("trace_id", StringType(), True), ("task_id", StringType(), True), ("event_id", StringType(), True),
    ("url", StringType(), True), ("host", StringType(), True), ("http_status", IntegerType(), True),
    ("source_topic", StringType(), True), ("source_partition", IntegerType(), True),
    ("source_offset", LongType(), True), ("source_timestamp", StringType(), True),
    ("task_json", StringType(), True), ("payload", StringType(), True), ("error_history_json", StringType(), True),
]  # fmt: skip
PARSED_SCHEMA = StructType([StructField(n, t, nullable) for n, t, nullable in _PARSED_FIELDS])

DLQ_SCHEMA = StructType(
    [
        StructField(f.name, TimestampType() if f.name in ("failed_at", "source_timestamp") else f.dataType, f.nullable)
        for f in PARSED_SCHEMA
    ]
    + [
        StructField("status", StringType(), False),  # open | replayed | resolved
        StructField("note", StringType(), True),
        StructField("replay_id", StringType(), True),  # the latest replay of this row
        StructField("replayed_at", TimestampType(), True),
        StructField("replay_selection", StringType(), True),  # the DlqSelection that replayed it (JSON)
        StructField("replay_count", IntegerType(), False),
        StructField("resolved_at", TimestampType(), True),
        StructField("first_seen_at", TimestampType(), False),
        StructField("updated_at", TimestampType(), False),
        StructField("failed_date", StringType(), False),  # partition: YYYY-MM-DD of failed_at
    ]
)


def dlq_table(settings: Settings) -> TableSpec:
    return TableSpec("xact_dlq", settings.table_path("dlq"), DLQ_SCHEMA, ("dlq_id",), ("failed_date",))


def _row_of(dead: DeadLetter) -> tuple:
    task = dead.task or {}
    url = task.get("url")
    last = dead.error_history[-1] if dead.error_history else {}
    source = dead.source
    return (
        dead.dlq_id, dead.stage, dead.category, dead.reason, dead.failed_at, dead.attempts,
        dead.trace_id, dead.task_id, dead.event_id, url, _host(url), last.get("http_status"),
        source.topic if source else None, source.partition if source else None,
        source.offset if source else None, source.timestamp if source else None,
        orjson.dumps(task).decode() if task else None, dead.payload,
        orjson.dumps(dead.error_history).decode() if dead.error_history else None,
    )  # fmt: skip


def _host(url: str | None) -> str | None:
    from urllib.parse import urlsplit

    try:
        return (urlsplit(url).hostname or None) if url else None
    except ValueError:
        return None


def _parse(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    now = iso_utc(datetime.now(timezone.utc))
    for pdf in batches:
        rows = []
        columns = ("value", "topic", "partition", "offset", "timestamp_ms")
        for value, topic, partition, offset, ms in zip(*(pdf[c] for c in columns)):  # noqa: B905
            try:
                rows.append(_row_of(DeadLetter.decode(value if value is not None else b"")))
            except ContractError as exc:
                source = SourceRef(str(topic), int(partition), int(offset), iso_from_millis(ms))
                text = value.decode("utf-8", "replace") if value is not None else ""
                dead = DeadLetter(
                    dlq_id=ids.dlq_id("dlq", source.topic, str(source.partition), str(source.offset)),
                    stage="dlq", category="malformed", reason=f"not a readable dead letter: {exc}",
                    failed_at=now, source=source, payload=text,
                )  # fmt: skip
                rows.append(_row_of(dead))
        yield pd.DataFrame(rows, columns=PARSED_SCHEMA.fieldNames()).astype(
            {"attempts": "Int32", "http_status": "Int32", "source_partition": "Int32", "source_offset": "Int64"}
        )


def dead_letter_rows(raw: DataFrame) -> DataFrame:
    """Kafka rows of the DLQ topic -> xact_dlq rows (status open)."""
    parsed = raw.select(
        "value", "topic", "partition", "offset", F.unix_millis("timestamp").alias("timestamp_ms")
    ).mapInPandas(_parse, PARSED_SCHEMA)
    now = F.current_timestamp()
    failed_at = F.coalesce(F.try_to_timestamp("failed_at"), now)
    return parsed.select(
        *[c for c in PARSED_SCHEMA.fieldNames() if c not in ("failed_at", "source_timestamp")],
        failed_at.alias("failed_at"),
        F.try_to_timestamp("source_timestamp").alias("source_timestamp"),
        F.lit("open").alias("status"),
        F.lit(None).cast("string").alias("note"),
        F.lit(None).cast("string").alias("replay_id"),
        F.lit(None).cast("timestamp").alias("replayed_at"),
        F.lit(None).cast("string").alias("replay_selection"),
        F.lit(0).alias("replay_count"),
        F.lit(None).cast("timestamp").alias("resolved_at"),
        now.alias("first_seen_at"),
        now.alias("updated_at"),
        F.date_format(failed_at, "yyyy-MM-dd").alias("failed_date"),
    ).select(*DLQ_SCHEMA.fieldNames())


class DlqBatchWriter:
    """foreachBatch handler: insert dead letters not yet in xact_dlq (never touches existing rows)."""

    def __init__(self, settings: Settings) -> None:
        self.table = dlq_table(settings)

    def __call__(self, rows: DataFrame, batch_id: int) -> None:
        table = require_table(rows.sparkSession, self.table)
        unique = rows.dropDuplicates(["dlq_id"])  # dead letters are few: a plain dedupe is fine
        (
            table.alias("t")
            .merge(unique.alias("s"), "t.failed_date = s.failed_date AND t.dlq_id = s.dlq_id")
            .whenNotMatchedInsertAll()
            .execute()
        )


def run_dlq_table(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the job that keeps xact_dlq in step with xact.downloads.dlq."""
    create_table(spark, dlq_table(settings))
    install_progress_listener(spark)
    raw = read_topics(spark, settings, [settings.topics.dlq.name])
    rows = dead_letter_rows(raw).observe(JOB_NAME, F.count(F.lit(1)).alias("dead_letters"))
    writer = (
        rows.writeStream.queryName(JOB_NAME)
        .foreachBatch(DlqBatchWriter(settings))
        .option("checkpointLocation", settings.checkpoint(JOB_NAME))
    )
    return start_query(writer, settings, available_now)


# --- analysts: select, summarise, replay, resolve --------------------------------------------


def dlq_rows(spark: SparkSession, settings: Settings) -> DataFrame:
    return require_table(spark, dlq_table(settings)).toDF()


def selection_filter(selection: DlqSelection) -> Column:
    cond = F.col("status").isin(*selection.statuses)
    for column, values in (
        ("task_id", selection.task_ids), ("trace_id", selection.trace_ids), ("category", selection.categories),
        ("host", selection.hosts), ("stage", selection.stages),
    ):  # fmt: skip
        if values:
            cond = cond & F.col(column).isin(*values)
    if selection.since:
        cond = cond & (F.col("failed_at") >= F.to_timestamp(F.lit(selection.since)))
    if selection.until:
        cond = cond & (F.col("failed_at") < F.to_timestamp(F.lit(selection.until)))
    return cond


def select_dead_letters(spark: SparkSession, settings: Settings, selection: DlqSelection) -> DataFrame:
    return dlq_rows(spark, settings).filter(selection_filter(selection))


def dlq_summary(rows: DataFrame) -> DataFrame:
    """Counts per status, stage, category and host: where to look first."""
    return (
        rows.groupBy("status", "stage", "category", "host")
        .agg(F.count("*").alias("rows"), F.max("failed_at").alias("last_failed_at"))
        .orderBy(F.col("rows").desc())
    )


@dataclass
class ReplayReport:
    replay_id: str
    selection: DlqSelection
    dry_run: bool
    replayed: list[dict[str, Any]] = field(default_factory=list)  # dlq_id, task_id, trace_id, attempts, category
    skipped: list[dict[str, Any]] = field(default_factory=list)  # dlq_id, reason

    def describe(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        lines = [
            f"{verb} {len(self.replayed)} dead letter(s), skipped {len(self.skipped)} [{self.selection.describe()}]"
        ]
        lines += [
            f"  {verb}: {r['dlq_id']} task {r['task_id']} ({r['category']}, {r['attempts']} attempts)"
            for r in self.replayed
        ]
        lines += [f"  skipped: {s['dlq_id']}: {s['reason']}" for s in self.skipped]
        if not self.dry_run and self.replayed:
            lines.append(f"  replay id {self.replay_id}")
        return "\n".join(lines)


def live_task(settings: Settings, source: SourceRef, task_id: str) -> DownloadTask | str:
    """The task as it was on its source topic (with its live URL), or why it cannot be had."""
    from confluent_kafka import Consumer, TopicPartition

    from pipeline_lib.kafka_options import librdkafka_config

    consumer = Consumer(
        {
            **librdkafka_config(settings.kafka),
            "group.id": f"xact-replay-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition(source.topic, source.partition, source.offset)])
        msg = consumer.poll(10)
        if msg is None or msg.error() or msg.offset() != source.offset:
            return (
                f"its source record {source.topic}/{source.partition}/{source.offset} is no longer on Kafka "
                "(retention); ask upstream to re-send the event"
            )
        value = msg.value() or b""
        try:
            task = DownloadTask.decode(value)
        except ContractError:
            try:
                task = CachedAttachment.decode(value).download_task
            except ContractError as exc:
                return f"its source record is not a task: {exc}"
    finally:
        consumer.close()
    if task.task_id != task_id:
        return f"the source record holds task {task.task_id}, not {task_id}"
    return task


def replay(
    spark: SparkSession,
    settings: Settings,
    selection: DlqSelection,
    *,
    dry_run: bool = True,
    force: bool = False,
    note: str | None = None,
) -> ReplayReport:
    """Re-publish the selected dead tasks to the pending topic with a fresh attempt budget.

    Args:
        selection: which rows; only `open` ones unless `force` (which adds `replayed`).
        dry_run: list what would be replayed and why others would be skipped; change nothing.
        force: replay rows that were replayed before.
        note: stored on the replayed rows.

    Each replayed task gets attempt 0, an empty history and the report's replay id; its rows become
    `replayed` with the replay id, time and selection. Replaying the same rows again selects
    nothing (they are no longer open) unless forced.
    """
    if force and "replayed" not in selection.statuses:
        selection = replace(selection, statuses=(*selection.statuses, "replayed"))
    report = ReplayReport(f"replay-{uuid.uuid4().hex[:12]}", selection, dry_run)
    rows = select_dead_letters(spark, settings, selection).collect()
    tasks: list[DownloadTask] = []
    for row in rows:
        if not row.task_json or not row.task_id:
            reason = f"a {row.stage} dead letter carries no task; fix the input upstream and re-send it"
            report.skipped.append({"dlq_id": row.dlq_id, "reason": reason})
            continue
        if row.source_topic is None:
            report.skipped.append({"dlq_id": row.dlq_id, "reason": "no source record to recover the live URL from"})
            continue
        source = SourceRef(row.source_topic, int(row.source_partition), int(row.source_offset))
        found = live_task(settings, source, row.task_id)
        if isinstance(found, str):
            report.skipped.append({"dlq_id": row.dlq_id, "reason": found})
            continue
        fresh = replace(
            found, attempt=0, history=[], replay_id=report.replay_id,
            due_at=None, retry_stage=None, return_topic=None, first_attempt_at=None,
        )  # fmt: skip
        tasks.append(fresh)
        report.replayed.append(
            {"dlq_id": row.dlq_id, "task_id": row.task_id, "trace_id": row.trace_id,
             "attempts": row.attempts, "category": row.category}
        )  # fmt: skip
    if dry_run or not tasks:
        return report

    from pipeline_lib.kafka_tools import produce

    produce(settings, settings.topics.pending.name, [(t.trace_id, t.encode(), t.headers()) for t in tasks])
    _mark(
        spark, settings, [r["dlq_id"] for r in report.replayed],
        {
            "status": F.lit("replayed"), "replay_id": F.lit(report.replay_id),
            "replayed_at": F.current_timestamp(), "replay_selection": F.lit(selection.to_json()),
            "replay_count": F.col("replay_count") + 1, "note": F.lit(note) if note else F.col("note"),
        },
    )  # fmt: skip
    log.info("replay %s: %d task(s) re-published to %s", report.replay_id, len(tasks), settings.topics.pending.name)
    return report


def resolve(spark: SparkSession, settings: Settings, selection: DlqSelection, note: str) -> int:
    """Mark the selected rows resolved (no replay), with a note saying why; returns how many."""
    if not note or not note.strip():
        raise ValueError("resolve needs a note saying why the rows are resolved (e.g. 'claim closed upstream')")
    dlq_ids = [r.dlq_id for r in select_dead_letters(spark, settings, selection).select("dlq_id").collect()]
    note_value = F.lit(truncate(redact(note), 2000))
    resolved = {"status": F.lit("resolved"), "resolved_at": F.current_timestamp(), "note": note_value}
    _mark(spark, settings, dlq_ids, resolved)
    return len(dlq_ids)


def _mark(spark: SparkSession, settings: Settings, dlq_ids: list[str], updates: dict[str, Column]) -> None:
    if not dlq_ids:
        return
    table = require_table(spark, dlq_table(settings))
    table.update(F.col("dlq_id").isin(*dlq_ids), {**updates, "updated_at": F.current_timestamp()})
