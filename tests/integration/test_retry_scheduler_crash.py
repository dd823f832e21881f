"""kill -9 of the retry scheduler mid-run: nothing lost, nothing forwarded early.

The scheduler runs as its own process group (`xact-pipeline retry-scheduler`, driver JVM
included), as a platform would run it; the test kills the whole group with SIGKILL while
messages are waiting in its state, then starts it again on the same checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.samples import sample_task
from pipeline_lib.times import iso_utc

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COUNT = 24


def cli_overrides(settings) -> list[str]:
    t = settings.topics
    return [
        f"--set=kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"--set=storage.root={settings.storage.root}",
        f"--set=retry.delays_seconds={list(settings.retry.delays_seconds)}",
        f"--set=streaming.trigger_interval_seconds={settings.streaming.trigger_interval_seconds}",
        "--set=spark.master=local[2]",
        *(
            f"--set=topics.{name}.name={getattr(t, name).name}"
            for name in ("events_raw", "pending", "cached", "results", "dlq")
        ),
    ]


def start_scheduler(settings, log: Path) -> subprocess.Popen:
    out = log.open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline_lib.cli", "retry-scheduler", *cli_overrides(settings)],
        cwd=ROOT,
        stdout=out,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while b"[retry-scheduler] started" not in log.read_bytes().split(b"--- restart ---")[-1]:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, "scheduler did not start: " + log.read_text()[-3000:]
        time.sleep(0.5)
    return proc


def forwarded(settings) -> list[dict[str, str]]:
    return [h for _, _, h in consume_all(settings, settings.topics.pending.name, idle_timeout=2)]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_kill_9_mid_run_loses_nothing_and_forwards_nothing_early(make_kafka_settings, tmp_path):
    settings = make_kafka_settings(streaming__trigger_interval_seconds=1)
    log = tmp_path / "scheduler.log"
    proc = start_scheduler(settings, log)
    try:
        now = datetime.now(UTC)
        records = []
        for i in range(COUNT):
            due = now + timedelta(seconds=8 + i * 0.75)  # due one after another, 8 to 25 s from now
            waiting = sample_task(
                f"http://127.0.0.1:9/f{i}.pdf",
                f"f{i}.pdf",
                trace_id=f"T-{i}",
                attempt=1,
                due_at=iso_utc(due),
                retry_stage="download",
                return_topic=settings.topics.pending.name,
            )
            records.append((waiting.trace_id, waiting.encode(), waiting.headers()))
        produce(settings, settings.retry_topics[0], records)

        # Kill once some messages have left through committed batches (their progress line is
        # logged after the commit) while the rest wait in the scheduler's state.
        deadline = time.monotonic() + 60
        while len(forwarded(settings)) < 6 or not re.search(r"moved=[1-9]", log.read_text()):
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGKILL)  # driver JVM and Python together, mid-run
        proc.wait(30)
        killed_with = len(forwarded(settings))
        assert killed_with < COUNT, "everything was forwarded before the kill; the test proves nothing"
        time.sleep(3)
        with log.open("ab") as f:
            f.write(b"\n--- restart ---\n")
        proc = start_scheduler(settings, log)

        deadline = time.monotonic() + 90
        while len({h["xact.task_id"] for h in forwarded(settings)}) < COUNT:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)

    out = forwarded(settings)
    assert {h["xact.task_id"] for h in out} == {
        sample_task(f"http://127.0.0.1:9/f{i}.pdf", trace_id=f"T-{i}").task_id for i in range(COUNT)
    }
    early = [h for h in out if ts(h["xact.retry.forwarded_at"]) < ts(h["xact.retry.due_at"])]
    assert early == []
    # At-least-once: only a batch in flight at the kill may be forwarded twice.
    assert len(out) - COUNT < killed_with, f"{len(out)} copies for {COUNT} tasks"
    print(f"forwarded before the kill: {killed_with}; copies in all: {len(out)} for {COUNT} tasks")
