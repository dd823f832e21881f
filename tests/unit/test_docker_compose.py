"""docker-compose.kafka.yml (optional, for users with Docker; no test runs it) creates exactly the
topics, with the partition counts, that the config asks of the embedded broker, and runs the
same Kafka version."""

from __future__ import annotations

import yaml

from pipeline_lib.config import load_settings
from pipeline_lib.versions import KAFKA_VERSION
from tests.packaging import ROOT

COMPOSE = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())


def test_the_compose_topics_match_the_config():
    specs = COMPOSE["services"]["topics"]["environment"]["TOPICS"].split()
    declared = {name: int(parts) for name, parts in (spec.rsplit(":", 1) for spec in specs)}
    assert declared == load_settings("local").topic_partitions()


def test_the_compose_broker_is_the_embedded_brokers_version_on_loopback_with_an_optional_ui():
    services = COMPOSE["services"]
    assert services["kafka"]["image"] == services["topics"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["kafka"]["ports"] == ["127.0.0.1:9092:9092"]  # the local overlay's bootstrap servers
    assert load_settings("local").kafka.bootstrap_servers == "127.0.0.1:9092"
    assert services["kafka-ui"]["profiles"] == ["ui"]
