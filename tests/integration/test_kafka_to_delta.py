"""The stack loads: a Spark streaming query reads a real Kafka topic and writes a Delta table."""

from __future__ import annotations

import pytest

from pipeline_lib.kafka_client import produce
from pipeline_lib.spark.kafka_io import read_topics

pytestmark = pytest.mark.integration


def test_streaming_query_reads_kafka_and_writes_delta(spark, kafka_settings, tmp_path):
    topic = kafka_settings.topics.events_raw.name
    produce(kafka_settings, topic, [(f"k{i}", f'{{"n": {i}}}') for i in range(25)])
    table = str(tmp_path / "delta" / "t")
    query = (
        read_topics(spark, kafka_settings, [topic])
        .selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value", "partition", "offset")
        .writeStream.format("delta")
        .option("checkpointLocation", str(tmp_path / "chk"))
        .trigger(availableNow=True)
        .start(table)
    )
    try:
        query.awaitTermination(180)
    finally:
        query.stop()
    rows = spark.read.format("delta").load(table)
    assert rows.count() == 25
    assert sorted(r.key for r in rows.select("key").collect()) == sorted(f"k{i}" for i in range(25))
    progress = query.lastProgress
    assert progress is not None and "maxOffsetsBehindLatest" in progress["sources"][0]["metrics"]
