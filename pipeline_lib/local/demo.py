"""`xact-pipeline demo`: the whole loop, run the way users run it, on embedded defaults.

Starts the local broker (if not running) and a sample file server, produces sample events (plus a
few bad ones, one attachment that is gone for good and one whose server fails once), then runs
every stage under the supervisor of `xact-pipeline run`, with retry tiers of seconds instead of
minutes, until every task of the run is final: the one that failed once has been retried through
the first tier and completed. It prints counts per outcome, that retry's journey in one line,
`xact-pipeline health`'s verdicts and where the files and tables are. Each run uses fresh trace
ids, so its summary counts only its own records; tables and topics accumulate across runs (`make
clean` removes the local tables).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pipeline_lib.config import Settings
from pipeline_lib.kafka_client import consume_all, create_topics, delete_topics, produce
from pipeline_lib.local.broker import LocalKafka
from pipeline_lib.local.sample_server import SampleFileServer
from pipeline_lib.local.samples import sample_event
from pipeline_lib.logs import get_logger

log = get_logger("demo")
GOOD_EVENTS = 12
# The demo's retry tiers (seconds, not minutes): the task that fails once is back within them.
DEMO_RETRY_DELAYS = (2, 4)
# How long the demo waits for every task to be final before it reports what is missing.
DEMO_DEADLINE_SECONDS = 180


def _bad_events(prefix: str, base_url: str) -> list[tuple[str | None, str]]:
    hostile = sample_event(999, base_url, trace_prefix=prefix, attachments=1)
    data = hostile["data"] if isinstance(hostile["data"], dict) else json.loads(hostile["data"])
    data["attachments"] = data["attachments"] + ["ftp://files.example.com/a.pdf"]
    hostile["data"] = data
    failing = sample_event(998, base_url, trace_prefix=prefix, attachments=0)
    failing["data"] = {
        **(failing["data"] if isinstance(failing["data"], dict) else json.loads(failing["data"])),
        "attachments": [
            f"{base_url}/files/998/missing.pdf?mode=status&status=404",  # permanent: dead-lettered
            f"{base_url}/files/998/busy.pdf?mode=flaky&fail=1",  # 503 once: retried, then completed
        ],
    }
    return [
        (failing["traceId"], json.dumps(failing)),
        (f"{prefix}-bad-1", "this is not JSON"),
        (
            f"{prefix}-bad-2",
            json.dumps({"type": "x.documentsReceived", "utcDateTime": "2026-01-01T00:00:00Z", "data": {}}),
        ),
        (hostile["traceId"], json.dumps(hostile)),
    ]


def _data(event: dict) -> dict:
    """An event's `data` (upstream sends it as an object or as a JSON string)."""
    return event["data"] if isinstance(event["data"], dict) else json.loads(event["data"])


def demo_settings(settings: Settings) -> Settings:
    """The demo's settings: short retry tiers (DEMO_RETRY_DELAYS) so a retry completes in the run."""
    return settings.model_copy(
        update={"retry": settings.retry.model_copy(update={"delays_seconds": DEMO_RETRY_DELAYS})}
    )


def _final_rows(spark, settings: Settings, prefix: str) -> dict[str, tuple[str, int]]:
    """task id -> (status, attempts) of this run's xact_attachments rows."""
    from pipeline_lib.spark.tables import table_or_none

    inventory = table_or_none(spark, settings, "attachments")
    if inventory is None:
        return {}
    rows = inventory.filter(inventory.trace_id.startswith(prefix)).select("task_id", "status", "attempts").collect()
    return {r.task_id: (r.status, r.attempts) for r in rows}


