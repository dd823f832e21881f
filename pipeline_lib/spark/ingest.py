"""Ingest: xact.events.raw -> download tasks on xact.downloads.pending, dead letters on
xact.downloads.dlq, one row per event in xact_events.

    source (Kafka raw events) -> route_events (mapInArrow over events.ingest_record) -> foreachBatch:
        1. tasks and dead letters of events not yet in xact_events -> Kafka (routed by `topic`)
        2. those events -> xact_events (append, exactly once per micro-batch via txnAppId/txnVersion)

Duplicates: xact_events is the dedup state, durable across restarts. An event already in the
table produces no second set of tasks. A crash between step 1 and 2 replays the batch: its tasks
are emitted again, which is harmless because task ids are deterministic and every later stage
is idempotent by task id. Step 2 before step 1 would be wrong: a crash between them would lose
the tasks. A crash after step 2 replays a batch whose append Delta skips (same txnVersion).

Ingest is the only writer of xact_events, so looking up the batch's event ids in the table (a
semi-join of ids only, the batch side broadcast) plus an idempotent append keeps one row per event
at a fraction of the cost of a MERGE (measured in benchmarks/ingest_throughput.py).

The Python side emits typed rows (Kafka headers as an array, the events row as a struct), so no
JSON is parsed again in the JVM; the writer logs each batch's step times (route, dedup, kafka, delta).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DateType, StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DeadLetter
from pipeline_lib.events import IngestOptions, IngestResult, ingest_record
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.logs import get_logger
from pipeline_lib.progress import StepTimer
from pipeline_lib.records import input_records
from pipeline_lib.redaction import redact
from pipeline_lib.spark.kafka_io import (
    KAFKA_HEADERS_TYPE,
    arrow_batch,
    arrow_schema,
    header_entries,
    kafka_records,
    read_topics,
    record_columns,
)
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.spark.tables import (
    EVENTS_SCHEMA,
    append_once,
    checkpoint_query_id,
    create_table,
    drop_duplicate_keys,
    events_table,
    require_table,
)
from pipeline_lib.url_policy import UrlPolicy

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("ingest")
JOB_NAME = "ingest"
# A batch with at most this many events looks them up in xact_events by literal ids (one Spark
# job fewer per batch, which is most of a quiet stream's batches); a bigger one by a broadcast join.
MAX_LITERAL_IDS = 1000

# An xact_events row as ingest's Python side emits it: dates and timestamps as ISO strings
# (typed by a cast in Spark), everything else as in EVENTS_SCHEMA.
EVENT_VALUES_TYPE = StructType(
    [
        StructField(f.name, StringType() if isinstance(f.dataType, (DateType, TimestampType)) else f.dataType)
        for f in EVENTS_SCHEMA
    ]
)

# What ingest's mapInArrow emits: one row per events row, task or dead letter.
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


def event_key(event_id: str, revision: str) -> str:
    return f"e:{event_id}/{revision}"


def task_key(task_id: str) -> str:
    return f"t:{task_id}"


def dead_letter_row(
    dead: DeadLetter, dlq_topic: str, key: str | None, dedup_key: str | None = None, legacy_key: str | None = None
) -> tuple:
    """A dead letter as a ROUTED_SCHEMA row, ready for kafka_records."""
    headers = header_entries(dead.headers())
    return ("dlq", dead.dlq_id, dedup_key, legacy_key, dead.event_id, None, dlq_topic, key, dead.encode(), headers,
            None)  # fmt: skip


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
        rows.append(("event", f"{event_id}/{revision}", ekey, legacy_ekey, event_id, event["event_date"], None, None,
                     None, None, event))  # fmt: skip
    for task in result.tasks:
        legacy = result.legacy_task_ids.get(task.task_id)
        rows.append(
            ("task", task.task_id, task_key(task.task_id), legacy and task_key(legacy), task.event_id, task.event_date,
             pending_topic, task.trace_id, task.encode(), header_entries(task.headers()), None)
        )  # fmt: skip
    for dead in result.dead:
        # A malformed event has no trace id: keep the producer's key (redacted) for the operator. A
        # refused URL's dead letter goes with its event's revision: a redelivery emits it again only if new.
        key = dead.trace_id or (redact(producer_key) if producer_key else None)
        rows.append(dead_letter_row(dead, dlq_topic, key, ekey, legacy_ekey))
    return rows


def _route_partition(policy: UrlPolicy, options: IngestOptions, pending_topic: str, dlq_topic: str):
    """The mapInArrow function: raw Kafka rows in, ROUTED_SCHEMA rows out."""
    out_schema = arrow_schema(ROUTED_SCHEMA)

    def route(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            now = datetime.now(UTC)
            rows: list[tuple] = []
            for record in input_records(batch.to_pydict()):
                result = ingest_record(record.value, record.source, policy, now, options)  # total: never raises
                rows.extend(routed_rows(result, pending_topic, dlq_topic, record.key))
            yield arrow_batch(rows, out_schema)

    return route


def route_events(raw: DataFrame, settings: Settings) -> DataFrame:
    """Kafka rows of xact.events.raw -> ROUTED_SCHEMA rows: one per events row, task or dead letter."""
    fn = _route_partition(
        UrlPolicy.from_settings(settings.url_policy), IngestOptions.from_settings(settings),
        settings.topics.pending.name, settings.topics.dlq.name,
    )  # fmt: skip
    return record_columns(raw).mapInArrow(fn, ROUTED_SCHEMA)


def event_rows(routed: DataFrame) -> DataFrame:
    """The xact_events rows among routed rows, typed by EVENTS_SCHEMA."""
    events = routed.filter(F.col("kind") == "event")
    return events.select(*(F.col("event")[f.name].cast(f.dataType).alias(f.name) for f in EVENTS_SCHEMA))


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
        self.step_seconds: list[dict[str, float]] = []  # per micro-batch, for benchmarks and tuning

    def __call__(self, routed: DataFrame, batch_id: int) -> None:
        spark = routed.sparkSession
        if self.app_id is None:
            self.app_id = f"{JOB_NAME}-{checkpoint_query_id(spark, self.checkpoint)}"
        steps = StepTimer()
        batch = routed.persist()
        try:
            with steps("route"):  # the Python decisions, cached for the writes below
                dates, event_ids, duplicated = self._batch_facts(batch)
            with steps("dedup"):
                unique = drop_duplicate_keys(batch, ["kind", "id"]) if duplicated else batch
                recorded, known, legacy_known = self._recorded_keys(batch, dates, event_ids)
                if known is not None:
                    # What an event already recorded listed was emitted when it was first seen.
                    unique = unique.join(F.broadcast(known), "dedup_key", "left_anti")
                if legacy_known is not None:
                    # Recorded before ids kept queries: known by its legacy revision and task ids.
                    legacy = legacy_known.withColumnRenamed("dedup_key", "legacy_key")
                    unique = unique.join(F.broadcast(legacy), "legacy_key", "left_anti")
            # Kafka first: a crash after it replays the batch, re-emitting harmless duplicates.
            # The reverse order could record an event whose tasks were never emitted.
            with steps("kafka"):
                outgoing = unique.filter(F.col("kind").isin("task", "dlq"))
                kafka_records(outgoing).write.format("kafka").options(**self.kafka_options).save()
            with steps("delta"):
                append_once(event_rows(unique), self.table, self.app_id, batch_id)
        finally:
            batch.unpersist()
        self.step_seconds.append(steps.seconds)
        log.info("batch %d: %s (%d already recorded)", batch_id, steps, recorded)

    @staticmethod
    def _batch_facts(batch: DataFrame) -> tuple[list[str], list[str] | None, bool]:
        """One pass over the batch: its events' dates, their ids when there are at most
        MAX_LITERAL_IDS of them (else None), and whether a row key repeats (rare)."""
        is_event = F.col("kind") == "event"
        ids = F.collect_set(F.when(is_event, F.col("event_id")))
        facts = batch.agg(
            F.collect_set(F.when(is_event, F.col("event_date"))).alias("dates"),
            F.when(F.size(ids) <= MAX_LITERAL_IDS, ids).alias("ids"),
            (F.count(F.lit(1)) > F.count_distinct("kind", "id")).alias("duplicated"),
        ).first()
        assert facts is not None  # a global aggregate always has one row
        few = sorted(facts["ids"]) if facts["ids"] is not None else None
        return sorted(facts["dates"]), few, bool(facts["duplicated"])

    def _recorded_keys(
        self, batch: DataFrame, dates: list[str], event_ids: list[str] | None
    ) -> tuple[int, DataFrame | None, DataFrame | None]:
        """How many of this batch's events xact_events already holds (usually none), their keys,
        and the keys of those recorded under the legacy identity rule (None where there are none).

        Dedup is by what was recorded, not by event id alone: a redelivered event adds nothing,
        while a corrected re-send (same event id, another revision) adds its new row and the tasks
        of URLs no earlier revision listed; tasks already emitted are not emitted again. A row
        without identity_version was recorded when ids dropped the whole query: its keys are
        matched by the rows' legacy keys too (and only its keys, so a URL that differs from a
        recorded one only in its query is a new task once recorded under today's rule). Only ids
        travel: the table's rows of the batch's dates are semi-joined with the batch's broadcast
        event ids (or, for at most MAX_LITERAL_IDS events, with those ids as literals, gathered by
        _batch_facts's pass), so the wide task rows are never shuffled.
        """
        if not dates:
            return 0, None, None
        table = require_table(batch.sparkSession, self.table).toDF()
        recent = table.filter(table["event_date"].isin(dates)).select(
            "event_id", "revision", "task_ids", "identity_version"
        )
        if event_ids is not None:  # a quiet stream: the ids as literals, no job to gather and broadcast them
            seen = recent.filter(F.col("event_id").isin(event_ids)).collect()
        else:
            events = batch.filter(F.col("kind") == "event").select("event_id").distinct()
            seen = recent.join(F.broadcast(events), "event_id", "left_semi").collect()
        if not seen:
            return 0, None, None
        spark = batch.sparkSession

        def keys_of(rows: list) -> DataFrame | None:
            keys = {event_key(r.event_id, r.revision) for r in rows if r.revision is not None}
            keys.update(task_key(tid) for r in rows for tid in (r.task_ids or []))
            return spark.createDataFrame([(k,) for k in sorted(keys)], "dedup_key string") if keys else None

        legacy = [r for r in seen if r.identity_version is None]
        return len({r.event_id for r in seen}), keys_of(seen), keys_of(legacy) if legacy else None


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
    create_table(spark, events_table(settings))
    install_progress_listener(spark, settings)
    raw = read_topics(spark, settings, [settings.topics.events_raw.name])
    routed = route_events(raw, settings).observe(
        JOB_NAME,
        *(
            F.count(F.when(F.col("kind") == kind, 1)).alias(name)
            for kind, name in (("event", "events"), ("task", "tasks"), ("dlq", "dead_letters"))
        ),
    )
    stream = (
        routed.writeStream.queryName(JOB_NAME)
        .foreachBatch(writer or IngestBatchWriter(settings))
        .option("checkpointLocation", settings.checkpoint(JOB_NAME))
    )
    return start_query(stream, settings, JOB_NAME, available_now)

