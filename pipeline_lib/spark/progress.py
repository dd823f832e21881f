"""Starting a job's query, and a listener that logs `format_progress` once per micro-batch and
hands each batch's progress to the metrics recorder (spark/metrics.py)."""

from __future__ import annotations

import json
import threading
import time
from contextlib import suppress

from pyspark.sql import SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery, StreamingQueryListener

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.metrics import metric_row
from pipeline_lib.progress import drained, format_progress
from pipeline_lib.spark.metrics import MetricsRecorder
from pipeline_lib.supervision import failure_summary

log = get_logger("progress")


class ProgressListener(StreamingQueryListener):
    def __init__(self, recorder: MetricsRecorder | None = None) -> None:
        self.recorder = recorder

    def onQueryStarted(self, event) -> None:
        log.info("[%s] started (id %s)", event.name or "query", event.id)

    def onQueryProgress(self, event) -> None:
        progress = json.loads(event.progress.json)
        log.info(format_progress(progress.get("name") or "query", progress))
        if self.recorder is not None:
            self.recorder.buffer.add(metric_row(progress))

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        if event.exception:  # one line; the supervisor says what happens next
            log.error("query %s failed: %s", event.id, failure_summary(event.exception))
        else:
            log.info("query %s stopped", event.id)


def start_query(
    writer: DataStreamWriter, settings: Settings, stage: str, available_now: bool, *, timers: bool = False
) -> StreamingQuery:
    """Start `stage`'s query: drain what is there and stop (`available_now`), or every trigger
    interval (Settings.trigger_seconds(stage)).

    `timers`: the query holds processing-time state timeouts, so Trigger.AvailableNow would never
    end (progress.drained) and stopping it means interrupting a batch (its no-data batches run back
    to back). Such a query drains on its processing-time trigger instead and is stopped between
    batches after the first batch that finds the input drained.
    """
    trigger = f"{round(settings.trigger_seconds(stage) * 1000)} milliseconds"  # never 1e-05 seconds
    if not available_now:
        return writer.trigger(processingTime=trigger).start()
    if not timers:
        return writer.trigger(availableNow=True).start()
    query = writer.trigger(processingTime=trigger).start()
    threading.Thread(target=_stop_when_drained, args=(query,), name=f"drain-{query.name}", daemon=True).start()
    return query


def _stop_when_drained(query: StreamingQuery, poll: float = 0.05, grace: float = 60.0) -> None:
    seen = None
    while query.isActive:
        progress = query.lastProgress  # a dict (3.5), a dict-like StreamingQueryProgress (4.x)
        if progress is not None and not isinstance(progress, dict):
            progress = json.loads(progress.json)
        if progress and progress.get("batchId") != seen:
            seen = progress.get("batchId")
            if drained(progress):
                until = time.monotonic() + grace
                with suppress(Exception):  # it may have ended by itself meanwhile
                    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < until:
                        time.sleep(0.01)
                    query.stop()
                return
        time.sleep(poll)


_installed: dict[int, ProgressListener] = {}


def install_progress_listener(spark: SparkSession, settings: Settings | None = None) -> None:
    """Register the listener once per session; with settings whose metrics are enabled, it also
    records one xact_pipeline_metrics row per micro-batch."""
    key = id(spark)
    listener = _installed.get(key)
    if listener is None:
        listener = _installed[key] = ProgressListener()
        spark.streams.addListener(listener)
    if settings is None or not settings.metrics.enabled:
        return
    if listener.recorder is not None and listener.recorder.spec.path != settings.table_path("metrics"):
        listener.recorder.stop()  # another run's settings in the same session (tests, notebooks)
        listener.recorder = None
    if listener.recorder is None:
        listener.recorder = MetricsRecorder(spark, settings).start()


def flush_metrics(spark: SparkSession) -> None:
    """Write the metric rows still buffered (at a job's end); never raises."""
    listener = _installed.get(id(spark))
    if listener is not None and listener.recorder is not None:
        listener.recorder.stop()
        listener.recorder = None
