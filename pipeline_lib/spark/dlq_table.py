"""The dlq-table job: xact.downloads.dlq -> the xact_dlq Delta table.

    source (Kafka xact.downloads.dlq) -> the per-record function (table_rows.dlq_row)
        -> dead_letter_rows (the table's status columns) -> sinks.DlqBatchWriter: MERGE insert-only on
    dlq_id (re-processing adds nothing)

One row per dead letter, i.e. per dead task and attempt chain: the dlq_id is derived from the
stage, task id, replay id and attempt (dead_letters.py), so a replayed task that dies again is a
new row, linked to the first by its task id and replay id. A message on the DLQ topic that is not
a readable dead letter still becomes a row (stage `dlq`, category `malformed`, or `internal` when
handling it raised): nothing is dropped, and nothing is ever sent back onto the DLQ topic.

What analysts do with the table (summaries, replay, resolve) is in spark/replay.py.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings, Stage
from pipeline_lib.records import InputRecord
from pipeline_lib.spark.sinks import BatchSink, DlqBatchWriter
from pipeline_lib.spark.stage_query import RecordFunction, StageQuery, per_record, start_stage
from pipeline_lib.spark.tables import DLQ_SCHEMA, dlq_table
from pipeline_lib.table_rows import DLQ_COLUMNS, dlq_row, internal_dlq_row

# What the per-record function emits (table_rows.DLQ_COLUMNS), timestamps still ISO strings.
_TYPES = {f.name: f.dataType for f in DLQ_SCHEMA}
PARSED_SCHEMA = StructType(
    [StructField(n, StringType() if isinstance(_TYPES[n], TimestampType) else _TYPES[n]) for n in DLQ_COLUMNS]
)


def dlq_records(settings: Settings) -> RecordFunction:
    """The per-record function: a DLQ message in, its xact_dlq row out."""

    def rows_of(record: InputRecord, now: datetime) -> Iterable[tuple]:
        return [dlq_row(record, now)]

    def failed(record: InputRecord, exc: BaseException, now: datetime) -> Iterable[tuple]:
        return [internal_dlq_row(record, exc, now)]

    return per_record(rows_of, failed)


def dead_letter_rows(parsed: DataFrame, settings: Settings | None = None) -> DataFrame:
    """The step before the sink: the per-record rows (table_rows.DLQ_COLUMNS, timestamps as ISO
    strings) -> xact_dlq rows (status open). In the streaming plan, so `current_timestamp` is the
    micro-batch's time: a replayed batch stamps the same times."""
    now = F.current_timestamp()
    own = [c for c in DLQ_COLUMNS if c not in ("failed_at", "source_timestamp", "failed_date")]
    return parsed.select(
        *own,
        F.coalesce(F.try_to_timestamp("failed_at"), now).alias("failed_at"),
        F.try_to_timestamp("source_timestamp").alias("source_timestamp"),
        F.col("failed_date"),
        F.lit("open").alias("status"),
        F.lit(None).cast("string").alias("note"),
        F.lit(None).cast("string").alias("replay_id"),
        F.lit(None).cast("timestamp").alias("replayed_at"),
        F.lit(None).cast("string").alias("replay_selection"),
        F.lit(0).alias("replay_count"),
        F.lit(None).cast("timestamp").alias("resolved_at"),
        now.alias("first_seen_at"),
        now.alias("updated_at"),
    ).select(*DLQ_SCHEMA.fieldNames())


DLQ_TABLE = StageQuery(
    name=Stage.DLQ_TABLE.value,
    records=dlq_records,
    schema=PARSED_SCHEMA,
    step=dead_letter_rows,
    sink=BatchSink(DlqBatchWriter),
    metrics=lambda settings: [F.count(F.lit(1)).alias("dead_letters")],
    table=dlq_table,
)


def run_dlq_table(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the job that keeps xact_dlq in step with xact.downloads.dlq."""
    return start_stage(spark, settings, DLQ_TABLE, available_now=available_now)
