"""`xact-pipeline run`: every stage in one supervised application, as a user runs it (subprocesses),
and the supervisor's restart, Kafka-unreachable and stop behaviour against the real broker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline_lib.kafka_client import produce
from pipeline_lib.local.broker import free_port
from pipeline_lib.local.samples import sample_event
from pipeline_lib.spark.kafka_io import read_topics
from pipeline_lib.spark.supervisor import Supervisor
from pipeline_lib.supervision import EXIT_ABANDONED, EXIT_OK

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration


def args_for(settings) -> list[str]:
    t = settings.topics
    return [
        f"--set=kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"--set=storage.root={settings.storage.root}",
        "--set=streaming.trigger_interval_seconds=1",
        "--set=streaming.status_interval_seconds=5",
        "--set=retry.delays_seconds=[1,2]",
        "--set=url_policy.allowed_networks=[127.0.0.1/32]",
        *(f"--set=topics.{n}.name={getattr(t, n).name}" for n in ("events_raw", "pending", "cached", "results", "dlq")),
    ]


def completed_rows(settings) -> int:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    try:
        rows = spark.read.format("delta").load(settings.table_path("attachments")).collect()
    except Exception:  # noqa: BLE001 - the table appears once the run has started
        return 0
    return sum(1 for r in rows if r.status == "completed")


def test_run_moves_events_through_every_stage_and_stops_cleanly_on_sigterm(spark, kafka_settings, sample_server):
    s = kafka_settings
    events = [sample_event(i, sample_server.base_url, trace_prefix="run", attachments=2) for i in range(3)]
    produce(s, s.topics.events_raw.name, [(e["traceId"], json.dumps(e)) for e in events])
    log = Path(s.storage.root) / "run.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline_lib.cli", "run", *args_for(s)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        deadline = time.monotonic() + 240
        while completed_rows(s) < 6:
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert code in (EXIT_OK, EXIT_ABANDONED), text[-3000:]
    for stage in ("ingest", "download", "upload", "retry-scheduler", "results", "dlq-table"):
        assert f"[{stage}] started" in text
    assert "[run] ingest running" in text  # the status line
    assert "SIGTERM received: stopping every query" in text
    assert "Traceback" not in text and "Exception" not in text, text[-3000:]


def test_kafka_unreachable_is_one_line_naming_the_servers_and_is_retried(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline_lib.cli",
            "ingest",
            f"--set=kafka.bootstrap_servers={dead}",
            f"--set=storage.root={tmp_path}",
            "--set=streaming.restart_initial_seconds=2",
            "--timeout",
            "14",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )
    lines = [line for line in out.stderr.splitlines() if "cannot reach Kafka" in line]
    assert len(lines) >= 2, out.stderr[-3000:]  # said, then tried again after the cooldown
    assert dead in lines[0] and "xact-pipeline kafka start" in lines[0] and "kafka.bootstrap_servers" in lines[0]
    assert "Traceback" not in out.stderr and "TimeoutException" not in out.stderr
    assert out.returncode == EXIT_OK


def test_a_failing_query_is_restarted_from_its_checkpoint_with_a_growing_cooldown(spark, make_kafka_settings):
    s = make_kafka_settings(streaming__restart_initial_seconds=1, streaming__restart_max_seconds=4)
    topic = s.topics.events_raw.name
    seen: list[int] = []
    failures = {"left": 2}

    def flaky(spark_, settings, *, available_now=False):
        def handle(df, batch_id):
            rows = df.count()
            if rows and failures["left"]:
                failures["left"] -= 1
                raise RuntimeError("the lake is down")
            seen.append(rows)

        return (
            read_topics(spark_, settings, [topic])
            .writeStream.queryName("flaky")
            .foreachBatch(handle)
            .option("checkpointLocation", settings.checkpoint("flaky"))
            .trigger(processingTime="1 second")
            .start()
        )

    produce(s, topic, [("k", f"v{i}") for i in range(5)])
    supervisor = Supervisor(spark, s, {"flaky": flaky}, ["flaky"], check_kafka=True)
    runner = __import__("threading").Thread(target=supervisor.run, kwargs={"timeout": 90}, daemon=True)
    runner.start()
    deadline = time.monotonic() + 90
    while sum(seen) < 5:
        assert time.monotonic() < deadline, supervisor.states
        time.sleep(0.5)
    supervisor.request_stop()
    runner.join(60)
    state = supervisor.states["flaky"]
    assert state.restarts == 2 and sum(seen) == 5  # the failed batch ran again after each restart
    assert "the lake is down" in (state.last_error or "")
