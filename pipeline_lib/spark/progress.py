r"""Starting a job's query, and a listener that logs `format_progress` once per micro-batch and
hands each batch's progress to the metrics recorder (spark/metrics.py).

A stop with a Python foreachBatch batch in flight must end the query quietly, as Spark means it
to (SPARK-39218). `query.stop()` interrupts the batch's JVM call, the Python handler raises, and
py4j hands the JVM that exception's whole traceback as text: the Python frames, then the JVM
exception with its stack (8 KB and more for an interrupted MERGE). Spark 4.x decides whether that
text means "interrupted by stop" with a regex, StreamExecution.PROXY_ERROR,
`py4j.protocol.Py4JJavaError: An error occurred while calling((.|\r\n|\r|\n)*)(java.lang.InterruptedException|...)`,
whose alternation recurses once per character of the text that follows: beyond about 2,000
characters it overflows the stream thread's stack, and the JVM prints a StackOverflowError of
1,024 regex frames (no log level covers that; it is the thread's uncaught-exception handler).
stage_query.start_query therefore installs `guard_stopped_batches`: a batch that fails because its query is
stopping hands py4j a short traceback, a BatchStopped that says so in the form Spark recognises.
"""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.metrics import metric_row
from pipeline_lib.progress import format_progress
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


class BatchStopped(Exception):
    """A foreachBatch batch cut short because its query is stopping: nothing of it is committed and
    it runs again at the next start. Its text ends in what Spark's StreamExecution takes for an
    interruption by stop (PROXY_ERROR in Spark 4.x, the shorter form of 3.5), within a few characters."""

    def __init__(self, query_id: str, batch_id: int, call: str) -> None:
        super().__init__(
            f"query {query_id} is stopping; batch {batch_id} was abandoned (it runs again at the next start)\n"
            f"py4j.protocol.Py4JJavaError: An error occurred while calling {call}\n: java.lang.InterruptedException"
        )


def _stopping_query(session: SparkSession) -> str | None:
    """The id of the query whose batch this thread runs, if that query is stopping; else None.

    In pinned thread mode (PySpark's default) a foreachBatch handler's JVM calls run on the query's
    own stream thread, which carries the query id as a local property; a query that is being
    stopped is no longer active while its thread ends (StreamExecution.stop sets TERMINATED first)."""
    try:
        query_id = session.sparkContext.getLocalProperty("sql.streaming.queryId")
        if query_id is None:
            return None
        query = session.streams.get(query_id)
        return query_id if query is None or not query.isActive else None
    except Exception:  # noqa: BLE001 - cannot tell: the handler's own exception goes on unchanged
        return None


def guard_stopped_batches() -> None:
    """Make every classic foreachBatch handler of this process stop cleanly (the module docstring).

    Wraps pyspark's ForeachBatchFunction.call (what the JVM calls for each batch of any
    `foreachBatch` query) once per process: an exception of a batch whose query is stopping becomes
    a BatchStopped, raised `from None` so py4j sends only its few lines. The exception of a batch
    whose query is running is raised unchanged, so a real failure keeps its whole message."""
    try:
        from pyspark.sql.utils import ForeachBatchFunction
    except ImportError:  # a runtime without classic foreachBatch (Spark Connect only): nothing to guard
        return
    original = ForeachBatchFunction.call
    if getattr(original, "_stop_guard", False):
        return

    def call(self, jdf, batch_id: int) -> None:
        try:
            original(self, jdf, batch_id)
        except Exception as exc:
            query_id = _stopping_query(self.session)
            if query_id is None:
                raise
            errmsg = getattr(exc, "errmsg", "")  # a Py4JJavaError's "An error occurred while calling o12.execute."
            call_name = errmsg.removeprefix("An error occurred while calling ").strip()[:100] or "foreachBatch."
            raise BatchStopped(query_id, batch_id, call_name) from None

    call._stop_guard = True  # type: ignore[attr-defined]
    ForeachBatchFunction.call = call  # type: ignore[method-assign]


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


def flush_listener_events(spark: SparkSession, timeout_ms: int = 10_000) -> None:
    """Wait until Spark has delivered queued listener events (the last progress line) to Python.

    Streaming listener events are asynchronous; a job that exits right after its query stops
    would otherwise lose the final progress event and log a py4j error. Best effort, bounded.
    """
    try:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)  # no public API
    except Exception as exc:  # noqa: BLE001 - flushing must never fail a finished job
        log.debug("could not flush listener events: %s", exc)
