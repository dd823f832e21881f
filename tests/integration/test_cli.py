"""The CLI and the thin jobs/ entry points, run as a user runs them (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline_lib.config import STAGES
from pipeline_lib.kafka_client import consume_all

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline_lib.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


def settings_args(settings) -> list[str]:
    t = settings.topics
    return [
        f"--set=kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"--set=storage.root={settings.storage.root}",
        *(f"--set=topics.{name}.name={getattr(t, name).name}" for name in ("events_raw", "pending", "dlq")),
    ]


def test_config_show_prints_resolved_settings_and_derived_values():
    out = cli("config", "show", "--set", "retry.delays_seconds=[60,120]")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["derived"]["retry_topics"] == ["xact.downloads.pending.retry.1m", "xact.downloads.pending.retry.2m"]
    assert data["derived"]["max_attempts"] == 3


def test_bad_config_exits_2_with_one_clear_line():
    out = cli("config", "show", "--set", "download.concurrency=lots")
    assert out.returncode == 2
    assert out.stderr.startswith("error: invalid settings") and "download.concurrency" in out.stderr
    assert "Traceback" not in out.stderr


def test_kafka_status_of_a_stopped_broker(tmp_path):
    out = cli("kafka", "status", f"--set=local_kafka.home={tmp_path}")
    assert out.returncode == 3 and "broker stopped" in out.stdout


def test_produce_samples_then_tail(kafka_settings):
    args = settings_args(kafka_settings)
    out = cli("produce-samples", "--count", "5", *args)
    assert out.returncode == 0 and "produced 5 events" in out.stdout, out.stderr
    tail = cli("tail", kafka_settings.topics.events_raw.name, "--max", "5", *args)
    assert tail.returncode == 0 and tail.stdout.count("key=demo-") == 5
    assert "X-Amz-Signature=0123" not in tail.stdout and "X-Amz-Signature=***" in tail.stdout


def test_jobs_module_runs_the_ingest_job_like_spark_submit(kafka_settings):
    args = settings_args(kafka_settings)
    assert cli("produce-samples", "--count", "4", *args).returncode == 0
    out = subprocess.run(
        [sys.executable, "jobs/ingest.py", "--available-now", *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "[ingest] batch 0: in 4 rows" in out.stderr  # the progress line
    tasks = list(consume_all(kafka_settings, kafka_settings.topics.pending.name))
    assert len(tasks) == 0 + 1 + 2 + 3  # sample events 0..3 carry 0, 1, 2 and 3 attachments


def test_dlq_commands_refuse_a_bad_filter_or_a_resolve_without_note_before_starting_spark():
    out = cli("dlq", "replay", "--since", "yesterday")
    assert out.returncode == 2 and "error: since: 'yesterday' is not an ISO 8601" in out.stderr
    out = cli("dlq", "resolve", "--category", "expired")
    assert out.returncode == 2 and "dlq resolve needs --note" in out.stderr
    out = cli("dlq", "replay", "--rate", "0")
    assert out.returncode == 2 and "error: replay rates must be above 0" in out.stderr
    out = cli("dlq", "replay", "--resume", "")  # an empty shell variable: not a replay of everything
    assert out.returncode == 2 and "error: --resume: '' is not a replay id" in out.stderr
    out = cli("dlq", "replay", "--status", "replaying")
    assert out.returncode == 2 and "belong to a replay that may have published them" in out.stderr
    out = cli("dlq", "replay", "--resume", "replay-1a2b3c4d5e6f", "--category", "expired")
    assert out.returncode == 2 and "error: --resume finishes a replay with its own selection" in out.stderr


def test_a_missing_table_is_one_error_line_naming_the_command(tmp_path):
    out = cli("dlq", "list", f"--set=storage.root={tmp_path}")
    assert out.returncode == 1
    assert out.stderr.startswith("error: Delta table xact_dlq does not exist at "), out.stderr[-2000:]
    assert "xact-pipeline tables create" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_each_job_has_its_own_console_script():
    from importlib.metadata import entry_points

    scripts = {e.name: e for e in entry_points(group="console_scripts") if e.name.startswith("xact-")}
    for job in (*STAGES, "run"):  # every job's main() lives in the one Spark entry module
        main = scripts[f"xact-{job}"].load()
        assert (main.__module__, main.__name__) == ("pipeline_lib.spark.jobs", f"{job.replace('-', '_')}_main")
    out = subprocess.run([sys.executable, "jobs/upload.py", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and "usage: xact-upload" in out.stdout
