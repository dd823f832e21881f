"""Running the streaming jobs: the registry of jobs by name, and the one code path that every entry
point takes (the CLI's job commands and `run`, the console scripts and the jobs/*.py files that
spark-submit and Fabric Spark Job Definitions run).

    main(): parse arguments -> load settings -> set up logging -> get the session
            -> the supervisor starts run_<job>() for each stage and watches it (spark/supervisor.py)

Only the entry points build a session; every `run_*` function takes the session it is given.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from delta.tables import DeltaTable
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.cache import clean_cache, stale_part_age
from pipeline_lib.config import Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.dlq_table import run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.ingest import run_ingest
from pipeline_lib.spark.metrics import delete_old_metrics
from pipeline_lib.spark.progress import flush_metrics
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
from pipeline_lib.spark.session import session_for
from pipeline_lib.spark.supervisor import Supervisor
from pipeline_lib.spark.tables import all_tables, attachments_table, create_tables, maintain_tables, metrics_table
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


def create_all_tables(settings: Settings, spark: SparkSession | None = None) -> None:
    """Create every Delta table of the pipeline that does not exist yet."""
    create_tables(spark or session_for(settings), settings)


def maintain(settings: Settings, retain_hours: int, spark: SparkSession | None = None) -> None:
    """Delete metric rows past their retention, OPTIMIZE and VACUUM every pipeline table, then clean
    the download cache: stale `.part` files, and the files of tasks already final in
    xact_attachments (completed or dead)."""
    spark = spark or session_for(settings)
    if DeltaTable.isDeltaTable(spark, metrics_table(settings).path):
        delete_old_metrics(spark, settings)  # rows past metrics.retention_days, before compaction
    maintain_tables(spark, all_tables(settings), retain_hours)
    spec = attachments_table(settings)
    if not DeltaTable.isDeltaTable(spark, spec.path):
        return
    inventory = DeltaTable.forPath(spark, spec.path).toDF()

    def final_ids(batch: Sequence[str]) -> list[str]:
        final = inventory.filter(F.col("task_id").isin(*batch) & F.col("status").isin("completed", "dead"))
        return [r.task_id for r in final.select("task_id").collect()]

    # A file younger than a download deadline may belong to a replayed task between download and upload.
    part_age = stale_part_age(settings.download.total_timeout_seconds)
    report = clean_cache(settings.cache_dir, part_max_age_seconds=part_age, final_ids=final_ids,
                         final_min_age_seconds=settings.download.total_timeout_seconds)  # fmt: skip
    log.info(
        "cache %s: removed %d stale part file(s) and %d file(s) of final tasks (%d bytes); kept %d; %d error(s)",
        settings.cache_dir, report.stale_parts, report.final_files, report.freed_bytes, report.kept_files,
        report.errors,
    )  # fmt: skip


def run_job(
    name: str,
    settings: Settings,
    *,
    available_now: bool = False,
    timeout: float | None = None,
    spark: SparkSession | None = None,
) -> int:
    """Run job `name` under the supervisor until it stops (available-now done, timeout, a signal)."""
    return run_stages([name], settings, available_now=available_now, timeout=timeout, spark=spark)


def run_stages(
    stages: Sequence[str],
    settings: Settings,
    *,
    available_now: bool = False,
    timeout: float | None = None,
    spark: SparkSession | None = None,
) -> int:
    """Run the queries of `stages` in one Spark application, supervised; returns the exit code."""
    owned = spark is None and settings.spark.master is not None
    spark = spark or session_for(settings)
    supervisor = Supervisor(spark, settings, JOBS, stages, available_now=available_now)
    for name in stages:
        log.info("%s: checkpoint %s", name, settings.checkpoint(name))
    try:
        return supervisor.run(timeout)
    except KeyboardInterrupt:
        return supervisor.stop()
    finally:
        flush_listener_events(spark)
        flush_metrics(spark)
        if owned:  # a session this process built (local runs): stop it before the JVM goes away
            spark.stop()


def job_main(name: str, argv: Sequence[str] | None = None) -> int:
    """The `main()` of job `name`: its console script (xact-<name>) and jobs/<name>.py call it.

    Arguments are the CLI's for that job: --env, --conf-dir, --set, --available-now, --timeout,
    --verbose. Known failures print one `error:` line and exit non-zero, without a traceback.
    """
    from pipeline_lib.cli import job_parser, load_args_settings

    args = job_parser(name).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_args_settings(args)
        return run_job(name, settings, available_now=args.available_now, timeout=args.timeout)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-run` and jobs/run.py: every stage (or --stages) in one application."""
    from pipeline_lib.cli import load_args_settings, run_parser

    args = run_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_args_settings(args)
        return run_stages(args.stages, settings, available_now=args.available_now, timeout=args.timeout)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def flush_listener_events(spark: SparkSession, timeout_ms: int = 10_000) -> None:
    """Wait until Spark has delivered queued listener events (the last progress line) to Python.

    Streaming listener events are asynchronous; a job that exits right after its query stops
    would otherwise lose the final progress event and log a py4j error. Best effort, bounded.
    """
    try:
        spark.sparkContext._jsc.sc().listenerBus().waitUntilEmpty(timeout_ms)  # no public API
    except Exception as exc:  # noqa: BLE001 - flushing must never fail a finished job
        log.debug("could not flush listener events: %s", exc)