def _retry_journey(settings: Settings, spark, prefix: str) -> str:
    """One line: the task that failed once, from its first failure to its inventory row."""
    from pipeline_lib.contracts import H_RETRY_DUE_AT, H_RETRY_FORWARDED_AT, H_RETRY_TICK, H_TASK_ID, DownloadTask

    retries = [
        (DownloadTask.decode(v), h)
        for k, v, h in consume_all(settings, settings.retry_topics[0], idle_timeout=3)
        if v is not None and (k or "").startswith(prefix) and H_RETRY_TICK not in h
    ]
    if not retries:
        return "no task of this run went to a retry tier"
    task, headers = retries[0]
    failed = (task.history or [{}])[-1]
    forwarded = [
        h
        for _, _, h in consume_all(settings, settings.topics.pending.name, idle_timeout=3)
        if h.get(H_TASK_ID) == task.task_id and H_RETRY_FORWARDED_AT in h
    ]
    status, attempts = _final_rows(spark, settings, prefix).get(task.task_id, ("not final", 0))
    name = task.url.split("?")[0].rsplit("/", 1)[-1]
    back = (
        f"forwarded at {forwarded[0][H_RETRY_FORWARDED_AT][11:19]} (due {headers.get(H_RETRY_DUE_AT, '?')[11:19]})"
        if forwarded
        else "not forwarded yet"
    )
    return (
        f"{name}: attempt 0 failed at {str(failed.get('at', '?'))[11:19]} ({failed.get('category', '?')}, "
        f"HTTP {failed.get('http_status', '?')}) -> {settings.retry_topics[0]} -> {back} -> "
        f"attempt {max(attempts - 1, 0)} {status}"
    )


