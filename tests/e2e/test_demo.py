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
    # attachments fail (404 for good, 503 once), 3 bad ones (one of them hostile, with one good URL).
    assert re.search(r"xact_events rows\s+14\b", summary), summary
    assert re.search(r"download tasks \(pending\)\s+22\b", summary), summary  # 21 tasks and the retry
    assert re.search(r"dead letters \(ingest\)\s+3\b", summary), summary
    assert re.search(r"left for the upload stage\s+0\b", summary), summary  # the combined pass uploaded all 20
    assert re.search(r"dead letters \(download\)\s+1\b", summary), summary
    assert re.search(r"uploaded to the lake\s+20\b", summary), summary
    assert re.search(r"xact_attachments rows\s+21\s+\(20 completed, 1 dead\)", summary), summary
    assert re.search(r"xact_dlq rows\s+4\b", summary), summary
    # The retry's journey in one line: failed once, through the first tier, then completed.
    journey = r"retried\s+busy\.pdf: attempt 0 failed at .*\(http_transient, HTTP 503\) -> \S+\.retry\.2s"
    assert re.search(journey + r" -> forwarded at .* -> attempt 1 completed", summary), summary
    # It ends with health's verdicts, one line per stage.
    verdicts = re.findall(
        r"^(ingest|download|upload|retry-scheduler|results|dlq-table)\s+(ok|warn|failing)\b", summary, re.M
    )
    assert [v[0] for v in verdicts] == ["ingest", "download", "upload", "retry-scheduler", "results", "dlq-table"], (
        summary
    )
    assert "failing" not in {v[1] for v in verdicts}, summary
    assert "broker stopped" in summary
    assert "X-Amz-Signature=0123" not in summary + out.stderr
    assert "[http_permanent] HTTP 404 from the source" in summary  # the reason does not repeat the category
    # Quiet: every stderr line is one of the pipeline's own log lines (no JVM, Spark or Kafka chatter).
    foreign = [line for line in out.stderr.splitlines() if not re.match(r"\d\d:\d\d:\d\d [A-Z]+ +xact\.", line)]
    assert foreign == [], "\n".join(foreign[:20])
    assert (tmp_path / "var" / "tables" / "xact_events" / "_delta_log").is_dir()
