"""Kafka I/O of the streaming jobs: sources configured from settings, the columns every job reads,
and the rows a Kafka sink writes (options: kafka_options.kafka_sink_options)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, BinaryType, StringType, StructField, StructType

from pipeline_lib.config import Settings
from pipeline_lib.kafka_options import kafka_source_options
from pipeline_lib.routing import OutMessage

if TYPE_CHECKING:
    import pyarrow as pa


# Kafka record headers as the source reads them (includeHeaders) and the sink writes them.
KAFKA_HEADERS_TYPE = ArrayType(StructType([StructField("key", StringType()), StructField("value", BinaryType())]))

# Rows for a Kafka sink whose `topic` column routes each row.
KAFKA_ROW_SCHEMA = StructType(
    [
        StructField("topic", StringType(), False),
        StructField("key", StringType(), True),
        StructField("value", StringType(), False),
        StructField("headers", KAFKA_HEADERS_TYPE, True),
    ]
)

# What every job's Python side reads of a Kafka record (records.input_records turns it into records).
RECORD_COLUMNS = ("key", "value", "topic", "partition", "offset", "timestamp_ms")


def read_topics(spark: SparkSession, settings: Settings, topics: list[str]) -> DataFrame:
    """A streaming DataFrame over `topics` with key, value, topic, partition, offset, timestamp, headers."""
    kafka = settings.kafka
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka_source_options(kafka))
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", kafka.starting_offsets)
        .option("maxOffsetsPerTrigger", str(kafka.max_offsets_per_trigger))
        .option("failOnDataLoss", str(kafka.fail_on_data_loss).lower())
        .option("includeHeaders", "true")
    )
    if kafka.min_partitions:
        reader = reader.option("minPartitions", str(kafka.min_partitions))
    return reader.load()


def record_columns(raw: DataFrame, *, headers: bool = False) -> DataFrame:
    """The RECORD_COLUMNS of Kafka source rows (the timestamp as epoch milliseconds), plus `headers`."""
    columns = [F.col(c) for c in RECORD_COLUMNS[:-1]] + [F.unix_millis("timestamp").alias("timestamp_ms")]
    return raw.select(*columns, *([F.col("headers")] if headers else []))


def kafka_records(routed: DataFrame) -> DataFrame:
    """Routed rows (with a KAFKA_HEADERS_TYPE `headers` column) as Kafka sink rows."""
    return routed.select("topic", "key", "value", "headers")


def headers_from_json(column: str) -> Column:
    """A JSON object of string headers as KAFKA_HEADERS_TYPE (for rows that keep headers as JSON)."""
    return F.transform(
        F.map_entries(F.from_json(column, "map<string,string>")),
        lambda e: F.struct(e["key"].alias("key"), e["value"].cast("binary").alias("value")),
    ).cast(KAFKA_HEADERS_TYPE)


def header_entries(headers: Mapping[str, str]) -> list[dict[str, object]]:
    """Message headers as a KAFKA_HEADERS_TYPE value for an Arrow batch."""
    return [{"key": k, "value": v.encode("utf-8")} for k, v in headers.items()]


def kafka_row(message: OutMessage) -> tuple[str, str | None, str, list[dict[str, object]]]:
    """A routed message as a KAFKA_ROW_SCHEMA row."""
    topic, key, value, headers = message.row()
    return topic, key, value, header_entries(headers)


def arrow_schema(schema: StructType) -> pa.Schema:
    """The Arrow schema mapInArrow must yield for `schema` (no timestamp columns: they travel as ISO strings)."""
    return to_arrow_schema(schema)


def arrow_batch(rows: Sequence[tuple], schema: pa.Schema) -> pa.RecordBatch:
    """Row tuples (in schema order) as one Arrow batch; nested values are dicts and lists."""
    import pyarrow as pa

    columns = list(zip(*rows)) if rows else [() for _ in schema]  # noqa: B905 - rows have equal length
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema)],  # noqa: B905 - one column per field
        schema=schema,
    )
