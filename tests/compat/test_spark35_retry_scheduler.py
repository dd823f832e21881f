"""The retry scheduler on Spark 3.5 (Fabric Runtime 1.3), with the real broker.

Runs only under pyspark 3.5 (`make test-spark35` builds that environment outside the clone); the
main suite, on the pinned Spark 4.2, skips it.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest

pyspark = pytest.importorskip("pyspark")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not pyspark.__version__.startswith("3.5."), reason="runs under pyspark 3.5: make test-spark35"),
]
KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.12:" + pyspark.__version__


@pytest.fixture(scope="module")
def spark35(kafka_broker):
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("xact-spark35")
        .config("spark.jars.packages", KAFKA_PACKAGE)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_the_scheduler_forwards_every_message_when_due_and_never_early_on_spark_35(spark35, make_kafka_settings):
    from pipeline_lib.kafka_client import consume_all, produce
    from pipeline_lib.local.samples import sample_task
    from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
    from pipeline_lib.times import iso_utc

    settings = make_kafka_settings(streaming__trigger_interval_seconds=1)
    now = datetime.now(UTC)
    records = []
    for i in range(8):
        task = sample_task(f"http://127.0.0.1:9/f{i}.pdf", f"f{i}.pdf", trace_id=f"T-{i}", attempt=1,
                         due_at=iso_utc(now + timedelta(seconds=i)), retry_stage="download",
                         return_topic=settings.topics.pending.name)  # fmt: skip
        records.append((task.trace_id, task.encode(), task.headers()))
    produce(settings, settings.retry_topics[0], records)
    query = run_retry_scheduler(spark35, settings)
    try:
        deadline = time.monotonic() + 120
        while len(list(consume_all(settings, settings.topics.pending.name, idle_timeout=2))) < 8:
            assert query.exception() is None
            assert time.monotonic() < deadline
            time.sleep(1)
    finally:
        query.stop()
    headers = [h for _, _, h in consume_all(settings, settings.topics.pending.name)]
    assert len({h["xact.task_id"] for h in headers}) == 8
    assert all(ts(h["xact.retry.forwarded_at"]) >= ts(h["xact.retry.due_at"]) for h in headers)
