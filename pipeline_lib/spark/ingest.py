"""Ingest: xact.events.raw -> download tasks on xact.downloads.pending, dead letters on
xact.downloads.dlq, one row per event in xact_events.

    source (Kafka raw events) -> route_events (mapInPandas over events.ingest_record) -> foreachBatch:
        1. tasks and dead letters of events not yet in xact_events -> Kafka (routed by `topic`)
        2. those events -> xact_events (append, exactly once per micro-batch via txnAppId/txnVersion)

Duplicates: xact_events is the dedup state, durable across restarts. An event already in the
table produces no second set of tasks. A crash between step 1 and 2 replays the batch: its tasks
are emitted again, which is harmless because task ids are deterministic and every later stage
is idempotent by task id. Step 2 before step 1 would be wrong: a crash between them would lose
the tasks. A crash after step 2 replays a batch whose append Delta skips (same txnVersion).

Ingest is the only writer of xact_events, so an anti-join plus an idempotent append keeps one row
per event at a fraction of the cost of a MERGE (measured in benchmarks/ingest_throughput.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import orjson
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings
from pipeline_lib.contracts import SourceRef
from pipeline_lib.events import ingest_record
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.delta_tables import (
    TableSpec,
    append_once,
    checkpoint_query_id,
    create_table,
    drop_duplicate_keys,
    existing_keys,
)
from pipeline_lib.spark.kafka_io import dead_letter_row, kafka_records, read_topics
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.spark.schemas import EVENTS_SCHEMA, ROUTED_SCHEMA
from pipeline_lib.times import iso_from_millis
from pipeline_lib.url_policy import UrlPolicy

log = get_logger("ingest")
JOB_NAME = "ingest"


def events_table(settings: Settings) -> TableSpec:
    return TableSpec("xact_events", settings.table_path("events"), EVENTS_SCHEMA, ("event_id",), ("event_date",))


def _route_partition(policy: UrlPolicy, pending_topic: str, dlq_topic: str):
    """The mapInPandas function: raw Kafka rows in, ROUTED_SCHEMA rows out."""

    def route(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for pdf in batches:
            now = datetime.now(timezone.utc)
            rows: list[tuple] = []
            for key, value, topic, partition, offset, timestamp in zip(  # noqa: B905 - equal-length columns
                pdf["key"], pdf["value"], pdf["topic"], pdf["partition"], pdf["offset"], pdf["timestamp_ms"]
            ):
                source = SourceRef(str(topic), int(partition), int(offset), iso_from_millis(timestamp))
                result = ingest_record(value, source, policy, now)
                if result.event is not None:
                    event = result.event
                    rows.append(
                        (
                            "event",
                            event["event_id"],
                            event["event_id"],
                            event["event_date"],
                            None,
                            event["trace_id"],
                            orjson.dumps(event).decode(),
                            None,
                        )
                    )
                for task in result.tasks:
                    rows.append(
                        (
                            "task",
                            task.task_id,
                            task.event_id,
                            task.event_date,
                            pending_topic,
                            task.trace_id,
                            task.encode(),
                            orjson.dumps(task.headers()).decode(),
                        )
                    )
                for dead in result.dead:
                    # A malformed event has no trace id: keep the producer's key for the operator.
                    dlq_key = dead.trace_id or (key.decode("utf-8", "replace") if key is not None else None)
                    rows.append(dead_letter_row(dead, dlq_topic, dlq_key))
            yield pd.DataFrame(rows, columns=ROUTED_SCHEMA.fieldNames())

    return route


def route_events(raw: DataFrame, settings: Settings) -> DataFrame:
    """Kafka rows of xact.events.raw -> ROUTED_SCHEMA rows: one per events row, task or dead letter."""
    fn = _route_partition(
        UrlPolicy.from_settings(settings.url_policy), settings.topics.pending.name, settings.topics.dlq.name
    )
    columns = raw.select(
        "key", "value", "topic", "partition", "offset", F.unix_millis("timestamp").alias("timestamp_ms")
    )
    return columns.mapInPandas(fn, ROUTED_SCHEMA)


def event_rows(routed: DataFrame) -> DataFrame:
    """The xact_events rows among routed rows, typed by EVENTS_SCHEMA."""
    parsed = routed.filter(F.col("kind") == "event").select(F.from_json("value", EVENTS_SCHEMA).alias("e"))
    return parsed.select("e.*")


class IngestBatchWriter:
    """foreachBatch handler: emit the work of new events, then record the events.

    Args:
        settings: the job's settings.
        app_id: the Delta transaction app id; by default the query id from the job's checkpoint.
    """

    def __init__(self, settings: Settings, app_id: str | None = None) -> None:
        self.table = events_table(settings)
        self.kafka_options = kafka_sink_options(settings.kafka)
        self.checkpoint = settings.checkpoint(JOB_NAME)
        self.app_id = app_id

    def __call__(self, routed: DataFrame, batch_id: int) -> None:
        spark = routed.sparkSession
        if self.app_id is None:
            self.app_id = f"{JOB_NAME}-{checkpoint_query_id(spark, self.checkpoint)}"
        batch = routed.persist()
        try:
            dates = [
                r.event_date for r in batch.select("event_date").where("event_date IS NOT NULL").distinct().collect()
            ]
            known = existing_keys(spark, self.table, dates, "event_date") if dates else None
            unique = drop_duplicate_keys(batch, ["kind", "id"])  # an event delivered twice in one batch
            outgoing = unique.filter(F.col("kind").isin("task", "dlq"))
            events = event_rows(unique)
            if known is not None:
                # Work of an event already recorded was emitted when it was first seen.
                known = known.withColumnRenamed("event_id", "known_id")
                outgoing = outgoing.join(known, F.col("event_id") == F.col("known_id"), "left_anti")
                events = events.join(known, F.col("event_id") == F.col("known_id"), "left_anti")
            # Kafka first: a crash after it replays the batch, re-emitting harmless duplicates.
            # The reverse order could record an event whose tasks were never emitted.
            kafka_records(outgoing).write.format("kafka").options(**self.kafka_options).save()
            append_once(events, self.table, self.app_id, batch_id)
        finally:
            batch.unpersist()


def run_ingest(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the ingest query; with `available_now`, it processes what is there and stops."""
    create_table(spark, events_table(settings))
    install_progress_listener(spark)
    raw = read_topics(spark, settings, [settings.topics.events_raw.name])
    routed = route_events(raw, settings).observe(
        JOB_NAME,
        *(
            F.count(F.when(F.col("kind") == kind, 1)).alias(name)
            for kind, name in (("event", "events"), ("task", "tasks"), ("dlq", "dead_letters"))
        ),
    )
    writer = (
        routed.writeStream.queryName(JOB_NAME)
        .foreachBatch(IngestBatchWriter(settings))
        .option("checkpointLocation", settings.checkpoint(JOB_NAME))
    )
    return start_query(writer, settings, available_now)
