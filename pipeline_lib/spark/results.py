"""Results: xact.downloads.results -> xact_attachments, exactly one row per task.

    source (Kafka results) -> parse_results (mapInArrow over table_rows.result_row) -> foreachBatch:
        1. unreadable results -> xact.downloads.dlq (stage `results`, with provenance)
        2. the winning outcome per task in the batch -> MERGE into xact_attachments

Which outcome wins, per task: `completed` is final (the file is in the lake: no later duplicate,
retry or replay outcome moves the task back); otherwise the latest replay generation, then `dead`
(it ends a generation), then the latest attempt, then the later stage of the same attempt
(table_rows.STAGE_ORDER: the upload's outcome over the download's `downloaded`), and only then
the latest occurred_at. The stages run
on different hosts, so their clocks never decide between them (invariant 9). A replayed task
that completes therefore replaces its `dead` row, and a late message of an older attempt never
overwrites a newer outcome (it can only move `first_seen_at` earlier). The MERGE is idempotent
by construction (re-applying a batch changes nothing) and also carries the micro-batch as
Delta's txnAppId/txnVersion, so a batch replayed after a crash between the Delta commit and the
checkpoint commit is skipped.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DateType, StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DeadLetter
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.logs import get_logger
from pipeline_lib.records import input_records
from pipeline_lib.routing import OutMessage
from pipeline_lib.spark.kafka_io import (
    KAFKA_HEADERS_TYPE,
    arrow_batch,
    arrow_schema,
    kafka_records,
    kafka_row,
    read_topics,
    record_columns,
)
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.spark.tables import (
    ATTACHMENTS_SCHEMA,
    TableSpec,
    attachments_table,
    checkpoint_query_id,
    create_table,
    require_table,
)
from pipeline_lib.table_rows import RESULT_COLUMNS, STAGE_ORDER, result_row

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("results")
JOB_NAME = "results"
OUTCOME_COLUMNS = [f.name for f in ATTACHMENTS_SCHEMA if f.name not in ("task_id", "first_seen_at", "event_date")]

# What parse_results emits: a result row (kind `result`, the RESULT_COLUMNS with timestamps and
# the date still ISO strings) or a dead letter for the DLQ topic (kind `dlq`: topic, key, value, headers).
_TYPES = {f.name: f.dataType for f in ATTACHMENTS_SCHEMA}
PARSED_SCHEMA = StructType(
    [StructField("kind", StringType(), False)]
    + [  # every xact_attachments column but recorded_at, which the MERGE stamps
        StructField(name, StringType() if isinstance(_TYPES[name], (TimestampType, DateType)) else _TYPES[name])
        for name in RESULT_COLUMNS
    ]
    + [
        StructField("topic", StringType()),
        StructField("key", StringType()),
        StructField("value", StringType()),
        StructField("headers", KAFKA_HEADERS_TYPE),
    ]
)


def _parse(dlq_topic: str):
    out_schema = arrow_schema(PARSED_SCHEMA)
    no_result = (None,) * len(RESULT_COLUMNS)

    def parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            now = datetime.now(UTC)
            rows = []
            for record in input_records(batch.to_pydict()):
                row = result_row(record, now)
                if isinstance(row, DeadLetter):
                    dead = OutMessage(row.category, dlq_topic, record.key, row)
                    rows.append(("dlq", *no_result, *kafka_row(dead)))
                else:
                    rows.append(("result", *row, None, None, None, None))
            yield arrow_batch(rows, out_schema)

    return parse


def parse_results(raw: DataFrame, dlq_topic: str) -> DataFrame:
    """Kafka rows -> PARSED_SCHEMA rows: typed results, or dead letters of unreadable records."""
    return record_columns(raw).mapInArrow(_parse(dlq_topic), PARSED_SCHEMA)


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
    """When an incoming outcome (s) replaces the stored one (t): latest_per_task's order."""
    return (F.col("t.status") != "completed") & (
        (F.col("s.status") == "completed") | _later(_rank_keys("s."), _rank_keys("t."))
    )


def merge_results(
    latest: DataFrame,
    spec: TableSpec,
    app_id: str | None = None,
    batch_id: int | None = None,
    *,
    dates: Sequence[date] | None = None,
) -> None:
    """MERGE the winning outcomes: a newer one replaces, an older one only moves first_seen_at
    earlier, a completed row never changes; new tasks insert. Only the batch's event dates
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
    if app_id is None or batch_id is None:
        merge.execute()
        return
    # MERGE has no writer options: Delta reads the transaction identity from these session confs.
    conf = spark.conf
    conf.set("spark.databricks.delta.write.txnAppId", app_id)
    conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
    try:
        merge.execute()
    finally:
        conf.unset("spark.databricks.delta.write.txnAppId")
        conf.unset("spark.databricks.delta.write.txnVersion")


class ResultsBatchWriter:
    """foreachBatch handler: dead-letter unreadable results, MERGE the rest exactly once per batch."""

    def __init__(self, settings: Settings, app_id: str | None = None) -> None:
        self.table = attachments_table(settings)
        self.kafka_options = kafka_sink_options(settings.kafka)
        self.checkpoint = settings.checkpoint(JOB_NAME)
        self.app_id = app_id

    def __call__(self, parsed: DataFrame, batch_id: int) -> None:
        if self.app_id is None:
            self.app_id = f"{JOB_NAME}-{checkpoint_query_id(parsed.sparkSession, self.checkpoint)}"
        batch = parsed.persist()
        try:
            dead, dates = batch_facts(batch)
            if dead:
                bad = batch.filter(F.col("kind") == "dlq")
                kafka_records(bad).write.format("kafka").options(**self.kafka_options).save()
            merge_results(latest_per_task(result_rows(batch)), self.table, self.app_id, batch_id, dates=dates)
        finally:
            batch.unpersist()


def run_results(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the results query; with `available_now`, it processes what is there and stops."""
    create_table(spark, attachments_table(settings))
    install_progress_listener(spark, settings)
    raw = read_topics(spark, settings, [settings.topics.results.name])
    parsed = parse_results(raw, settings.topics.dlq.name).observe(
        JOB_NAME,
        F.count(F.when(F.col("kind") == "result", 1)).alias("results"),
        F.count(F.when(F.col("kind") == "dlq", 1)).alias("dead_letters"),
    )
    writer = parsed.writeStream.queryName(JOB_NAME).foreachBatch(ResultsBatchWriter(settings))
    writer = writer.option("checkpointLocation", settings.checkpoint(JOB_NAME))
    return start_query(writer, settings, JOB_NAME, available_now)

