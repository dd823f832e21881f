"""Against a real OneLake: runs only when a workspace, a lakehouse and credentials are set in the
environment, and is skipped otherwise (CI never has them).

    XACT_LIVE_ONELAKE_WORKSPACE=<workspace> XACT_LIVE_ONELAKE_LAKEHOUSE=<lakehouse> \\
    AZURE_TENANT_ID=... AZURE_CLIENT_ID=... AZURE_CLIENT_SECRET=... .venv/bin/pytest -m live
"""

from __future__ import annotations

import hashlib
import os
import uuid

import pytest

from pipeline_lib.config import load_settings
from pipeline_lib.upload.storage import OneLakeStorage

WORKSPACE = os.environ.get("XACT_LIVE_ONELAKE_WORKSPACE")
LAKEHOUSE = os.environ.get("XACT_LIVE_ONELAKE_LAKEHOUSE")
pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(
        not (WORKSPACE and LAKEHOUSE and os.environ.get("AZURE_CLIENT_ID")),
        reason="set XACT_LIVE_ONELAKE_WORKSPACE, XACT_LIVE_ONELAKE_LAKEHOUSE and AZURE_* credentials to run",
    ),
]


def test_a_small_file_round_trips_through_real_onelake():
    settings = load_settings(
        "local",
        overrides={
            "storage": {
                "lake": {
                    "backend": "onelake",
                    "files_prefix": "xact/live-test",
                    "onelake": {"workspace": WORKSPACE, "lakehouse": LAKEHOUSE, "auth": "service_principal"},
                }
            }
        },
    )
    storage = OneLakeStorage.from_settings(settings)
    data = os.urandom(1024)
    path = f"{uuid.uuid4().hex}.bin"
    stored = storage.put(iter([data]), path, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=None)
    try:
        assert stored.bytes == len(data)
    finally:
        storage.client.get_file_client(f"{storage.root}/{path}").delete_file()
