"""`xact-pipeline demo`: the stages that exist so far, end to end, on embedded defaults.

Starts the local broker (if not running) and a sample file server, produces sample events (plus a
few bad ones and one whose attachments fail), runs ingest, download, upload, results and the DLQ
table job until each has processed them, then prints counts per outcome and where the files and
tables are. Each run uses fresh trace ids, so its summary counts only its own records; tables and
topics accumulate across runs (`make clean` removes the local tables).
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from pipeline_lib.config import Settings, Stage
from pipeline_lib.kafka_client import consume_all, create_topics, produce
from pipeline_lib.local.broker import LocalKafka
from pipeline_lib.local.sample_server import SampleFileServer
from pipeline_lib.local.samples import sample_event
from pipeline_lib.logs import get_logger

log = get_logger("demo")
GOOD_EVENTS = 12


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
            f"{base_url}/files/998/busy.pdf?mode=status&status=503",  # transient: first retry tier
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


def run_demo(settings: Settings) -> int:
    started = time.monotonic()
    prefix = f"demo-{datetime.now(UTC):%H%M%S}-{uuid.uuid4().hex[:4]}"
    broker = LocalKafka.from_settings(settings)
    we_started_broker = broker.status().state != "running"
    print(f"[1/4] broker: {broker.start().describe()}")
    create_topics(settings.kafka.bootstrap_servers, settings.topic_partitions())

    with SampleFileServer() as files:
        print(f"[2/4] sample attachments served at {files.base_url}/files/")
        now = datetime.now(UTC)
        good = [sample_event(i, files.base_url, trace_prefix=prefix, now=now) for i in range(GOOD_EVENTS)]
        records = [(e["traceId"], json.dumps(e)) for e in good]
        records.append(records[0])  # a duplicate delivery: must not produce a second set of tasks
        records += _bad_events(prefix, files.base_url)
        produce(settings, settings.topics.events_raw.name, records)
        print(
            f"[3/4] produced {len(records)} events to {settings.topics.events_raw.name} "
            f"({GOOD_EVENTS} good, 1 duplicate, 1 with failing attachments, {len(records) - GOOD_EVENTS - 2} bad); "
            f"trace ids {prefix}-*"
        )

        from pipeline_lib.spark.dlq_table import run_dlq_table
        from pipeline_lib.spark.download import run_download
        from pipeline_lib.spark.ingest import run_ingest
        from pipeline_lib.spark.progress import flush_listener_events, flush_metrics
        from pipeline_lib.spark.results import run_results
        from pipeline_lib.spark.session import session_for
        from pipeline_lib.spark.upload import run_upload

        spark = session_for(settings)
        jobs = (
            (Stage.INGEST, run_ingest),
            (Stage.DOWNLOAD, run_download),
            (Stage.UPLOAD, run_upload),
            (Stage.RESULTS, run_results),
            (Stage.DLQ_TABLE, run_dlq_table),
        )
        for name, start in jobs:
            print(f"[4/4] running {name} until it has consumed everything produced")
            start(spark, settings, available_now=True).awaitTermination()

        events = spark.read.format("delta").load(settings.table_path("events"))
        mine = events.filter(events.trace_id.startswith(prefix))
        event_rows = mine.count()
        with_attachments = mine.filter("attachment_count > 0").count()
        inventory = spark.read.format("delta").load(settings.table_path("attachments"))
        mine_rows = inventory.filter(inventory.trace_id.startswith(prefix))
        statuses: dict[str, int] = {r["status"]: r["count"] for r in mine_rows.groupBy("status").count().collect()}
        dlq_ids = {
            r.dlq_id for r in spark.read.format("delta").load(settings.table_path("dlq")).select("dlq_id").collect()
        }
        # Stop Spark before the broker: its cached Kafka producers would otherwise keep reconnecting.
        flush_listener_events(spark)
        flush_metrics(spark)
        spark.stop()

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
    retrying = sum(
        1 for k, _, _ in consume_all(settings, settings.retry_topics[0], idle_timeout=3) if (k or "").startswith(prefix)
    )

    print("\nSummary")
    print(f"  xact_events rows            {event_rows:5d}  ({with_attachments} with attachments)")
    print(f"  download tasks (pending)    {pending:5d}  on {settings.topics.pending.name}")
    cached_topic = settings.topics.cached.name
    if settings.upload.mode == "combined":  # downloaded and uploaded in one pass; this is what it handed over
        print(f"  left for the upload stage   {cached:5d}  on {cached_topic} (the lake could not take them)")
    else:
        print(f"  downloaded to the cache     {cached:5d}  on {cached_topic}, files in {settings.cache_dir}")
    print(f"  uploaded to the lake        {uploaded:5d}  files under {lake}")
    print(
        f"  waiting for a retry         {retrying:5d}  on {settings.retry_topics[0]} "
        "(`xact-pipeline retry-scheduler` moves it back when due)"
    )
    for stage in ("ingest", "download"):
        mine_dead = [d for d in dead if d.get("stage") == stage]
        print(f"  dead letters ({stage + ')':9s}     {len(mine_dead):5d}  on {settings.topics.dlq.name}")
        for d in mine_dead:
            print(f"    - [{d.get('category')}] {d.get('reason')}")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())) or "none"
    print(f"  xact_attachments rows       {sum(statuses.values()):5d}  ({summary})")
    print(f"  xact_dlq rows               {dlq_rows:5d}  (`xact-pipeline dlq list`, notebooks/dlq_analysis.ipynb)")
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
    return 0
