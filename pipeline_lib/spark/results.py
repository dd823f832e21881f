"""Results: xact.downloads.results -> xact_attachments, exactly one row per task.

source (Kafka results) -> the per-record function (table_rows.result_row: a typed result, or
the record's dead letter) -> sinks.ResultsBatchWriter: unreadable results -> xact.downloads.dlq
(stage `results`, with provenance), then the winning outcome per task -> MERGE into
xact_attachments (which outcome wins: spark/sinks.py)
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import DateType, StringType, StructField, StructType, TimestampType

from pipeline_lib.config import Settings, Stage
from pipeline_lib.contracts import DeadLetter
from pipeline_lib.dead_letters import internal_dead_letter
from pipeline_lib.records import InputRecord
from pipeline_lib.routing import OutMessage
from pipeline_lib.spark.kafka_io import KAFKA_HEADERS_TYPE, kafka_row, record_columns
from pipeline_lib.spark.sinks import BatchSink, ResultsBatchWriter
from pipeline_lib.spark.stage_query import RecordFunction, StageQuery, per_record, record_loop, start_stage
from pipeline_lib.spark.tables import ATTACHMENTS_SCHEMA, attachments_table
from pipeline_lib.table_rows import RESULT_COLUMNS, result_row

# What the per-record function emits: a result row (kind `result`, the RESULT_COLUMNS with
# timestamps and the date still ISO strings) or a dead letter for the DLQ topic (kind `dlq`:
# topic, key, value, headers).
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
_NO_RESULT = (None,) * len(RESULT_COLUMNS)


def results_records(dlq_topic: str) -> RecordFunction:
    """The per-record function: a results message in, its PARSED_SCHEMA row out (an unreadable
    one as a dead letter for `dlq_topic`)."""

    def dead_row(record: InputRecord, dead: DeadLetter) -> tuple:
        return ("dlq", *_NO_RESULT, *kafka_row(OutMessage(dead.category, dlq_topic, record.key, dead)))

    def rows_of(record: InputRecord, now: datetime) -> Iterable[tuple]:
        row = result_row(record, now)
        if isinstance(row, DeadLetter):
            return [dead_row(record, row)]
        return [("result", *row, None, None, None, None)]

    def failed(record: InputRecord, exc: BaseException, now: datetime) -> Iterable[tuple]:
        return [dead_row(record, internal_dead_letter(Stage.RESULTS.value, exc, record, now))]

    return per_record(rows_of, failed)


RESULTS = StageQuery(
    name=Stage.RESULTS.value,
    records=lambda settings: results_records(settings.topics.dlq.name),
    schema=PARSED_SCHEMA,
    sink=BatchSink(ResultsBatchWriter),
    metrics=lambda settings: [
        F.count(F.when(F.col("kind") == "result", 1)).alias("results"),
        F.count(F.when(F.col("kind") == "dlq", 1)).alias("dead_letters"),
    ],
    table=attachments_table,
)


def parse_results(raw: DataFrame, dlq_topic: str) -> DataFrame:
    """Kafka rows -> PARSED_SCHEMA rows: typed results, or dead letters of unreadable records."""
    return record_columns(raw).mapInArrow(record_loop(results_records(dlq_topic), PARSED_SCHEMA), PARSED_SCHEMA)


def run_results(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the results query; with `available_now`, it processes what is there and stops."""
    return start_stage(spark, settings, RESULTS, available_now=available_now)
