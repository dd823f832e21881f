"""Spark schemas, derived from the pure-Python definitions so the two cannot drift apart."""

from __future__ import annotations

from dataclasses import fields

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

KAFKA_HEADERS_TYPE = ArrayType(StructType([StructField("key", StringType()), StructField("value", BinaryType())]))

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
        StructField("id", StringType(), False),  # event_id, task_id or dlq_id
        StructField("event_id", StringType(), True),
        StructField("event_date", StringType(), True),
        StructField("topic", StringType(), True),  # Kafka rows (task, dlq): their topic, key, value, headers
        StructField("key", StringType(), True),
        StructField("value", StringType(), True),
        StructField("headers", KAFKA_HEADERS_TYPE, True),
        StructField("event", EVENT_VALUES_TYPE, True),  # event rows only
    ]
)


def message_schema(cls: type) -> StructType:
    """The Spark schema of a contracts.Message body, from its dataclass fields (for from_json)."""
    kinds = {"str": StringType(), "int": LongType()}
    out = []
    for f in fields(cls):
        annotation = str(f.type)
        base = annotation.split("|")[0].strip()
        if base not in kinds:
            raise TypeError(f"{cls.__name__}.{f.name}: no Spark type for {annotation!r}")
        out.append(StructField(f.name, kinds[base], nullable="None" in annotation))
    return StructType(out)