def run_demo(settings: Settings) -> int:
    started = time.monotonic()
    settings = demo_settings(settings)
    prefix = f"demo-{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:4]}"
    broker = LocalKafka.from_settings(settings)
    we_started_broker = broker.status().state != "running"
    print(f"[1/5] broker: {broker.start().describe()}")
    checkpoints = Path(settings.storage.resolve(settings.storage.checkpoint_root))
    if not checkpoints.exists():  # fresh local state (first run, `make clean`): no queries' offsets
        # The broker keeps its topics across `make clean`. Fresh queries would read them from the
        # start: earlier runs' events, whose file servers are gone, would fail against this one.
        dropped = delete_topics(settings.kafka.bootstrap_servers, settings.topic_partitions())
        if dropped:
            print(f"      fresh local state: emptied {len(dropped)} topics of earlier runs")
    create_topics(settings.kafka.bootstrap_servers, settings.topic_partitions())

    with SampleFileServer() as files:
        print(f"[2/5] sample attachments served at {files.base_url}/files/")
        now = datetime.now(UTC)
        good = [sample_event(i, files.base_url, trace_prefix=prefix, now=now) for i in range(GOOD_EVENTS)]
        records = [(e["traceId"], json.dumps(e)) for e in good]
        records.append(records[0])  # a duplicate delivery: must not produce a second set of tasks
        records += _bad_events(prefix, files.base_url)
        # Tasks: every good attachment, the failing event's two, the hostile event's one allowed URL.
        expected = sum(len(_data(e)["attachments"]) for e in good) + 2 + 1
        produce(settings, settings.topics.events_raw.name, records)
        print(
            f"[3/5] produced {len(records)} events to {settings.topics.events_raw.name} "
            f"({GOOD_EVENTS} good, 1 duplicate, 1 with failing attachments, {len(records) - GOOD_EVENTS - 2} bad); "
            f"trace ids {prefix}-*"
        )

        from pipeline_lib.config import STAGES
        from pipeline_lib.spark.health_check import health_command
        from pipeline_lib.spark.jobs import JOBS
        from pipeline_lib.spark.progress import flush_listener_events, flush_metrics
        from pipeline_lib.spark.session import session_for
        from pipeline_lib.spark.supervisor import Supervisor

        spark = session_for(settings)
        supervisor = Supervisor(spark, settings, JOBS, STAGES)
        runner = threading.Thread(target=supervisor.run, name="demo-run", daemon=True)
        delays = ", ".join(f"{d} s" for d in DEMO_RETRY_DELAYS)
        print(
            f"[4/5] xact-pipeline run: every stage, supervised (retry tiers {delays}), until {expected} tasks are final"
        )
        runner.start()
        final: dict[str, tuple[str, int]] = {}
        deadline = time.monotonic() + DEMO_DEADLINE_SECONDS
        said = -1
        while time.monotonic() < deadline:
            time.sleep(2)
            final = {t: v for t, v in _final_rows(spark, settings, prefix).items() if v[0] in ("completed", "dead")}
            if len(final) != said:
                said = len(final)
                print(f"      {said}/{expected} tasks final after {time.monotonic() - started:.0f}s")
            if len(final) >= expected:
                break
        supervisor.request_stop()
        runner.join(120)
        flush_listener_events(spark)
        flush_metrics(spark)
        done = len(final) >= expected

        events = spark.read.format("delta").load(settings.table_path("events"))
        mine = events.filter(events.trace_id.startswith(prefix))
        event_rows = mine.count()
        with_attachments = mine.filter("attachment_count > 0").count()
        statuses: dict[str, int] = {}
        for status, _ in _final_rows(spark, settings, prefix).values():
            statuses[status] = statuses.get(status, 0) + 1
        dlq_ids = {
            r.dlq_id for r in spark.read.format("delta").load(settings.table_path("dlq")).select("dlq_id").collect()
        }
        journey = _retry_journey(settings, spark, prefix)

        pending = sum(
            1
            for k, _, _ in consume_all(settings, settings.topics.pending.name, idle_timeout=3)
            if k and k.startswith(prefix)
        )
        dead = [
            json.loads(v or b"{}")
            for k, v, _ in consume_all(settings, settings.topics.dlq.name, idle_timeout=3)
            if prefix in (v or b"").decode("utf-8", "replace") or (k or "").startswith(prefix)
        ]
        cached = sum(
            1
            for k, _, _ in consume_all(settings, settings.topics.cached.name, idle_timeout=3)
            if (k or "").startswith(prefix)
        )
        dlq_rows = sum(1 for d in dead if d.get("dlq_id") in dlq_ids)
        lake = Path(settings.storage.resolve(settings.storage.lake.local_root)) / settings.storage.lake.files_prefix
        uploaded = sum(1 for p in lake.rglob("*") if p.is_file() and f"/{prefix}-" in str(p))

        print("\nSummary")
        print(f"  xact_events rows            {event_rows:5d}  ({with_attachments} with attachments)")
        print(f"  download tasks (pending)    {pending:5d}  on {settings.topics.pending.name} (retries included)")
        cached_topic = settings.topics.cached.name
        if settings.upload.mode == "combined":  # downloaded and uploaded in one pass; this is what it handed over
            print(f"  left for the upload stage   {cached:5d}  on {cached_topic} (the lake could not take them)")
        else:
            print(f"  downloaded to the cache     {cached:5d}  on {cached_topic}, files in {settings.cache_dir}")
        print(f"  uploaded to the lake        {uploaded:5d}  files under {lake}")
        print(f"  retried                     {journey}")
        for stage in ("ingest", "download"):
            mine_dead = [d for d in dead if d.get("stage") == stage]
            print(f"  dead letters ({stage + ')':9s}     {len(mine_dead):5d}  on {settings.topics.dlq.name}")
            for d in mine_dead:
                print(f"    - [{d.get('category')}] {d.get('reason')}")
        summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none"
        print(f"  xact_attachments rows       {sum(statuses.values()):5d}  ({summary})")
        print(f"  xact_dlq rows               {dlq_rows:5d}  (`xact-pipeline dlq list`, notebooks/dlq_analysis.ipynb)")
        if not done:
            print(
                f"  NOT DONE: {len(final)} of {expected} tasks final after {DEMO_DEADLINE_SECONDS}s (see the log above)"
            )
        print("\nHealth (`xact-pipeline health`)")
        health_command(settings, spark=spark)
        # Stop Spark before the broker: its cached Kafka producers would otherwise keep reconnecting.
        spark.stop()

    print("\nWhere things are")
    print(f"  xact_events table   {settings.table_path('events')}")
    print(f"  xact_attachments    {settings.table_path('attachments')}")
    print(f"  xact_dlq            {settings.table_path('dlq')}")
    print(f"  checkpoints         {settings.storage.resolve(settings.storage.checkpoint_root)}")
    print(f"  broker log          {broker.log_file}")
    print("  inspect a topic     xact-pipeline tail xact.downloads.pending")
    if we_started_broker:
        broker.stop()
        print("  broker stopped (start it with `xact-pipeline kafka start` to keep it running)")
    print(f"\ndemo finished in {time.monotonic() - started:.0f}s")
    return 0 if done else 1
