"""Download: xact.downloads.pending -> the cache, routed by outcome through one Kafka sink.

    source (Kafka pending) -> mapInPandas(DownloadStage.process) -> observe(metrics)
        -> Kafka sink, each row to its `topic`: cached | retry tier | dlq, plus results

At-least-once: a micro-batch replayed after a crash downloads its tasks again into the same cache
paths (derived from the task id) and re-emits their messages; downstream stages are idempotent by
task id.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import orjson
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipeline_lib.config import Settings
from pipeline_lib.contracts import SourceRef
from pipeline_lib.download_stage import DownloadStage, PendingRecord
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.spark.kafka_io import kafka_records, read_topics
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.times import iso_from_millis

JOB_NAME = "download"

# One row per emitted message, plus what the metrics need.
DOWNLOAD_ROUTED_SCHEMA = StructType(
    [
        StructField("outcome", StringType(), False),  # cached | retry | dead | malformed | result
        StructField("topic", StringType(), False),
        StructField("key", StringType(), True),
        StructField("value", StringType(), False),
        StructField("headers_json", StringType(), True),
        StructField("bytes", LongType(), False),
        StructField("breaker_opened", LongType(), False),
        StructField("worker_peak_rss_bytes", LongType(), False),
    ]
)


def _download_partition(settings: Settings):
    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        stage = DownloadStage.for_settings(settings)
        for pdf in batches:
            records = [
                PendingRecord(
                    key.decode("utf-8", "replace") if key is not None else None,
                    value,
                    SourceRef(str(topic), int(partition), int(offset), iso_from_millis(ts)),
                )
                for key, value, topic, partition, offset, ts in zip(  # noqa: B905 - equal-length columns
                    pdf["key"], pdf["value"], pdf["topic"], pdf["partition"], pdf["offset"], pdf["timestamp_ms"]
                )
            ]
            rows = []
            for routed in stage.process(records):
                size = routed.outcome.bytes if routed.outcome else 0
                opened = int(bool(routed.outcome and routed.outcome.breaker_opened))
                for out in routed.messages:
                    topic, key, value, headers = out.row()
                    main = out.outcome != "result"  # count bytes and openings once per outcome
                    rows.append(
                        (out.outcome, topic, key, value, orjson.dumps(headers).decode(),
                         size if main else 0, opened if main else 0, 0)
                    )  # fmt: skip
            # ru_maxrss is in KiB on Linux: the worker's peak, for the memory-bound check.
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            yield pd.DataFrame([(*row[:-1], peak) for row in rows], columns=DOWNLOAD_ROUTED_SCHEMA.fieldNames()).astype(
                {"bytes": "int64", "breaker_opened": "int64", "worker_peak_rss_bytes": "int64"}
            )

    return run


def download_records(raw: DataFrame, settings: Settings) -> DataFrame:
    """Kafka rows of the pending topic -> DOWNLOAD_ROUTED_SCHEMA rows (downloads happen here)."""
    columns = raw.select(
        "key", "value", "topic", "partition", "offset", F.unix_millis("timestamp").alias("timestamp_ms")
    )
    return columns.mapInPandas(_download_partition(settings), DOWNLOAD_ROUTED_SCHEMA)


def observe_downloads(routed: DataFrame) -> DataFrame:
    """Per-micro-batch metrics in the query's progress (observedMetrics.download)."""
    outcome = F.col("outcome")
    return routed.observe(
        JOB_NAME,
        *(F.count(F.when(outcome == name, 1)).alias(name) for name in ("cached", "retry", "dead", "malformed")),
        F.sum("bytes").alias("bytes"),
        F.sum("breaker_opened").alias("breaker_openings"),
        F.max("worker_peak_rss_bytes").alias("worker_peak_rss_bytes"),
    )


def run_download(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the download query; with `available_now`, it processes what is there and stops."""
    install_progress_listener(spark)
    raw = read_topics(spark, settings, [settings.topics.pending.name])
    routed = observe_downloads(download_records(raw, settings))
    writer = (
        kafka_records(routed)
        .writeStream.queryName(JOB_NAME)
        .format("kafka")
        .options(**kafka_sink_options(settings.kafka))
        .option("checkpointLocation", settings.checkpoint(JOB_NAME))
    )
    return start_query(writer, settings, available_now)
