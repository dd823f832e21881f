"""The dlq-table job: xact.downloads.dlq -> the xact_dlq Delta table.

    source (Kafka xact.downloads.dlq) -> dead_letter_rows (mapInArrow over DeadLetter.decode)
        -> foreachBatch: MERGE insert-only on dlq_id  (re-processing adds nothing)

One row per dead letter, i.e. per dead task and attempt chain: the dlq_id is derived from the
stage, task id, replay id and attempt (routing.py), so a replayed task that dies again is a new
row, linked to the first by its task id and replay id. A message on the DLQ topic that is not a
readable dead letter still becomes a row (stage `dlq`, category `malformed`): nothing is dropped,
and nothing is ever sent back onto the DLQ topic.

What analysts do with the table (summaries, replay, resolve) is in spark/dlq_analysis.py.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import orjson
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings
from pipeline_lib.contracts import ContractError, DeadLetter
from pipeline_lib.logs import get_logger
from pipeline_lib.routing import pending_records
from pipeline_lib.spark.kafka_io import arrow_batch, arrow_schema, read_topics, record_columns
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.spark.tables import DLQ_SCHEMA, create_table, dlq_table, require_table

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("dlq")
JOB_NAME = "dlq-table"
STAGE = "dlq"

# What the parse step emits: the dead letter's own columns of xact_dlq, timestamps still ISO
# strings (typed by dead_letter_rows).
_OWN_COLUMNS = DLQ_SCHEMA.fields[: DLQ_SCHEMA.fieldNames().index("status")]
PARSED_SCHEMA = StructType(
    [StructField(f.name, StringType() if isinstance(f.dataType, TimestampType) else f.dataType, f.nullable)
     for f in _OWN_COLUMNS]
)  # fmt: skip


def _host(url: str | None) -> str | None:
    try:
        return (urlsplit(url).hostname or None) if url else None
    except ValueError:
        return None


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


def _parse(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    out_schema = arrow_schema(PARSED_SCHEMA)
    now = datetime.now(UTC)
    for batch in batches:
        rows = []
        for record in pending_records(batch.to_pydict()):
            try:
                rows.append(_row_of(DeadLetter.decode(record.value if record.value is not None else b"")))
            except ContractError as exc:
                reason = f"not a readable dead letter: {exc}"
                rows.append(_row_of(DeadLetter.malformed(STAGE, reason, record.value, record.source, now)))
        yield arrow_batch(rows, out_schema)


def dead_letter_rows(raw: DataFrame) -> DataFrame:
    """Kafka rows of the DLQ topic -> xact_dlq rows (status open)."""
    parsed = record_columns(raw).mapInArrow(_parse, PARSED_SCHEMA)
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


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-dlq-table` and jobs/dlq_table.py: load settings, get the session, run the dlq-table job."""
    from pipeline_lib.spark.runner import job_main

    return job_main(JOB_NAME, argv)
