"""Fixtures of the download tests: a raw TCP server (raw_server.py) and downloader settings rooted
in the test's tmp dir."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pipeline_lib.config import Settings, load_settings
from tests.unit.download.raw_server import RawServer


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    server = RawServer()
    yield server
    server.close()


@pytest.fixture
def download_settings(tmp_path) -> Callable[..., Settings]:
    """Settings for loopback sources; keyword arguments override `download`."""

    def make(**download: Any) -> Settings:
        values = {"read_timeout_seconds": 1, "total_timeout_seconds": 3, "max_bytes": 1_000_000, **download}
        return load_settings(
            "local",
            overrides={
                "storage": {"root": str(tmp_path)},
                "url_policy": {"allow_private_addresses": False, "allowed_networks": ["127.0.0.1/32"]},
                "download": values,
            },
        )

    return make
