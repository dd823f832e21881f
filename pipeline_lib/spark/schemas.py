"""Spark schemas, derived from the pure-Python definitions so the two cannot drift apart."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DataType,
    DateType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from pipeline_lib.events import DERIVED_COLUMNS, EVENT_FIELDS

_TYPES: dict[str, DataType] = {
    "string": StringType(),
    "timestamp": TimestampType(),
    "date": DateType(),
    "int": IntegerType(),
    "long": LongType(),
    "array<string>": ArrayType(StringType()),
}

# xact_events: the flattened fields, then the derived columns.
EVENTS_SCHEMA = StructType(
    [StructField(f.column, _TYPES[f.type], nullable=not f.required) for f in EVENT_FIELDS]
    + [
        StructField(name, _TYPES[kind], nullable=name not in ("event_id", "event_date"))
        for name, kind in DERIVED_COLUMNS
    ]
)

# What ingest's mapInPandas emits: one row per events row, task or dead letter.
ROUTED_SCHEMA = StructType(
    [
        StructField("kind", StringType(), False),  # event | task | dlq
        StructField("id", StringType(), False),  # event_id, task_id or dlq_id
        StructField("event_id", StringType(), True),
        StructField("event_date", StringType(), True),
        StructField("topic", StringType(), True),
        StructField("key", StringType(), True),
        StructField("value", StringType(), False),
        StructField("headers_json", StringType(), True),
    ]
)

KAFKA_HEADERS_TYPE = ArrayType(StructType([StructField("key", StringType()), StructField("value", BinaryType())]))
