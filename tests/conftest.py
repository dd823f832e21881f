"""Shared fixtures: one real Kafka broker and one SparkSession per test session.

The broker is this project's own LocalKafka on free loopback ports in a temporary directory, so
tests never touch a broker a developer runs on 9092. Spark is local[2] with the real Kafka
connector and Delta jars from the project's cache.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline_lib.config import Settings, load_settings
from pipeline_lib.local_kafka import LocalKafka, free_port
from pipeline_lib.logs import setup_logging

setup_logging("INFO")


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(tmp_path_factory.mktemp("broker"), free_port(), free_port(), heap="384m", start_timeout=120)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Local settings rooted in this test's tmp dir, with unique topic names per test.

    Keyword overrides use `__` between levels: make_settings(bootstrap, url_policy__allowed_hosts=[...]).

    Unique topics keep tests independent on the one shared broker.
    """

    def factory(bootstrap: str = "127.0.0.1:1", **overrides: Any) -> Settings:
        suffix = uuid.uuid4().hex[:8]
        base: dict[str, Any] = {
            "kafka": {"bootstrap_servers": bootstrap},
            "storage": {"root": str(tmp_path / "var")},
            "streaming": {"trigger_interval_seconds": 1},
            "retry": {"delays_seconds": [1, 2, 4, 8]},
            "topics": {
                name: {"name": f"t{suffix}.{name}", "partitions": parts}
                for name, parts in (("events_raw", 2), ("pending", 3), ("cached", 2), ("results", 2), ("dlq", 2))
            },
        }
        for dotted, value in overrides.items():
            node = base
            *parents, leaf = dotted.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return load_settings("local", overrides=base)

    return factory


@pytest.fixture
def kafka_settings(kafka_broker: LocalKafka, make_settings: Callable[..., Settings]) -> Settings:
    """Settings pointing at the session broker, with this test's topics created."""
    settings = make_settings(kafka_broker.bootstrap)
    kafka_broker.create_topics(settings.topic_partitions())
    return settings


@pytest.fixture(scope="session")
def spark(kafka_broker: LocalKafka):
    """Depends on the broker only so that Spark (and its cached Kafka producers) stops first."""
    from pyspark.sql import SparkSession

    from pipeline_lib.spark.session import with_delta, with_kafka, with_local_defaults

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = with_local_defaults(SparkSession.builder.master("local[2]").appName("xact-tests"), shuffle_partitions=2)
    session = with_delta(with_kafka(builder)).config("spark.driver.memory", "1g").getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def run_available_now(start, spark, settings) -> None:
    """Run a job's query with Trigger.AvailableNow to the end; fail on its exception."""
    query = start(spark, settings, available_now=True)
    try:
        query.awaitTermination(300)
        assert query.exception() is None
    finally:
        query.stop()
