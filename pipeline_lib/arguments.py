"""The arguments every entry point takes, and the settings they name: one module below both the
`xact-pipeline` command line (cli.py) and the jobs' own entry points (spark/jobs.py), so neither
imports the other.

    --env, --conf-dir, --set KEY=VALUE, --verbose        every command and job
    --available-now, --timeout                           every streaming job, and `run`
    --stages ingest,download,...                         `run` only
"""

from __future__ import annotations

import argparse

from pipeline_lib.config import STAGES, Settings, load_settings
from pipeline_lib.logs import setup_logging


def common_arguments() -> argparse.ArgumentParser:
    """The arguments every command and job takes: where settings come from, and how loud to be."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--env", default="local", help="local | fabric | databricks | path/to/overlay.yaml")
    common.add_argument("--conf-dir", help="folder with base.yaml and the overlays (default: the project's conf/)")
    common.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set kafka.bootstrap_servers=127.0.0.1:9092",
    )
    common.add_argument(
        "--verbose", action="store_true", help="debug logging, and Spark's own warnings (logging.spark_level WARN)"
    )
    return common


def job_arguments(parser: argparse.ArgumentParser) -> None:
    """What a streaming job takes besides the common arguments."""
    parser.add_argument("--available-now", action="store_true", help="process what is in Kafka now, then stop")
    parser.add_argument("--timeout", type=float, help="stop after this many seconds")


def job_parser(job: str) -> argparse.ArgumentParser:
    """The parser of one job's own entry point (console script xact-<job>, jobs/<job>.py)."""
    parser = argparse.ArgumentParser(
        prog=f"xact-{job}", description=f"the {job} streaming job", parents=[common_arguments()]
    )
    job_arguments(parser)
    return parser


def _stages(text: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if not stages or unknown:
        raise argparse.ArgumentTypeError(f"choose stages from {', '.join(STAGES)} (comma-separated)")
    return stages


def run_arguments(parser: argparse.ArgumentParser) -> None:
    """What `run` takes besides the common arguments: a job's, and --stages."""
    job_arguments(parser)
    parser.add_argument(
        "--stages",
        type=_stages,
        default=list(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)} (default: all)",
    )


def run_parser() -> argparse.ArgumentParser:
    """The parser of `xact-run` / jobs/run.py: every stage in one application."""
    parser = argparse.ArgumentParser(
        prog="xact-run", description="every stage in one Spark application, supervised", parents=[common_arguments()]
    )
    run_arguments(parser)
    return parser


def load_args_settings(args: argparse.Namespace) -> Settings:
    """The settings the arguments name, with logging set up from them."""
    overrides = list(args.overrides)
    if args.verbose:
        overrides += ["logging.level=DEBUG", "logging.spark_level=WARN"]
    settings = load_settings(args.env, conf_dir=args.conf_dir, overrides=overrides)
    setup_logging(settings.logging.level, settings.logging.format)
    return settings
