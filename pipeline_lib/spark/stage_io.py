"""The shared Spark wiring of the I/O stages (download, upload): Kafka records in, a pure-Python
stage's `process` inside mapInArrow, routed messages out with their metrics, one Kafka sink.

    source (Kafka) -> mapInArrow(stage.process) -> observe(metrics) -> Kafka sink by `topic`

At-least-once: a micro-batch replayed after a crash repeats its I/O (into the same deterministic
paths) and re-emits its messages; every later stage is idempotent by task id.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipeline_lib.config import Settings, delay_label
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.records import InputRecord, input_records
from pipeline_lib.routing import Routed
from pipeline_lib.spark.kafka_io import (
    KAFKA_HEADERS_TYPE,
    arrow_schema,
    header_entries,
    kafka_records,
    read_topics,
    record_columns,
)
from pipeline_lib.spark.progress import install_progress_listener, start_query

if TYPE_CHECKING:
    import pyarrow as pa

# One row per emitted message, plus what the metrics need.
STAGE_ROUTED_SCHEMA = StructType(
    [
        StructField(
            "outcome", StringType(), False
        ),  # e.g. cached | completed | retry | refetch | dead | malformed | result
        StructField("topic", StringType(), False),
        StructField("key", StringType(), True),
        StructField("value", StringType(), False),
        StructField("headers", KAFKA_HEADERS_TYPE, True),
        StructField("bytes", LongType(), False),
        StructField("breaker_opened", LongType(), False),
        StructField("refetched", LongType(), False),
        StructField("worker_peak_rss_bytes", LongType(), False),
    ]
)


class Stage(Protocol):
    def process(self, records: Iterable[InputRecord]) -> Iterator[Routed]: ...


# Routed records per output Arrow batch, and input records turned into Python objects at once. The
# stage itself bounds what it holds (record_stage.IN_FLIGHT_WINDOW); the input is read lazily.
ROWS_PER_OUTPUT_BATCH = 500


def _records(batches: Iterable[pa.RecordBatch], slice_rows: int = ROWS_PER_OUTPUT_BATCH) -> Iterator[InputRecord]:
    """Every Kafka record of the input as one lazy stream, turned into Python objects a
    zero-copy slice of an Arrow batch at a time (Spark's batches hold up to 10,000 records)."""
    for batch in batches:
        for start in range(0, batch.num_rows, slice_rows):
            yield from input_records(batch.slice(start, slice_rows).to_pydict())


def _partition(settings: Settings, stage_for: Callable[[Settings], Stage]):
    # mapInArrow, not mapInPandas: the rows go to plain Python lists anyway, so a pandas frame per
    # batch is only extra copies (the 2 GiB download's worker peak RSS went from 207 to 177 MiB).
    out_schema = arrow_schema(STAGE_ROUTED_SCHEMA)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        stage = stage_for(settings)  # one per Python worker: pools, threads and breakers outlive a batch
        columns: dict[str, list] = {name: [] for name in out_schema.names}
        for routed in stage.process(_records(batches)):  # one stream: the pool never drains mid-partition
            size = routed.outcome.bytes if routed.outcome else 0
            opened = int(bool(routed.outcome and routed.outcome.breaker_opened))
            refetched = int(bool(getattr(routed.outcome, "refetched", False)))
            rows = routed.rows if routed.rows is not None else [m.row() for m in routed.messages]
            for index, (out, (topic, key, value, headers)) in enumerate(zip(routed.messages, rows, strict=True)):
                first = index == 0  # bytes and openings counted once per outcome
                for name, item in (
                    ("outcome", out.outcome), ("topic", topic), ("key", key), ("value", value),
                    ("headers", header_entries(headers)), ("bytes", size if first else 0),
                    ("breaker_opened", opened if first else 0), ("refetched", refetched if first else 0),
                ):  # fmt: skip
                    columns[name].append(item)
            if len(columns["outcome"]) >= ROWS_PER_OUTPUT_BATCH:
                yield _output(columns, out_schema)
                columns = {name: [] for name in out_schema.names}
        if columns["outcome"]:
            yield _output(columns, out_schema)

    return run


def _output(columns: dict[str, list], schema: pa.Schema) -> pa.RecordBatch:
    """The routed columns as one output Arrow batch, stamped with the worker's peak RSS."""
    import pyarrow as pa

    # ru_maxrss is in KiB on Linux: the worker's peak, for the memory-bound check.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    columns["worker_peak_rss_bytes"] = [peak] * len(columns["outcome"])
    return pa.RecordBatch.from_pydict(columns, schema=schema)


def stage_records(raw: DataFrame, settings: Settings, stage_for: Callable[[Settings], Stage]) -> DataFrame:
    """Kafka rows -> STAGE_ROUTED_SCHEMA rows (the stage's I/O happens here)."""
    return record_columns(raw).mapInArrow(_partition(settings, stage_for), STAGE_ROUTED_SCHEMA)


def observe_stage(
    routed: DataFrame, name: str, outcomes: tuple[str, ...], tiers: dict[str, str] | None = None
) -> DataFrame:
    """Per-micro-batch metrics in the query's progress (observedMetrics.<name>): a count per
    outcome, retries per tier (`retry_<label>`, tiers: label -> topic), bytes, breaker openings,
    refetches and the Python workers' peak RSS."""
    outcome = F.col("outcome")
    per_tier = [
        F.count(F.when((outcome == "retry") & (F.col("topic") == topic), 1)).alias(f"retry_{label}")
        for label, topic in (tiers or {}).items()
    ]
    return routed.observe(
        name,
        *(F.count(F.when(outcome == o, 1)).alias(o) for o in outcomes),
        *per_tier,
        F.sum("bytes").alias("bytes"),
        F.sum("breaker_opened").alias("breaker_openings"),
        F.sum("refetched").alias("refetches"),
        F.max("worker_peak_rss_bytes").alias("worker_peak_rss_bytes"),
    )


def run_stage(
    spark: SparkSession,
    settings: Settings,
    *,
    name: str,
    topic: str,
    stage_for: Callable[[Settings], Stage],
    outcomes: tuple[str, ...],
    available_now: bool,
) -> StreamingQuery:
    install_progress_listener(spark, settings)
    raw = read_topics(spark, settings, [topic])
    tiers = {
        delay_label(d): topic for d, topic in zip(settings.retry.delays_seconds, settings.retry_topics, strict=True)
    }
    routed = observe_stage(stage_records(raw, settings, stage_for), name, outcomes, tiers)
    writer = (
        kafka_records(routed)
        .writeStream.queryName(name)
        .format("kafka")
        .options(**kafka_sink_options(settings.kafka))
        .option("checkpointLocation", settings.checkpoint(name))
    )
    return start_query(writer, settings, name, available_now)
