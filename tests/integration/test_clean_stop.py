"""A stop prints no stack trace (issue #22, item 8): a job stopped by SIGTERM or at its --timeout with a
batch in flight (a results MERGE writing thousands of event dates, an ingest batch of MAX_LITERAL_IDS
events looked up by literal ids) says one line and exits 75; `query.stop()` mid-batch ends the query
as stopped; stopping the metrics recorder waits for its flush in flight.

Before the fix each such stop printed a java.lang.StackOverflowError of 1,024 regex frames from the
stream thread: Spark's StreamExecution.PROXY_ERROR regex recursing over the interrupted batch's
traceback (spark/progress.py), and a metrics flush cut off by the session's stop printed a JVM
trace of its own (spark/metrics.py). pyspark's worker daemon may print a BrokenPipeError trace
when a stop closes a task's socket mid-flush; the session's stderr filter drops exactly that
(logs.StopNoiseFilter, tests/unit/test_stop_noise.py), so no trace is tolerated here.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import pytest

from pipeline_lib.contracts import AttachmentResult
from pipeline_lib.kafka_client import produce
from pipeline_lib.metrics import metric_row
from pipeline_lib.spark.metrics import MetricsRecorder
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.sinks import MAX_LITERAL_IDS
from pipeline_lib.supervision import EXIT_ABANDONED

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

RESULT_DATES = 2000  # one task per event date: the MERGE names 2,000 date literals and writes 2,000 partitions
FIRST_DAY = date(2015, 1, 1)
# What a stack trace or a reported JVM/Python error looks like in a job's output.
TRACE = re.compile(r"^\tat |^Traceback |^Caused by|\b\w*(Exception|Error)\b|does not exist|No active or default")


def trace_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if TRACE.search(line)]


def produce_results(settings, dates: int = RESULT_DATES) -> None:
    produce(
        settings,
        settings.topics.results.name,
        [
            (
                f"{i:032x}",
                AttachmentResult(
                    task_id=f"{i:032x}",
                    trace_id=f"T{i}",
                    attempt=0,
                    stage="download",
                    status="retrying",
                    occurred_at="2026-11-27T10:00:00Z",
                    event_date=(FIRST_DAY + timedelta(days=i)).isoformat(),
                ).encode(),
            )
            for i in range(dates)
        ],
    )


def produce_events(settings, count: int = MAX_LITERAL_IDS) -> None:
    """`count` events of distinct dates, one attachment each: a batch that ingest looks up by literal ids."""
    events = [
        {
            "type": "verisk.claims.property.xn.documentsReceived",
            "version": "1",
            "traceId": f"stop-{i}",
            "utcDateTime": f"{(FIRST_DAY + timedelta(days=i)).isoformat()}T08:00:00Z",
            "data": {"assignmentId": f"A{i}", "attachments": [f"https://files.example.com/claims/{i}.pdf"]},
        }
        for i in range(count)
    ]
    produce(settings, settings.topics.events_raw.name, [(e["traceId"], json.dumps(e)) for e in events])


def writing_uncommitted(table: Path) -> bool:
    """A batch is writing the table's partitions and has not committed them (version 0 is the CREATE)."""
    return (
        table.is_dir()
        and any(p.name.startswith("event_date=") for p in table.iterdir())
        and not (table / "_delta_log" / f"{1:020d}.json").exists()
    )


