"""The Spark entry module: every job's `main()`, the registry of jobs by stage name, and the one
code path every entry point takes (the console scripts, the jobs/*.py files that spark-submit and
Fabric Spark Job Definitions run, and the CLI's job commands and `run`).

    <job>_main(): parse arguments (arguments.py) -> load settings -> set up logging -> get the session
        -> the supervisor starts the stage's query for each stage and watches it (spark/supervisor.py)

Only entry points build a session; every stage's `run_*` function takes the session it is given.
Nothing below this module imports it: the stage modules declare their queries, this one runs them.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pyspark.sql import SparkSession

from pipeline_lib.arguments import job_parser, load_args_settings, run_parser
from pipeline_lib.config import STAGES, Settings, Stage
from pipeline_lib.errors import PipelineError
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.dlq_table import run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.ingest import run_ingest
from pipeline_lib.spark.progress import flush_listener_events, flush_metrics
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
from pipeline_lib.spark.session import session_for
from pipeline_lib.spark.supervisor import JobStarter, Supervisor
from pipeline_lib.spark.upload import run_upload

log = get_logger("job")

# Stage name (config.STAGES, the one list of them) -> the function that starts its query.
JOBS: dict[str, JobStarter] = dict(
    zip(STAGES, (run_ingest, run_download, run_upload, run_retry_scheduler, run_results, run_dlq_table), strict=True)
)


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

    Arguments: --env, --conf-dir, --set, --available-now, --timeout, --verbose. Known failures
    print one `error:` line and exit non-zero, without a traceback.
    """
    args = job_parser(name).parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_args_settings(args)
        return run_job(name, settings, available_now=args.available_now, timeout=args.timeout)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def run_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-run` and jobs/run.py: every stage (or --stages) in one application."""
    args = run_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        settings = load_args_settings(args)
        return run_stages(args.stages, settings, available_now=args.available_now, timeout=args.timeout)
    except PipelineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def ingest_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-ingest` and jobs/ingest.py."""
    return job_main(Stage.INGEST, argv)


def download_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-download` and jobs/download.py."""
    return job_main(Stage.DOWNLOAD, argv)


def upload_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-upload` and jobs/upload.py."""
    return job_main(Stage.UPLOAD, argv)


def retry_scheduler_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-retry-scheduler` and jobs/retry_scheduler.py."""
    return job_main(Stage.RETRY_SCHEDULER, argv)


def results_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-results` and jobs/results.py."""
    return job_main(Stage.RESULTS, argv)


def dlq_table_main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-dlq-table` and jobs/dlq_table.py."""
    return job_main(Stage.DLQ_TABLE, argv)
