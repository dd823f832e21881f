"""Run a streaming job by name in the session the environment provides."""

from __future__ import annotations

from collections.abc import Callable

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.delta_tables import create_table
from pipeline_lib.spark.dlq import dlq_table, run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.ingest import events_table, run_ingest
from pipeline_lib.spark.results import attachments_table, maintain_tables, run_results
from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
from pipeline_lib.spark.session import session_for
from pipeline_lib.spark.upload import run_upload

log = get_logger("job")

JobStarter = Callable[..., StreamingQuery]
JOBS: dict[str, JobStarter] = {
    "ingest": run_ingest,
    "download": run_download,
    "upload": run_upload,
    "retry-scheduler": run_retry_scheduler,
    "results": run_results,
    "dlq-table": run_dlq_table,
}


def create_tables(settings: Settings, spark: SparkSession | None = None) -> None:
    """Create every Delta table of the pipeline that does not exist yet."""
    spark = spark or session_for(settings)
    for spec in table_specs(settings):
        create_table(spark, spec)
        log.info("table %s ready at %s", spec.name, spec.path)


def table_specs(settings: Settings) -> list:
    return [events_table(settings), attachments_table(settings), dlq_table(settings)]


def maintain(settings: Settings, retain_hours: int) -> None:
    """OPTIMIZE and VACUUM every pipeline table."""
    maintain_tables(session_for(settings), table_specs(settings), retain_hours)


def run_streaming_job(
    name: str, settings: Settings, *, available_now: bool = False, timeout: float | None = None
) -> int:
    """Start job `name` and block until it stops (available-now done, timeout, Ctrl-C or failure)."""
    spark = session_for(settings)
    query = JOBS[name](spark, settings, available_now=available_now)
    log.info("%s running; checkpoint %s", name, settings.checkpoint(name))
    try:
        query.awaitTermination(None if timeout is None else int(timeout))
    except KeyboardInterrupt:
        log.info("stopping %s", name)
    finally:
        if query.isActive:
            query.stop()
        flush_listener_events(spark)
    return 0


def flush_listener_events(spark: SparkSession, timeout_ms: int = 10_000) -> None:
    """Wait until Spark has delivered queued listener events (the last progress line) to Python.

    Streaming listener events are asynchronous; a job that exits right after its query stops
    would otherwise lose the final progress event and log a py4j error. Best effort, bounded.
    """
    try:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)  # noqa: SLF001 - no public API
    except Exception as exc:  # noqa: BLE001 - flushing must never fail a finished job
        log.debug("could not flush listener events: %s", exc)
