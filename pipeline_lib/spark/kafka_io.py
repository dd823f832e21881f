"""Kafka sources for the streaming jobs, configured from settings (sinks: kafka_options.kafka_sink_options)."""

from __future__ import annotations

import orjson
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DeadLetter
from pipeline_lib.kafka_options import java_client_options
from pipeline_lib.spark.schemas import KAFKA_HEADERS_TYPE


def read_topics(spark: SparkSession, settings: Settings, topics: list[str]) -> DataFrame:
    """A streaming DataFrame over `topics` with key, value, topic, partition, offset, timestamp, headers."""
    kafka = settings.kafka
    reader = (
        spark.readStream.format("kafka")
        .options(**java_client_options(kafka))
        .option("subscribe", ",".join(topics))
        .option("startingOffsets", kafka.starting_offsets)
        .option("maxOffsetsPerTrigger", str(kafka.max_offsets_per_trigger))
        .option("failOnDataLoss", str(kafka.fail_on_data_loss).lower())
        .option("includeHeaders", "true")
    )
    if kafka.min_partitions:
        reader = reader.option("minPartitions", str(kafka.min_partitions))
    return reader.load()


def kafka_records(routed: DataFrame) -> DataFrame:
    """Routed rows as Kafka sink rows: topic, key, value, headers."""
    headers = F.transform(
        F.map_entries(F.from_json("headers_json", "map<string,string>")),
        lambda e: F.struct(e["key"].alias("key"), e["value"].cast("binary").alias("value")),
    ).cast(KAFKA_HEADERS_TYPE)
    return routed.select("topic", "key", "value", headers.alias("headers"))


def dead_letter_row(dead: DeadLetter, dlq_topic: str, key: str | None) -> tuple:
    """A dead letter as a ROUTED_SCHEMA row, ready for kafka_records."""
    headers = orjson.dumps(dead.headers()).decode()
    return ("dlq", dead.dlq_id, dead.event_id, None, dlq_topic, key, dead.encode(), headers)
