"""The README's first command, end to end: `xact-pipeline demo` on its own broker and ports, printing
only the pipeline's own lines and its summary."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_lib.local.broker import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def test_demo_runs_end_to_end_and_prints_a_summary(tmp_path):
    port = free_port()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline_lib.cli",
            "demo",
            f"--set=local_kafka.home={tmp_path / 'broker'}",
            f"--set=local_kafka.port={port}",
            f"--set=local_kafka.controller_port={free_port()}",
            f"--set=kafka.bootstrap_servers=127.0.0.1:{port}",
            f"--set=storage.root={tmp_path / 'var'}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = out.stdout
    # 12 good events (indexes 0..11 carry 0..3 attachments), 1 duplicate, 1 event whose two
    # attachments fail (404, 503), 3 bad ones (one of them hostile, with one good URL).
    assert re.search(r"xact_events rows\s+14\b", summary), summary
    assert re.search(r"download tasks \(pending\)\s+21\b", summary), summary
    assert re.search(r"dead letters \(ingest\)\s+3\b", summary), summary
    assert re.search(r"left for the upload stage\s+0\b", summary), summary  # the combined pass uploaded all 19
    assert re.search(r"waiting for a retry\s+1\b", summary), summary
    assert re.search(r"dead letters \(download\)\s+1\b", summary), summary
    assert re.search(r"uploaded to the lake\s+19\b", summary), summary
    assert re.search(r"xact_attachments rows\s+21\s+\(19 completed, 1 dead, 1 retrying\)", summary), summary
    assert re.search(r"xact_dlq rows\s+4\b", summary), summary
    assert "broker stopped" in summary
    assert "X-Amz-Signature=0123" not in summary + out.stderr
    assert "[http_permanent] HTTP 404 from the source" in summary  # the reason does not repeat the category
    # Quiet: every stderr line is one of the pipeline's own log lines (no JVM, Spark or Kafka chatter).
    foreign = [line for line in out.stderr.splitlines() if not re.match(r"\d\d:\d\d:\d\d [A-Z]+ +xact\.", line)]
    assert foreign == [], "\n".join(foreign[:20])
    assert (tmp_path / "var" / "tables" / "xact_events" / "_delta_log").is_dir()
