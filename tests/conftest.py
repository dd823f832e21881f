"""Shared fixtures: one real Kafka broker and one SparkSession per test session, a fresh sample
attachment server per test, and settings rooted in each test's tmp dir.

The broker is this project's own LocalKafka on free loopback ports in a temporary directory, so
tests never touch a broker a developer runs on 9092; it starts only for tests that ask for it.
Spark is local[2] with the real Kafka connector and Delta jars from the project's cache; chispa
tests that need no broker get Spark without one.
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
from pipeline_lib.kafka_client import create_topics
from pipeline_lib.local.broker import LocalKafka, free_port
from pipeline_lib.local.sample_server import SampleFileServer
from pipeline_lib.logs import setup_logging

setup_logging("INFO")


def _stop_spark_first() -> None:
    """Spark's cached Kafka producers reconnect (and warn) if the broker goes first: stop Spark."""
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    broker = LocalKafka(tmp_path_factory.mktemp("broker"), free_port(), free_port(), heap="384m", start_timeout=120)
    broker.start()
    try:
        yield broker
    finally:
        _stop_spark_first()
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
            "metrics": {"enabled": False},  # tests that read xact_pipeline_metrics turn it on
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
def make_kafka_settings(kafka_broker: LocalKafka, make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """make_settings pointing at the session broker, with the settings' topics created."""

    def factory(**overrides: Any) -> Settings:
        settings = make_settings(kafka_broker.bootstrap, **overrides)
        create_topics(kafka_broker.bootstrap, settings.topic_partitions())
        return settings

    return factory


@pytest.fixture
def kafka_settings(make_kafka_settings: Callable[..., Settings]) -> Settings:
    """Settings pointing at the session broker, with this test's topics created."""
    return make_kafka_settings()


@pytest.fixture
def sample_server() -> Iterator[SampleFileServer]:
    """A fresh attachment server with fault modes on loopback (its request counts are this test's)."""
    with SampleFileServer() as server:
        yield server


@pytest.fixture(scope="session")
def spark():
    """One local[2] session with the Kafka connector and Delta; quiet (Spark's own log at ERROR)."""
    from pyspark.sql import SparkSession

    from pipeline_lib.spark.session import (
        start_filtering_jvm_stderr,
        with_delta,
        with_kafka,
        with_local_defaults,
        with_spark_log_level,
    )

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = with_local_defaults(SparkSession.builder.master("local[2]").appName("xact-tests"), shuffle_partitions=2)
    builder = with_delta(with_kafka(with_spark_log_level(builder))).config("spark.driver.memory", "1g")
    session = start_filtering_jvm_stderr(builder)
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