def job(settings, stage: str, *extra: str) -> subprocess.Popen:
    t = settings.topics
    args = [
        f"--set=kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"--set=storage.root={settings.storage.root}",
        "--set=streaming.trigger_interval_seconds=1",
        "--set=streaming.stop_grace_seconds=0",  # a batch in flight at the stop is interrupted at once
        "--set=metrics.flush_seconds=1",
        "--set=url_policy.allowed_hosts=[.example.com]",
        *(f"--set=topics.{n}.name={getattr(t, n).name}" for n in ("events_raw", "pending", "cached", "results", "dlq")),
    ]
    log = Path(settings.storage.root) / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "pipeline_lib.cli", stage, *args, *extra],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def finish(proc: subprocess.Popen, settings, stage: str, timeout: float = 120) -> tuple[int, str]:
    try:
        code = proc.wait(timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    return code, (Path(settings.storage.root) / f"{stage}.log").read_text()


def batch_in_flight(checkpoint: Path, batch: int = 0) -> bool:
    """The query started `batch` (its offsets are written) and has not committed it."""
    return (checkpoint / "offsets" / str(batch)).exists() and not (checkpoint / "commits" / str(batch)).exists()


def test_a_results_job_stopped_by_sigterm_mid_merge_of_thousands_of_dates_prints_no_stack_trace(kafka_settings):
    s = kafka_settings
    produce_results(s)
    table = Path(s.table_path("attachments"))
    proc = job(s, "results")
    log = Path(s.storage.root) / "results.log"
    try:
        deadline = time.monotonic() + 150
        while not writing_uncommitted(table):  # the MERGE writes its 2,000 partitions
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
    finally:
        code, text = finish(proc, s, "results")
    assert code == EXIT_ABANDONED and "SIGTERM received" in text and "batch in flight in results" in text, text[-3000:]
    assert writing_uncommitted(table)  # nothing of the MERGE was committed
    assert trace_lines(text) == [], text[-5000:]


def test_an_ingest_job_at_its_timeout_mid_batch_of_literal_ids_prints_no_stack_trace(kafka_settings):
    s = kafka_settings
    produce_events(s)
    code, text = finish(job(s, "ingest", "--timeout", "15"), s, "ingest")
    assert batch_in_flight(Path(s.checkpoint("ingest"))), f"the batch was not in flight at the timeout:\n{text[-3000:]}"
    assert code == EXIT_ABANDONED and "--timeout reached" in text and "batch in flight in ingest" in text, text[-3000:]
    assert trace_lines(text) == [], text[-5000:]


def test_query_stop_mid_batch_ends_the_query_as_stopped(spark, kafka_settings):
    """In process: the stream thread ends through Spark's interrupted-by-stop path (status `Stopped`),
    not through the regex's StackOverflowError (which leaves the status of the batch it died in)."""
    s = kafka_settings
    produce_results(s, 500)
    query = run_results(spark, s)
    tracker = spark.sparkContext.statusTracker()
    try:
        deadline = time.monotonic() + 120
        while not any(  # the batch's handler runs a Spark job (its jobs are in the run id's job group)
            (info := tracker.getJobInfo(j)) is not None and info.status == "RUNNING"
            for j in tracker.getJobIdsForGroup(str(query.runId))
        ):
            assert query.isActive and time.monotonic() < deadline, query.exception()
            time.sleep(0.05)
    finally:
        query.stop()
    assert query.exception() is None
    assert query.status["message"] == "Stopped", query.status


def test_stopping_the_metrics_recorder_waits_for_its_flush_in_flight(spark, make_settings):
    """A job stops its session right after the recorder: a flush still running then fails with a
    page of JVM errors, so stop() returns only once the background thread's flush has written."""
    s = make_settings(metrics__enabled=True, metrics__flush_seconds=0.5)
    recorder = MetricsRecorder(spark, s)
    in_flight = threading.Event()
    own_drain = recorder.buffer.drain

    def slow_drain() -> list:  # the background flush has taken the rows; its append is yet to come
        rows = own_drain()
        if rows and threading.current_thread() is recorder._thread:
            in_flight.set()
            time.sleep(1.0)
        return rows

    recorder.buffer.drain = slow_drain  # type: ignore[method-assign]
    recorder.buffer.add(metric_row({"name": "results", "batchId": 7, "timestamp": "2026-11-27T10:00:00.000Z"}))
    recorder.start()
    assert in_flight.wait(30)
    recorder.stop()
    assert not recorder._thread.is_alive()
    rows = spark.read.format("delta").load(s.table_path("metrics")).collect()
    assert [(r.stage, r.batch_id) for r in rows] == [("results", 7)]
