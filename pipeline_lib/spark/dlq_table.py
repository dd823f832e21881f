"""The dlq-table job: xact.downloads.dlq -> the xact_dlq Delta table.

    source (Kafka xact.downloads.dlq) -> dead_letter_rows (mapInArrow over DeadLetter.decode)
        -> foreachBatch: MERGE insert-only on dlq_id  (re-processing adds nothing)

One row per dead letter, i.e. per dead task and attempt chain: the dlq_id is derived from the
stage, task id, replay id and attempt (dead_letters.py), so a replayed task that dies again is a new
row, linked to the first by its task id and replay id. A message on the DLQ topic that is not a
readable dead letter still becomes a row (stage `dlq`, category `malformed`, or `internal` when
handling it raised): nothing is dropped, and nothing is ever sent back onto the DLQ topic. The
per-record work is table_rows.dlq_row, total by construction.

What analysts do with the table (summaries, replay, resolve) is in spark/dlq_analysis.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.records import input_records
from pipeline_lib.spark.kafka_io import arrow_batch, arrow_schema, read_topics, record_columns
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.spark.tables import DLQ_SCHEMA, create_table, dlq_table, require_table
from pipeline_lib.table_rows import DLQ_COLUMNS, dlq_row

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("dlq")
JOB_NAME = "dlq-table"
# A stage that re-emits a dead letter (a batch replayed after a crash) may stamp it with another
# failed_at, even another day: the insert-only MERGE looks for its dlq_id this many days back.
DEDUP_WINDOW_DAYS = 7

# What the parse step emits (table_rows.DLQ_COLUMNS), timestamps still ISO strings.
_TYPES = {f.name: f.dataType for f in DLQ_SCHEMA}
PARSED_SCHEMA = StructType(
    [StructField(n, StringType() if isinstance(_TYPES[n], TimestampType) else _TYPES[n]) for n in DLQ_COLUMNS]
)


def _parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    out_schema = arrow_schema(PARSED_SCHEMA)
    for batch in batches:
        now = datetime.now(UTC)
        rows = [dlq_row(record, now) for record in input_records(batch.to_pydict())]  # total: never raises
        yield arrow_batch(rows, out_schema)


def dead_letter_rows(raw: DataFrame) -> DataFrame:
    """Kafka rows of the DLQ topic -> xact_dlq rows (status open)."""
    parsed = record_columns(raw).mapInArrow(_parse, PARSED_SCHEMA)
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
            (
                table.alias("t")
                .merge(unique.alias("s"), f"t.failed_date >= '{since}' AND t.dlq_id = s.dlq_id")
                .whenNotMatchedInsertAll()
                .execute()
            )
        finally:
            unique.unpersist()


def run_dlq_table(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the job that keeps xact_dlq in step with xact.downloads.dlq."""
    create_table(spark, dlq_table(settings))
    install_progress_listener(spark, settings)
    raw = read_topics(spark, settings, [settings.topics.dlq.name])
    rows = dead_letter_rows(raw).observe(JOB_NAME, F.count(F.lit(1)).alias("dead_letters"))
    writer = (
        rows.writeStream.queryName(JOB_NAME)
        .foreachBatch(DlqBatchWriter(settings))
        .option("checkpointLocation", settings.checkpoint(JOB_NAME))
    )
    return start_query(writer, settings, JOB_NAME, available_now)

