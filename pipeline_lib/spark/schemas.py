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


KAFKA_HEADERS_TYPE = ArrayType(StructType([StructField("key", StringType()), StructField("value", BinaryType())]))
