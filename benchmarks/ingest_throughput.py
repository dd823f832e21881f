"""Ingest throughput: events/s through the ingest job on this machine, 3 attachments per event.

    .venv/bin/python benchmarks/ingest_throughput.py --events 100000 --batch 25000

Starts its own broker on free loopback ports in a temporary directory, produces the events, runs
the ingest job (Trigger.AvailableNow) over them, and prints a table:
- end to end: first batch start to last batch end, including the Kafka writes and the Delta MERGE;
- per batch: median of Spark's processedRowsPerSecond, and where a warm batch's time goes
  (median seconds of each step of the batch writer, first batch left out: it warms the JVM);
- reference: the pure-Python decision (`ingest_record`) alone on one core, the ceiling per core.
The target (issue #3) is at least 5,000 events/s sustained.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline_lib.config import load_settings
from pipeline_lib.contracts import SourceRef
from pipeline_lib.events import ingest_record
from pipeline_lib.kafka_client import consume_all, create_topics, produce
from pipeline_lib.local.broker import LocalKafka, free_port
from pipeline_lib.local.samples import sample_event
from pipeline_lib.logs import setup_logging
from pipeline_lib.url_policy import UrlPolicy


def make_events(count: int) -> list[tuple[str, str]]:
    now = datetime.now(UTC)
    return [
        (
            f"bench-{i:07d}",
            json.dumps(sample_event(i, "https://files.example.com", trace_prefix="bench", now=now, attachments=3)),
        )
        for i in range(count)
    ]


def python_reference(events: list[tuple[str, str]]) -> float:
    policy = UrlPolicy(frozenset({"https"}))
    now = datetime.now(UTC)
    sample = events[: min(len(events), 20000)]
    start = time.perf_counter()
    for i, (_, value) in enumerate(sample):
        ingest_record(value.encode(), SourceRef("raw", 0, i), policy, now)
    return len(sample) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=25_000, help="kafka.max_offsets_per_trigger")
    args = parser.parse_args()
    setup_logging("WARNING")

    with tempfile.TemporaryDirectory(prefix="xact-bench-") as tmp:
        broker = LocalKafka(Path(tmp) / "broker", free_port(), free_port(), heap="512m")
        broker.start()
        try:
            settings = load_settings(
                "local",
                overrides={
                    "kafka": {"bootstrap_servers": broker.bootstrap, "max_offsets_per_trigger": args.batch},
                    "storage": {"root": f"{tmp}/var"},
                },
            )
            create_topics(broker.bootstrap, settings.topic_partitions())
            events = make_events(args.events)
            t0 = time.perf_counter()
            produce(settings, settings.topics.events_raw.name, events)
            produce_s = time.perf_counter() - t0
            reference = python_reference(events)

            from pipeline_lib.spark.ingest import run_ingest
            from pipeline_lib.spark.session import session_for
            from pipeline_lib.spark.sinks import IngestBatchWriter

            spark = session_for(settings)
            start = time.perf_counter()
            writer = IngestBatchWriter(settings)
            query = run_ingest(spark, settings, available_now=True, writer=writer)
            query.awaitTermination()
            wall = time.perf_counter() - start
            progress = [p for p in query.recentProgress if p["numInputRows"]]
            batch_rates = [p["processedRowsPerSecond"] for p in progress]
            busy = sum(p["durationMs"]["triggerExecution"] for p in progress) / 1000
            tasks = sum(1 for _ in consume_all(settings, settings.topics.pending.name))
        finally:
            broker.stop()

    rows = [
        ("events", f"{args.events:,}"),
        ("download tasks emitted", f"{tasks:,}"),
        ("micro-batches", str(len(progress))),
        ("produce (confluent-kafka)", f"{args.events / produce_s:,.0f} events/s"),
        ("ingest end to end (incl. query start)", f"{args.events / wall:,.0f} events/s ({wall:.1f} s)"),
        ("ingest, time inside batches", f"{args.events / busy:,.0f} events/s ({busy:.1f} s)"),
        ("ingest per batch, median", f"{statistics.median(batch_rates):,.0f} events/s"),
        ("reference: ingest_record, 1 core", f"{reference:,.0f} events/s"),
    ]
    warm = [s for s in writer.step_seconds[1:] if s] or writer.step_seconds
    for step in warm[0] if warm else {}:
        seconds = statistics.median(s[step] for s in warm)
        rows.append((f"warm batch step: {step}, median", f"{seconds:.2f} s"))
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 30}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")


if __name__ == "__main__":
    main()
