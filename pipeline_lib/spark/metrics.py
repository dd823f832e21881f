"""The `xact_pipeline_metrics` Delta table: one row per micro-batch of every query, recorded from the
progress the listener receives (pipeline_lib.metrics), buffered and appended by a background
thread once per metrics.flush_seconds (not one commit per batch), and at stop. A failure to record
is logged in one line and the rows are kept for the next flush (bounded): it never fails a query.

One flush runs at a time, and `stop` waits for the background thread (a flush in flight included,
up to STOP_WAIT_SECONDS) before its own last flush: a job stops its session right after, and a
Delta append cut off by that stop fails with a page of JVM errors (a job cancelled because the
SparkContext was shut down, RejectedExecutionException, a missing broadcast block, then "No
active or default Spark session found" for the next try).

`tables maintain` compacts the table and deletes rows older than metrics.retention_days (the
rows; VACUUM then removes the files, after its own retention).
"""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.metrics import METRIC_COLUMNS, MetricsBuffer
from pipeline_lib.spark.tables import METRICS_SCHEMA, create_table, metrics_table, require_table
from pipeline_lib.supervision import failure_summary

log = get_logger("metrics")
STOP_WAIT_SECONDS = 30.0  # stop: how long a flush in flight may take to finish (a Delta append)


class MetricsRecorder:
    """Buffers metric rows and appends them to xact_pipeline_metrics from a daemon thread."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark, self.spec = spark, metrics_table(settings)
        self.buffer = MetricsBuffer(settings.metrics.flush_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="xact-metrics", daemon=True)
        self._flushing = threading.Lock()  # one Delta append at a time: the thread's or stop's
        self._ready = False

    def start(self) -> MetricsRecorder:
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            if self._session_stopped():  # e.g. spark.stop() in a notebook or a benchmark
                self._stop.set()
                left = len(self.buffer.drain())
                if left:
                    log.warning("the Spark session stopped: %d metric row(s) were not recorded", left)
                return
            if self.buffer.due():
                self.flush()

    def _session_stopped(self) -> bool:
        """A classic session whose SparkContext has stopped (a Spark Connect session has no
        context here and never counts as stopped)."""
        context = getattr(self.spark, "_sc", None)
        return context is not None and getattr(context, "_jsc", None) is None

    def flush(self) -> int:
        """Write what is buffered; returns the rows written (0 after a failure, which is logged)."""
        with self._flushing:
            rows = self.buffer.drain()
            if not rows:
                return 0
            try:
                if not self._ready:
                    create_table(self.spark, self.spec)
                    self._ready = True
                frame = self.spark.createDataFrame([tuple(r.get(c) for c in METRIC_COLUMNS) for r in rows], _PARSED)
                frame = frame.withColumn("batch_time", F.to_timestamp("batch_time")).withColumn(
                    "recorded_at", F.current_timestamp()
                )
                frame.select(*METRICS_SCHEMA.fieldNames()).write.format("delta").mode("append").save(self.spec.path)
                return len(rows)
            except Exception as exc:  # noqa: BLE001 - recording metrics must never fail a query
                if self._session_stopped():
                    log.warning("the Spark session stopped: %d metric row(s) were not recorded", len(rows))
                    return 0
                self.buffer.put_back(rows)
                log.warning(
                    "could not record %d metric row(s) (kept for the next try): %s", len(rows), failure_summary(exc)
                )
                return 0

    def stop(self, wait: float = STOP_WAIT_SECONDS) -> None:
        """Stop the background thread, waiting for a flush in flight, then write what is left.

        Call it before the session stops (jobs.run_stages does): afterwards the recorder touches
        the session no more. A flush still running after `wait` is left to end by itself."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(wait)
            if self._thread.is_alive():
                log.warning("metrics: a flush still runs after %.0f s; its rows may not be recorded", wait)
                return
        if not self._session_stopped():
            self.flush()


# METRIC_COLUMNS as the Python side builds them (batch_time an ISO string until written).
_PARSED = ", ".join(
    f"{name} {'string' if name == 'batch_time' else METRICS_SCHEMA[name].dataType.simpleString()}"
    for name in METRIC_COLUMNS
)


def delete_old_metrics(spark: SparkSession, settings: Settings, today: date | None = None) -> None:
    """Delete rows older than metrics.retention_days (tables maintain); VACUUM removes the files."""
    spec = metrics_table(settings)
    table = require_table(spark, spec)
    cutoff = (today or datetime.now(UTC).date()) - timedelta(days=settings.metrics.retention_days)
    table.delete(F.col("batch_date") < F.lit(cutoff.isoformat()))
    log.info(
        "%s: rows before %s deleted (metrics.retention_days %d)", spec.name, cutoff, settings.metrics.retention_days
    )
