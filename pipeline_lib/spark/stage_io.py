"""What the I/O stages (download, upload) share on top of the stage skeleton: their per-record
function runs a record_stage.RecordStage (one per Python worker) over the partition's records,
and every message it routes is one row for the Kafka sink, plus what the metrics need.

    records -> RecordStage.process (decode -> work -> route, concurrently) -> STAGE_ROUTED_SCHEMA
        rows -> observe(a count per outcome, retries per tier, bytes, ...) -> Kafka sink by `topic`

At-least-once: a micro-batch replayed after a crash repeats its I/O (into the same deterministic
paths) and re-emits its messages; every later stage is idempotent by task id.
"""

from __future__ import annotations

import resource
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from pyspark.sql import Column
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipeline_lib.config import Settings, delay_label
from pipeline_lib.records import InputRecord
from pipeline_lib.routing import Routed
from pipeline_lib.spark.kafka_io import KAFKA_HEADERS_TYPE, header_entries
from pipeline_lib.spark.sinks import KafkaSink
from pipeline_lib.spark.stage_query import RecordFunction, StageQuery

# One row per emitted message, plus what the metrics need.
STAGE_ROUTED_SCHEMA = StructType(
    [
        StructField("outcome", StringType(), False),  # cached | completed | retry | refetch | dead | malformed | ...
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


def _peak_rss() -> int:
    """The Python worker's peak RSS in bytes (ru_maxrss is in KiB on Linux), for the memory bound."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def routed_records(stage_for: Callable[[Settings], Stage]) -> Callable[[Settings], RecordFunction]:
    """The per-record function of an I/O stage: its RecordStage's routed messages as rows."""

    def records(settings: Settings) -> RecordFunction:
        def process(records: Iterator[InputRecord]) -> Iterator[tuple]:
            stage = stage_for(settings)  # one per Python worker: pools, threads and breakers outlive a batch
            for routed in stage.process(records):  # one stream: the pool never drains mid-partition
                size = routed.outcome.bytes if routed.outcome else 0
                opened = int(bool(routed.outcome and routed.outcome.breaker_opened))
                refetched = int(bool(getattr(routed.outcome, "refetched", False)))
                rows = routed.rows if routed.rows is not None else [m.row() for m in routed.messages]
                peak = _peak_rss()  # after the record's work: what it took
                for index, (out, (topic, key, value, headers)) in enumerate(zip(routed.messages, rows, strict=True)):
                    first = index == 0  # bytes and openings counted once per outcome
                    yield (
                        out.outcome,
                        topic,
                        key,
                        value,
                        header_entries(headers),
                        size if first else 0,
                        opened if first else 0,
                        refetched if first else 0,
                        peak,
                    )

        return process

    return records


def io_metrics(outcomes: tuple[str, ...]) -> Callable[[Settings], list[Column]]:
    """Per-micro-batch metrics (observedMetrics.<stage>): a count per outcome, retries per tier
    (`retry_<label>`), bytes, breaker openings, refetches and the Python workers' peak RSS."""

    def metrics(settings: Settings) -> list[Column]:
        tiers = {
            delay_label(d): topic for d, topic in zip(settings.retry.delays_seconds, settings.retry_topics, strict=True)
        }
        outcome = F.col("outcome")
        return [
            *(F.count(F.when(outcome == o, 1)).alias(o) for o in outcomes),
            *(
                F.count(F.when((outcome == "retry") & (F.col("topic") == topic), 1)).alias(f"retry_{label}")
                for label, topic in tiers.items()
            ),
            F.sum("bytes").alias("bytes"),
            F.sum("breaker_opened").alias("breaker_openings"),
            F.sum("refetched").alias("refetches"),
            F.max("worker_peak_rss_bytes").alias("worker_peak_rss_bytes"),
        ]

    return metrics


def io_stage(
    name: str,
    stage_for: Callable[[Settings], Stage],
    outcomes: tuple[str, ...],
    prepare: Callable | None = None,
) -> StageQuery:
    """An I/O stage's declaration: its RecordStage, its outcomes, the Kafka sink."""
    return StageQuery(
        name=name,
        records=routed_records(stage_for),
        schema=STAGE_ROUTED_SCHEMA,
        sink=KafkaSink(),
        metrics=io_metrics(outcomes),
        prepare=prepare,
    )
