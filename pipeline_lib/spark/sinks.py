"""Where the stages' rows go: the one module of sink logic (Kafka rows, Delta writes).

A stage declares its sink (spark/stage_query.py); this module holds what every sink does:

| sink                           | stage            | per micro-batch                                               |
| ------------------------------ | ---------------- | ------------------------------------------------------------- |
| KafkaSink                      | download, upload | each row to the topic in its `topic` column                   |
|                                | retry-scheduler  |                                                               |
| BatchSink(IngestBatchWriter)   | ingest           | new events' tasks and dead letters -> Kafka, then the events  |
|                                |                  | -> xact_events (append once)                                  |
| BatchSink(ResultsBatchWriter)  | results          | unreadable results -> the DLQ topic, then the winning outcome |
|                                |                  | per task -> MERGE into xact_attachments                       |
| BatchSink(DlqBatchWriter)      | dlq-table        | dead letters not yet in xact_dlq -> insert-only MERGE         |

Every Delta write of a micro-batch happens exactly once: ingest's append carries the batch as
Delta's txnAppId/txnVersion (append_once), the results MERGE carries it through the session confs
(merge_once), and both are idempotent by content as well; the DLQ MERGE inserts only, so it is
idempotent by content alone. Kafka rows go first where a sink has both: a crash after
them replays the batch, re-emitting harmless duplicates (every later stage is idempotent by task
id); the reverse order could record an event whose tasks were never emitted.

Ingest's dedup. xact_events is the dedup state, durable across restarts: an event already in the
table produces no second set of tasks. Ingest is its only writer, so looking up the batch's event
ids in the table (a semi-join of ids only, the batch side broadcast) plus an idempotent append
keeps one row per event at a fraction of the cost of a MERGE (benchmarks/ingest_throughput.py).
A batch none of whose event ids the table can hold skips that lookup: the job keeps one Bloom
filter of the table's event ids per event date, built from the table and fed before each append
(pipeline_lib/recorded_ids.py), so a false positive costs the lookup and a false negative cannot
happen.

Results' fold. Which outcome wins, per task: `completed` is final (the file is in the lake: no
later duplicate, retry or replay outcome moves the task back); otherwise the latest replay
generation, then `dead` (it ends a generation), then the latest attempt, then the later stage of
the same attempt (table_rows.STAGE_ORDER: the upload's outcome over the download's `downloaded`),
and only then the latest occurred_at. The stages run on different hosts, so their clocks never
decide between them (invariant 9). A replayed task that completes therefore replaces its `dead`
row, and a late message of an older attempt never overwrites a newer outcome (it can only move
`first_seen_at` earlier).

The DLQ table. One row per dead letter: the MERGE inserts only, on dlq_id, looking DEDUP_WINDOW_DAYS
back, so a redelivery, a replayed batch or a re-emission with another failed_at adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Protocol

from delta.tables import DeltaMergeBuilder
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import DataStreamWriter
from pyspark.sql.types import DateType, TimestampType

from pipeline_lib.config import Settings, Stage
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.logs import get_logger
from pipeline_lib.progress import StepTimer
from pipeline_lib.recorded_ids import RecordedEventIds
from pipeline_lib.spark.kafka_io import headers_from_json, kafka_records
from pipeline_lib.spark.tables import (
    ATTACHMENTS_SCHEMA,
    EVENTS_SCHEMA,
    TableSpec,
    attachments_table,
    dlq_table,
    events_table,
    require_table,
    retry_on_conflict,
)
from pipeline_lib.table_rows import STAGE_ORDER

log = get_logger("sinks")
INGEST_LOG = get_logger("ingest")  # the ingest batch line keeps its logger name (xact.ingest)


class Sink(Protocol):
    """What a stage's rows become: the streaming writer of the stage's query (before its
    checkpoint, trigger and name, which stage_query.start_stage sets)."""

    def writer(self, rows: DataFrame, settings: Settings) -> DataStreamWriter: ...


@dataclass(frozen=True)
class KafkaSink:
    """Each row to the topic in its `topic` column, with its key, value and headers.

    `headers_json`: the rows carry their headers as a JSON object in this column (the retry
    scheduler's state does), turned into Kafka headers here.
    """

    headers_json: str | None = None

    def writer(self, rows: DataFrame, settings: Settings) -> DataStreamWriter:
        if self.headers_json is not None:
            rows = rows.withColumn("headers", headers_from_json(self.headers_json))
        return (
            kafka_records(rows)
            .writeStream.format("kafka")
            .outputMode("append")
            .options(**kafka_sink_options(settings.kafka))
        )


BatchWriter = Callable[[DataFrame, int], None]


@dataclass(frozen=True)
class BatchSink:
    """A foreachBatch writer, built from the settings on the driver (Delta writes, Kafka rows first
    where a stage has both)."""

    writer_for: Callable[[Settings], BatchWriter]

    def writer(self, rows: DataFrame, settings: Settings) -> DataStreamWriter:
        return rows.writeStream.foreachBatch(self.writer_for(settings))


def write_kafka_rows(rows: DataFrame, kafka_options: dict[str, str]) -> None:
    """Rows with topic, key, value and headers to Kafka, inside a foreachBatch (a batch write)."""
    kafka_records(rows).write.format("kafka").options(**kafka_options).save()


# --- exactly-once Delta writes of a micro-batch ------------------------------------------------


def drop_duplicate_keys(df: DataFrame, keys: list[str]) -> DataFrame:
    """One row per key, at the cost of a hash count of the keys when there are no duplicates.

    `dropDuplicates` shuffles and sorts whole rows (wide JSON payloads here); duplicates within a
    micro-batch are rare, so find the duplicated keys first and dedupe only their rows.
    """
    dup_keys = df.groupBy(*keys).count().filter(F.col("count") > 1).select(*keys)
    if dup_keys.isEmpty():
        return df
    first = Window.partitionBy(*keys).orderBy(*keys)
    dup_rows = (
        df.join(dup_keys, keys, "left_semi")
        .withColumn("_n", F.row_number().over(first))
        .filter(F.col("_n") == 1)
        .drop("_n")
    )
    return df.join(dup_keys, keys, "left_anti").unionByName(dup_rows)


def append_once(df: DataFrame, spec: TableSpec, app_id: str, batch_id: int) -> None:
    """Append a micro-batch exactly once: Delta skips a (txnAppId, txnVersion) it has already committed.

    `app_id` must be unique per streaming checkpoint: a new checkpoint restarts batch ids at 0.
    """
    require_table(df.sparkSession, spec)
    (df.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", batch_id).save(spec.path))


def merge_once(merge: DeltaMergeBuilder, spark: SparkSession, app_id: str | None, batch_id: int | None) -> None:
    """Execute a MERGE as micro-batch `batch_id` of `app_id`: Delta skips it if already committed.

    MERGE has no writer options: Delta reads the transaction identity from these session confs.
    Without an app id (a one-off write) the MERGE simply runs.
    """
    if app_id is None or batch_id is None:
        merge.execute()
        return
    conf = spark.conf
    conf.set("spark.databricks.delta.write.txnAppId", app_id)
    conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
    try:
        merge.execute()
    finally:
        conf.unset("spark.databricks.delta.write.txnAppId")
        conf.unset("spark.databricks.delta.write.txnVersion")


def checkpoint_query_id(spark: SparkSession, checkpoint: str) -> str:
    """The streaming query id recorded in a checkpoint: stable across restarts, new with a new checkpoint."""
    metadata = spark.read.json(f"{checkpoint.rstrip('/')}/metadata").first()
    if metadata is None or not metadata["id"]:
        raise PipelineError(
            f"checkpoint {checkpoint} has no query id in its metadata file; is it a streaming checkpoint? "
            "Point storage.checkpoint_root at the job's own checkpoints, or remove the folder to start afresh"
        )
    return str(metadata["id"])


# --- xact_events: ingest -----------------------------------------------------------------------

# A batch with at most this many events looks them up in xact_events by literal ids (one Spark
# job fewer per batch, which is most of a quiet stream's batches); a bigger one by a broadcast join.
MAX_LITERAL_IDS = 1000


def event_key(event_id: str, revision: str) -> str:
    return f"e:{event_id}/{revision}"


def task_key(task_id: str) -> str:
    return f"t:{task_id}"


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
        self.checkpoint = settings.checkpoint(Stage.INGEST)
        self.app_id = app_id
        self.step_seconds: list[dict[str, float]] = []  # per micro-batch, for benchmarks and tuning
        self._spark: SparkSession | None = None
        # Which event ids the table may hold, per event date: a batch of new events only skips the
        # lookup (pipeline_lib/recorded_ids.py). Built from the table when first needed, so it is
        # as durable as the table across restarts.
        self.recorded = RecordedEventIds(self._recorded_ids_of)
        self.lookups = 0  # batches that looked their events up in the table (logs, tests)

    def _recorded_ids_of(self, day: str) -> tuple[int, Iterable[str]]:
        """How many event ids the table holds for `day`, and those ids, streamed to the driver a
        partition at a time (the filter is sized from the count before it is filled)."""
        assert self._spark is not None  # set by __call__ before any lookup
        table = require_table(self._spark, self.table).toDF()
        recorded = table.filter((table["event_date"] == F.lit(day).cast("date")) & table["event_id"].isNotNull())
        recorded = recorded.select("event_id").distinct()
        return recorded.count(), (r.event_id for r in recorded.toLocalIterator())

    def __call__(self, routed: DataFrame, batch_id: int) -> None:
        spark = self._spark = routed.sparkSession
        if self.app_id is None:
            self.app_id = f"{Stage.INGEST.value}-{checkpoint_query_id(spark, self.checkpoint)}"
        steps = StepTimer()
        batch = routed.persist()
        try:
            with steps("route"):  # the Python decisions, cached for the writes below
                dates, events, duplicated = self._batch_facts(batch)
            with steps("dedup"):
                unique = drop_duplicate_keys(batch, ["kind", "id"]) if duplicated else batch
                if events is None:  # a big batch: looked up by a join; its dates' filters rebuilt later
                    self.recorded.forget(dates)
                    to_look_up: list[str] | None = None
                else:
                    to_look_up = self.recorded.maybe_recorded(events)
                skipped = to_look_up == []
                if skipped:
                    recorded, known, legacy_known = 0, None, None  # no id of the batch can be recorded
                else:
                    self.lookups += 1
                    recorded, known, legacy_known = self._recorded_keys(batch, dates, to_look_up)
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
                write_kafka_rows(outgoing, self.kafka_options)
            with steps("delta"):
                if events is not None:
                    self.recorded.add(events)  # before the append: the filters never miss an id it wrote
                append_once(event_rows(unique), self.table, self.app_id, batch_id)
        finally:
            batch.unpersist()
        self.step_seconds.append(steps.seconds)
        looked = "no lookup: none of its ids can be recorded" if skipped else f"{recorded} already recorded"
        INGEST_LOG.info("batch %d: %s (%s)", batch_id, steps, looked)

    @staticmethod
    def _batch_facts(batch: DataFrame) -> tuple[list[str], list[tuple[str | None, str | None]] | None, bool]:
        """One pass over the batch: its events' dates, their (event id, event date) pairs when
        there are at most MAX_LITERAL_IDS of them (else None), and whether a row key repeats (rare)."""
        is_event = F.col("kind") == "event"
        pairs = F.collect_set(F.when(is_event, F.struct("event_id", "event_date")))
        facts = batch.agg(
            F.collect_set(F.when(is_event, F.col("event_date"))).alias("dates"),
            F.when(F.size(pairs) <= MAX_LITERAL_IDS, pairs).alias("events"),
            (F.count(F.lit(1)) > F.count_distinct("kind", "id")).alias("duplicated"),
        ).first()
        assert facts is not None  # a global aggregate always has one row
        few = None
        if facts["events"] is not None:
            few = sorted(
                ((p["event_id"], p["event_date"]) for p in facts["events"]), key=lambda p: (p[0] or "", p[1] or "")
            )
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


# --- xact_attachments: results -----------------------------------------------------------------

OUTCOME_COLUMNS = [f.name for f in ATTACHMENTS_SCHEMA if f.name not in ("task_id", "first_seen_at", "event_date")]


def _date_of(iso: Column) -> Column:
    return F.to_date(F.try_to_timestamp(iso))


def batch_facts(parsed: DataFrame) -> tuple[int, list[date]]:
    """One pass over a parsed batch: how many dead letters it holds, and its results' event dates.

    One Spark job instead of two (a check for dead letters, then the dates after the window); the
    dates of all result rows are a superset of the winners' dates, which only names a partition
    the MERGE may not touch, never leaves one out."""
    facts = parsed.agg(
        F.count(F.when(F.col("kind") == "dlq", 1)).alias("dead"),
        F.collect_set(F.when(F.col("kind") == "result", _date_of(F.col("event_date")))).alias("dates"),
    ).first()
    assert facts is not None  # a global aggregate always has one row
    return int(facts["dead"]), sorted(facts["dates"])


def result_rows(parsed: DataFrame) -> DataFrame:
    """The result rows among parsed rows, typed as xact_attachments."""
    good = parsed.filter(F.col("kind") == "result")
    columns = []
    for f in ATTACHMENTS_SCHEMA:
        if f.name == "recorded_at":
            columns.append(F.current_timestamp().alias(f.name))  # when this row becomes visible
        elif isinstance(f.dataType, TimestampType):
            columns.append(F.try_to_timestamp(F.col(f.name)).alias(f.name))  # ISO strings, valid by contract
        elif isinstance(f.dataType, DateType):
            columns.append(_date_of(F.col(f.name)).alias(f.name))
        else:
            columns.append(F.col(f.name))
    return good.select(*columns)


def _stage_rank(prefix: str = "") -> Column:
    """The stage's place in a task's flow (STAGE_ORDER), 0 for any other stage name."""
    stage = F.col(f"{prefix}stage")
    rank = F.lit(0)
    for place, name in enumerate(STAGE_ORDER, start=1):
        rank = F.when(stage == name, place).otherwise(rank)
    return rank


def _status_rank(prefix: str = "") -> Column:
    """The last tie-break between outcomes equal in everything else: downloaded over retrying."""
    status = F.col(f"{prefix}status")
    return F.when(status == "downloaded", 2).when(status == "retrying", 1).otherwise(0)


def _rank_keys(prefix: str = "") -> list[Column]:
    """What orders two outcomes of one task that are not `completed`, most significant first.

    `dead` ends a generation (only a replay, a new generation, brings the task back), so within
    one it outranks every other outcome: a dead letter emitted by the upload's own re-download
    (stage download, the attempt of the download host's `downloaded`) wins whatever the clocks.
    """
    return [
        F.coalesce(F.col(f"{prefix}replay_generation"), F.lit(0)),
        (F.col(f"{prefix}status") == "dead").cast("int"),
        F.col(f"{prefix}attempt"),
        _stage_rank(prefix),
        F.col(f"{prefix}updated_at"),  # the last tie-breaks only: one stage's own clock, then the status
        _status_rank(prefix),
    ]


def latest_per_task(results: DataFrame) -> DataFrame:
    """One row per task: `completed` first, then the latest generation, `dead`, the latest attempt,
    stage and time; the earliest first_seen_at."""
    order = Window.partitionBy("task_id").orderBy(
        (F.col("status") == "completed").desc(), *(key.desc() for key in _rank_keys())
    )
    everything = Window.partitionBy("task_id")
    return (
        results.withColumn("_first", F.min("first_seen_at").over(everything))
        .withColumn("_n", F.row_number().over(order))
        .filter(F.col("_n") == 1)
        .withColumn("first_seen_at", F.col("_first"))
        .select(*ATTACHMENTS_SCHEMA.fieldNames())
    )


def _later(source: list[Column], target: list[Column]) -> Column:
    """source > target, lexicographically."""
    (s, *s_rest), (t, *t_rest) = source, target
    return s > t if not s_rest else (s > t) | ((s == t) & _later(s_rest, t_rest))


def _newer() -> Column:
    """When an incoming outcome (s) replaces the stored one (t): exactly latest_per_task's order
    (`completed` first, then the rank keys), so the row a task ends with is the same whichever
    micro-batches its outcomes arrive in. No other outcome replaces a completed row; of two
    completions (an at-least-once redelivery after a retry), the later in lineage is kept."""

    def completed(prefix: str) -> Column:
        return (F.col(f"{prefix}status") == "completed").cast("int")

    return _later([completed("s."), *_rank_keys("s.")], [completed("t."), *_rank_keys("t.")])


def merge_results(
    latest: DataFrame,
    spec: TableSpec,
    app_id: str | None = None,
    batch_id: int | None = None,
    *,
    dates: Sequence[date] | None = None,
) -> None:
    """MERGE the winning outcomes: a newer one replaces, an older one only moves first_seen_at
    earlier, only a later completion replaces a completed row; new tasks insert. Only the batch's event dates
    (partitions) of the table are read: `dates` when given (at least every date of `latest`, as
    batch_facts gathers them), else those of `latest`, gathered here."""
    spark = latest.sparkSession
    table = require_table(spark, spec)
    # The batch's dates as literals: Delta prunes the target to those partitions only when the
    # condition names them (a join key alone scans every file of the table, a cost that grows
    # with the table's age: measured in benchmarks/pipeline_runs.py). A row matches only within
    # its own date, so the literals change no match.
    if dates is None:
        dates = sorted({r.event_date for r in latest.select("event_date").distinct().collect()} - {None})
    if not dates:
        return  # nothing to write (a batch of unreadable results only)
    within = ", ".join(f"DATE'{d.isoformat()}'" for d in dates)
    updates: dict[str, str | Column] = {c: f"s.`{c}`" for c in OUTCOME_COLUMNS}
    updates["first_seen_at"] = "least(t.first_seen_at, s.first_seen_at)"
    merge = (
        table.alias("t")
        .merge(
            latest.alias("s"), f"t.event_date IN ({within}) AND t.event_date = s.event_date AND t.task_id = s.task_id"
        )
        .whenMatchedUpdate(condition=_newer(), set=updates)
        .whenMatchedUpdate(condition="s.first_seen_at < t.first_seen_at", set={"first_seen_at": "s.first_seen_at"})
        .whenNotMatchedInsertAll()
    )
    merge_once(merge, spark, app_id, batch_id)


class ResultsBatchWriter:
    """foreachBatch handler: dead-letter unreadable results, MERGE the rest exactly once per batch."""

    def __init__(self, settings: Settings, app_id: str | None = None) -> None:
        self.table = attachments_table(settings)
        self.kafka_options = kafka_sink_options(settings.kafka)
        self.checkpoint = settings.checkpoint(Stage.RESULTS)
        self.app_id = app_id

    def __call__(self, parsed: DataFrame, batch_id: int) -> None:
        if self.app_id is None:
            self.app_id = f"{Stage.RESULTS.value}-{checkpoint_query_id(parsed.sparkSession, self.checkpoint)}"
        batch = parsed.persist()
        try:
            dead, dates = batch_facts(batch)
            if dead:
                bad = batch.filter(F.col("kind") == "dlq")
                write_kafka_rows(bad, self.kafka_options)
            merge_results(latest_per_task(result_rows(batch)), self.table, self.app_id, batch_id, dates=dates)
        finally:
            batch.unpersist()


# --- xact_dlq: the dlq-table job ---------------------------------------------------------------

# A stage that re-emits a dead letter (a batch replayed after a crash) may stamp it with another
# failed_at, even another day: the insert-only MERGE looks for its dlq_id this many days back.
DEDUP_WINDOW_DAYS = 7


class DlqBatchWriter:
    """foreachBatch handler: insert dead letters not yet in xact_dlq (never touches existing rows).

    A dead letter's row is found by its dlq_id in the partitions of the last DEDUP_WINDOW_DAYS
    before the batch's earliest failed_date (and after), whatever day it is processed or
    re-processed on: a redelivery, a replayed batch or a re-emission with another failed_at adds
    nothing, and the MERGE still reads only those partitions.
    """

    def __init__(self, settings: Settings) -> None:
        self.table = dlq_table(settings)

    def __call__(self, rows: DataFrame, batch_id: int) -> None:
        table = require_table(rows.sparkSession, self.table)
        unique = rows.dropDuplicates(["dlq_id"]).persist()  # dead letters are few: a plain dedupe is fine
        try:
            first = unique.agg(F.min("failed_date")).first()
            if first is None or first[0] is None:
                return
            since = (date.fromisoformat(first[0]) - timedelta(days=DEDUP_WINDOW_DAYS)).isoformat()
            # Insert-only, so trying again after a conflict (a replay marking rows) inserts nothing twice.
            retry_on_conflict(
                lambda: (
                    table.alias("t")
                    .merge(unique.alias("s"), f"t.failed_date >= '{since}' AND t.dlq_id = s.dlq_id")
                    .whenNotMatchedInsertAll()
                    .execute()
                ),
                "xact_dlq insert",
            )
        finally:
            unique.unpersist()
