"""Drills run the whole pipeline as users run it (`xact-pipeline run` or one process per stage) while
things fail: `make test-drills` (part of the README's test command) runs them; `pytest -m drill`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from pipeline_lib.config import Settings
from pipeline_lib.kafka_client import create_topics


def pytest_collection_modifyitems(items):
    for item in items:
        if "/drills/" in str(item.fspath):
            item.add_marker(pytest.mark.drill)
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def drill_settings(kafka_broker, make_settings) -> Callable[..., Settings]:
    """Settings for a drill: short tiers and cooldowns, loopback sources, topics created."""

    def factory(**overrides: Any) -> Settings:
        base = {
            "retry__delays_seconds": [1, 2, 4],
            "streaming__trigger_interval_seconds": 1,
            "streaming__restart_initial_seconds": 2,
            "streaming__restart_max_seconds": 10,
            "streaming__status_interval_seconds": 10,
            "download__total_timeout_seconds": 20,
            "download__read_timeout_seconds": 10,
            "url_policy__allow_private_addresses": False,
            "url_policy__allowed_networks": ["127.0.0.1/32"],
            "spark__shuffle_partitions": 2,
        }
        base.update(overrides)
        settings = make_settings(kafka_broker.bootstrap, **base)
        create_topics(kafka_broker.bootstrap, settings.topic_partitions())
        return settings

    return factory
