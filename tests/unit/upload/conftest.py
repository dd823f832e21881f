"""Fixtures of the upload tests: settings rooted in the test's tmp dir, and the local DFS server."""

from __future__ import annotations

import pytest

from pipeline_lib.config import load_settings
from pipeline_lib.local.dfs_server import DfsServer


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        "local",
        overrides={
            "storage": {"root": str(tmp_path / "var"), "lake": {"local_root": str(tmp_path / "lake")}},
            "download": {"cache_dir": str(tmp_path / "cache")},
            "retry": {"delays_seconds": [1, 2]},
            "upload": {"chunk_bytes": 65536},
        },
    )


@pytest.fixture
def dfs(tmp_path):
    with DfsServer(tmp_path) as server:
        yield server
