"""Ingest: xact.events.raw -> download tasks on xact.downloads.pending, dead letters on
xact.downloads.dlq, one row per event in xact_events.

    source (Kafka raw events) -> the per-record function (events.ingest_record, one ROUTED_SCHEMA
    row per events row, task or dead letter) -> sinks.IngestBatchWriter: the tasks and dead letters
    of events not yet in xact_events -> Kafka, then those events -> xact_events (append once)

The sink (spark/sinks.py) says how duplicates are kept out; this module declares the stage. The
Python side emits typed rows (Kafka headers as an array, the events row as a struct), so no JSON
is parsed again in the JVM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DateType, StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings, Stage
from pipeline_lib.contracts import DeadLetter
from pipeline_lib.dead_letters import internal_dead_letter
from pipeline_lib.events import IngestOptions, IngestResult, ingest_record
from pipeline_lib.records import InputRecord
from pipeline_lib.redaction import redact
from pipeline_lib.spark.kafka_io import KAFKA_HEADERS_TYPE, header_entries
from pipeline_lib.spark.sinks import BatchSink, IngestBatchWriter, event_key, task_key
from pipeline_lib.spark.stage_query import RecordFunction, StageQuery, per_record, stage_rows, start_stage
from pipeline_lib.spark.tables import EVENTS_SCHEMA, events_table
from pipeline_lib.url_policy import UrlPolicy

# An xact_events row as ingest's Python side emits it: dates and timestamps as ISO strings
# (typed by a cast in Spark), everything else as in EVENTS_SCHEMA.
EVENT_VALUES_TYPE = StructType(
    [
        StructField(f.name, StringType() if isinstance(f.dataType, (DateType, TimestampType)) else f.dataType)
        for f in EVENTS_SCHEMA
    ]
)

# What ingest's per-record function emits: one row per events row, task or dead letter.
ROUTED_SCHEMA = StructType(
    [
        StructField("kind", StringType(), False),  # event | task | dlq
        StructField("id", StringType(), False),  # event_id/revision, task_id or dlq_id
        StructField("dedup_key", StringType(), True),  # what xact_events records of it (see IngestBatchWriter)
        StructField("legacy_key", StringType(), True),  # what it was recorded as before ids kept queries
        StructField("event_id", StringType(), True),
        StructField("event_date", StringType(), True),
        StructField("topic", StringType(), True),  # Kafka rows (task, dlq): their topic, key, value, headers
        StructField("key", StringType(), True),
        StructField("value", StringType(), True),
        StructField("headers", KAFKA_HEADERS_TYPE, True),
        StructField("event", EVENT_VALUES_TYPE, True),  # event rows only
    ]
)


def dead_letter_row(
    dead: DeadLetter, dlq_topic: str, key: str | None, dedup_key: str | None = None, legacy_key: str | None = None
) -> tuple:
    """A dead letter as a ROUTED_SCHEMA row, ready for kafka_records."""
    headers = header_entries(dead.headers())
    return (
        "dlq",
        dead.dlq_id,
        dedup_key,
        legacy_key,
        dead.event_id,
        None,
        dlq_topic,
        key,
        dead.encode(),
        headers,
        None,
    )


def routed_rows(result: IngestResult, pending_topic: str, dlq_topic: str, producer_key: str | None) -> list[tuple]:
    """One ingest decision as ROUTED_SCHEMA rows: the events row, its tasks, its dead letters.

    Each row's dedup_key is what xact_events records of it; legacy_key, where it differs, what an
    event recorded before attachment identities kept their query recorded (ids.legacy_task_id):
    a redelivery of such an event finds its tasks and revision known under either key.
    """
    rows: list[tuple] = []
    ekey = legacy_ekey = None
    if result.event is not None:
        event = result.event
        event_id, revision = event["event_id"], event["revision"]
        ekey = event_key(event_id, revision)
        legacy_ekey = event_key(event_id, result.legacy_revision) if result.legacy_revision else None
        rows.append(
            (
                "event",
                f"{event_id}/{revision}",
                ekey,
                legacy_ekey,
                event_id,
                event["event_date"],
                None,
                None,
                None,
                None,
                event,
            )
        )
    for task in result.tasks:
        legacy = result.legacy_task_ids.get(task.task_id)
        rows.append(
            (
                "task",
                task.task_id,
                task_key(task.task_id),
                legacy and task_key(legacy),
                task.event_id,
                task.event_date,
                pending_topic,
                task.trace_id,
                task.encode(),
                header_entries(task.headers()),
                None,
            )
        )
    for dead in result.dead:
        # A malformed event has no trace id: keep the producer's key (redacted) for the operator. A
        # refused URL's dead letter goes with its event's revision: a redelivery emits it again only if new.
        key = dead.trace_id or (redact(producer_key) if producer_key else None)
        rows.append(dead_letter_row(dead, dlq_topic, key, ekey, legacy_ekey))
    return rows


def ingest_records(settings: Settings) -> RecordFunction:
    """The per-record function: a raw event in, its ROUTED_SCHEMA rows out."""
    policy, options = UrlPolicy.from_settings(settings.url_policy), IngestOptions.from_settings(settings)
    pending_topic, dlq_topic = settings.topics.pending.name, settings.topics.dlq.name

    def rows_of(record: InputRecord, now: datetime) -> Iterable[tuple]:
        result = ingest_record(record.value, record.source, policy, now, options)
        return routed_rows(result, pending_topic, dlq_topic, record.key)

    def failed(record: InputRecord, exc: BaseException, now: datetime) -> Iterable[tuple]:
        dead = internal_dead_letter(Stage.INGEST.value, exc, record, now)
        return [dead_letter_row(dead, dlq_topic, redact(record.key) if record.key else None)]

    return per_record(rows_of, failed)


INGEST = StageQuery(
    name=Stage.INGEST.value,
    records=ingest_records,
    schema=ROUTED_SCHEMA,
    sink=BatchSink(IngestBatchWriter),
    metrics=lambda settings: [
        F.count(F.when(F.col("kind") == kind, 1)).alias(name)
        for kind, name in (("event", "events"), ("task", "tasks"), ("dlq", "dead_letters"))
    ],
    table=events_table,
)


def route_events(raw: DataFrame, settings: Settings) -> DataFrame:
    """Kafka rows of xact.events.raw -> ROUTED_SCHEMA rows: one per events row, task or dead letter."""
    return stage_rows(raw, settings, INGEST)


def run_ingest(
    spark: SparkSession,
    settings: Settings,
    *,
    available_now: bool = False,
    writer: IngestBatchWriter | None = None,
) -> StreamingQuery:
    """Start the ingest query; with `available_now`, it processes what is there and stops.

    `writer` lets a caller keep the batch writer (e.g. to read its `step_seconds`).
    """
    stage = INGEST if writer is None else replace(INGEST, sink=BatchSink(lambda settings: writer))
    return start_stage(spark, settings, stage, available_now=available_now)
