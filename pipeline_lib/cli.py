"""`xact-pipeline`: one entry point for the jobs and the local tooling.

    xact-pipeline kafka start|stop|status|topics|reset     the local single-node broker
    xact-pipeline tables create|maintain                   create the Delta tables (never replaces one); OPTIMIZE+VACUUM
    xact-pipeline ingest|download|upload|retry-scheduler|results|dlq-table   a streaming job each
    xact-pipeline run [--stages ingest,download,...]      every stage in one Spark application, supervised
    xact-pipeline dlq list|replay|resolve [filters]        inspect, replay (--dry-run) or resolve dead letters
    xact-pipeline produce-samples --count 20               sample claim events onto xact.events.raw
    xact-pipeline tail xact.downloads.pending              print messages of a topic
    xact-pipeline config show                              the resolved settings (secrets never shown)
    xact-pipeline health [--task]                          a verdict per stage; exit 0 ok, 1 warn, 2 failing
    xact-pipeline demo                                     everything above, end to end, with a summary
    xact-pipeline notebooks [--out var/reports]            execute the analyst notebooks to HTML

Every subcommand takes --env (local, fabric, databricks or an overlay path), --conf-dir and
--set key.path=value. Known failures print one `error:` line that says what to do, no traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence

from pipeline_lib.arguments import common_arguments, job_arguments, load_args_settings, run_arguments
from pipeline_lib.config import STAGES, Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.logs import get_logger

log = get_logger("cli")


def build_parser() -> argparse.ArgumentParser:
    common = common_arguments()
    parser = argparse.ArgumentParser(prog="xact-pipeline", description=__doc__.split("\n\n")[0], parents=[common])
    sub = parser.add_subparsers(dest="command", required=True)

    kafka = sub.add_parser("kafka", parents=[common], help="run the local single-node Kafka broker")
    kafka.add_argument("action", choices=["start", "stop", "status", "topics", "reset"])

    tables = sub.add_parser("tables", parents=[common], help="Delta table administration")
    tables.add_argument("action", choices=["create", "maintain"])
    tables.add_argument(
        "--retain-hours", type=int, default=168, help="VACUUM retention for `maintain` (default 7 days)"
    )

    for job in STAGES:
        job_arguments(sub.add_parser(job, parents=[common], help=f"run the {job} streaming job"))
    run_arguments(sub.add_parser("run", parents=[common], help="every stage in one Spark application, supervised"))
    samples = sub.add_parser("produce-samples", parents=[common], help="produce sample claim events")
    samples.add_argument("--count", type=int, default=10)
    samples.add_argument("--base-url", default="http://127.0.0.1:8765", help="where the sample attachments are served")

    tail = sub.add_parser("tail", parents=[common], help="print the messages of a topic")
    tail.add_argument("topic")
    tail.add_argument("--max", type=int, default=20, help="stop after this many messages")
    tail.add_argument("--timeout", type=float, default=5.0, help="stop after this many idle seconds")

    dlq = sub.add_parser("dlq", parents=[common], help="list, replay or resolve rows of the xact_dlq table")
    dlq.add_argument("action", choices=["list", "replay", "resolve"])
    dlq.add_argument("--task-id", action="append", default=[], help="repeatable")
    dlq.add_argument("--trace-id", action="append", default=[], help="repeatable")
    dlq.add_argument("--category", action="append", default=[], help="e.g. http_transient, expired; repeatable")
    dlq.add_argument("--host", action="append", default=[], help="source host; repeatable")
    dlq.add_argument("--stage", action="append", default=[], help="ingest, download, upload, ...; repeatable")
    dlq.add_argument("--since", help="failed at or after (ISO 8601)")
    dlq.add_argument("--until", help="failed before (ISO 8601)")
    dlq.add_argument("--status", action="append", default=[], help="for list: open, replaying, replayed, resolved")
    dlq.add_argument("--dry-run", action="store_true", help="replay: show what would be replayed, change nothing")
    dlq.add_argument("--force", action="store_true", help="replay: include rows replayed before")
    dlq.add_argument("--note", help="stored on the rows (required for resolve)")
    dlq.add_argument("--rate", type=float, help="replay: tasks per second in all (default replay.rows_per_second)")
    dlq.add_argument(
        "--host-rate", type=float, help="replay: tasks per second to one source host (replay.rows_per_second_per_host)"
    )
    dlq.add_argument(
        "--resume", metavar="REPLAY_ID", help="replay: finish a stopped or cancelled replay (its own selection)"
    )
    dlq.add_argument(
        "--resume-unfinished",
        action="store_true",
        help="replay: first finish stopped replays holding rows of the selection (scheduled runs)",
    )

    config = sub.add_parser("config", parents=[common], help="show the resolved settings")
    config.add_argument("action", choices=["show"])

    health = sub.add_parser(
        "health", parents=[common], help="a verdict per stage (ok, warn, failing); exit 0 ok, 1 warn, 2 failing"
    )
    health.add_argument(
        "--task",
        action="store_true",
        help="as the scheduled health task: exit non-zero on failing only (on warn too with health.fail_on_warn)",
    )

    sub.add_parser("demo", parents=[common], help="run the pipeline end to end on sample data")

    notebooks = sub.add_parser("notebooks", parents=[common], help="execute the analyst notebooks to HTML reports")
    notebooks.add_argument("--out", default="var/reports", help="where the executed notebooks and HTML go")
    notebooks.add_argument("names", nargs="*", help="notebook file names (default: all)")
    return parser


def _kafka(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline_lib.kafka_client import create_topics, list_topics
    from pipeline_lib.kafka_options import librdkafka_config
    from pipeline_lib.local.broker import LocalKafka

    broker = LocalKafka.from_settings(settings)
    if args.action == "start":
        print(broker.start().describe())
        created = create_topics(settings.kafka.bootstrap_servers, settings.topic_partitions())
        print(f"topics: {len(settings.topic_partitions())} configured, {len(created)} created")
    elif args.action == "stop":
        print(broker.stop().describe())
    elif args.action == "status":
        status = broker.status()
        print(status.describe())
        return 0 if status.state == "running" else 3
    elif args.action == "reset":
        broker.reset()
        print(f"broker stopped and its data in {broker.data_dir} deleted")
    else:
        topics = list_topics(settings.kafka.bootstrap_servers, librdkafka_config(settings.kafka))
        wanted = settings.topic_partitions()
        for name in sorted(set(topics) | set(wanted)):
            have = topics.get(name)
            note = "" if name not in wanted else (" MISSING" if have is None else "")
            print(f"{name:45s} {have if have is not None else '-':>3} partitions{note}")
    return 0


def _config_show(settings: Settings) -> int:
    data = settings.model_dump(mode="json")
    data["derived"] = {
        "retry_topics": list(settings.retry_topics),
        "max_attempts": settings.retry.max_attempts,
        "tables": {t: settings.table_path(t) for t in ("events", "attachments", "dlq", "metrics")},
        "checkpoint_root": settings.storage.resolve(settings.storage.checkpoint_root),
    }
    # Settings hold secret references, never values; free-form client options are masked all the
    # same, in case someone put a password or a JAAS config there.
    from pipeline_lib.kafka_options import printable

    kafka = data["kafka"]
    for options in ("producer_options", "consumer_options", "librdkafka_options"):
        kafka[options] = printable({k: str(v) for k, v in kafka[options].items()})
    data["spark"]["extra_conf"] = printable({k: str(v) for k, v in data["spark"]["extra_conf"].items()})
    print(json.dumps(data, indent=2))
    return 0


def _dlq(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline_lib.replay import (
        STATUSES,
        DlqSelection,
        SelectionError,
        check_replay_id,
        replay_rate,
        resolve_note,
    )

    default_statuses = STATUSES if args.action == "list" else ("open",)
    selection = DlqSelection(
        task_ids=tuple(args.task_id),
        trace_ids=tuple(args.trace_id),
        categories=tuple(args.category),
        hosts=tuple(args.host),
        stages=tuple(args.stage),
        since=args.since,
        until=args.until,
        statuses=tuple(args.status) or default_statuses,
    )
    if args.action == "resolve":
        resolve_note(args.note)  # before Spark starts: a missing note is a usage error
    if args.action != "list":
        selection.check_replayable()
    rate = replay_rate(settings, args.rate, args.host_rate)  # a bad rate, too
    if args.resume is not None:
        check_replay_id(args.resume)
    if args.resume is not None and (
        args.dry_run or args.force or args.resume_unfinished or selection != DlqSelection(statuses=default_statuses)
    ):
        raise SelectionError(
            "--resume finishes a replay with its own selection: drop the filters, --force, --dry-run and "
            "--resume-unfinished "
            "(`xact-pipeline dlq list --status replaying` shows its rows)"
        )
    from pipeline_lib.spark import replay as dlq_replay
    from pipeline_lib.spark.session import session_for

    spark = session_for(settings)
    if args.action == "list":
        rows = dlq_replay.select_dead_letters(spark, settings, selection)
        dlq_replay.dlq_summary(rows).show(50, truncate=False)
        rows.select("dlq_id", "status", "stage", "category", "host", "attempts", "failed_at", "reason").orderBy(
            "failed_at"
        ).show(50, truncate=80)
        return 0
    if args.action == "resolve":
        count = dlq_replay.resolve(spark, settings, selection, args.note)
        print(f"resolved {count} dead letter(s) [{selection.describe()}]")
        return 0
    cancel = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: cancel.set())  # a cancelled job run: stop, resumable
    try:
        report = dlq_replay.replay(
            spark,
            settings,
            selection,
            dry_run=args.dry_run,
            force=args.force,
            note=args.note,
            rate=rate,
            resume=args.resume,
            cancel=cancel,
            emit=lambda line: print(line, file=sys.stderr, flush=True),
            resume_unfinished=args.resume_unfinished,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
    print(report.describe())
    return 130 if report.cancelled else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_args_settings(args)
        return _dispatch(args, settings)
    except PipelineError as exc:  # every error raised on purpose: one line that says what to do
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "kafka":
        return _kafka(args, settings)
    if args.command == "config":
        return _config_show(settings)
    if args.command == "produce-samples":
        from pipeline_lib.local.samples import produce_sample_events

        sent = produce_sample_events(settings, args.count, args.base_url)
        print(f"produced {sent} events to {settings.topics.events_raw.name}")
        return 0
    if args.command == "tail":
        from pipeline_lib.kafka_client import tail_topic

        for line in tail_topic(settings, args.topic, max_messages=args.max, idle_timeout=args.timeout):
            print(line)
        return 0
    if args.command == "notebooks":
        from pathlib import Path

        from pipeline_lib.local.reports import run_notebooks

        for path in run_notebooks(Path(args.out), args.env, args.overrides, args.names):
            print(f"{path.with_suffix('.html')}")
        return 0
    if args.command == "demo":
        from pipeline_lib.local.demo import run_demo

        return run_demo(settings)
    if args.command == "dlq":
        return _dlq(args, settings)
    # Spark-backed commands: only these import pyspark.
    if args.command == "health":
        from pipeline_lib.spark.health_check import health_command

        return health_command(settings, task=args.task)
    if args.command == "tables":
        from pipeline_lib.spark import table_admin

        if args.action == "maintain":
            table_admin.maintain(settings, args.retain_hours)
        else:
            table_admin.create_all_tables(settings)
        return 0
    from pipeline_lib.spark import jobs

    if args.command == "run":
        return jobs.run_stages(args.stages, settings, available_now=args.available_now, timeout=args.timeout)
    return jobs.run_job(args.command, settings, available_now=args.available_now, timeout=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
