"""Replay under control against the real broker, Spark and Delta: the rate caps measured from the
records' own Kafka timestamps, chunked marking, cancel then resume, and a crash between publishing
and marking then resume. At rest every task is on the pending topic once per replay, one
generation later, and every row is `replayed` once."""

from __future__ import annotations

import re
import threading
from collections import Counter
from datetime import UTC, datetime

import pytest

from pipeline_lib.contracts import DownloadTask
from pipeline_lib.kafka_client import assigned_consumer, make_producer
from pipeline_lib.local.samples import sample_task
from pipeline_lib.replay import DlqSelection, ReplayRate
from pipeline_lib.spark import replay as spark_replay
from pipeline_lib.spark.tables import DLQ_SCHEMA, create_tables, dlq_table, read_table

pytestmark = pytest.mark.integration


def seed_dead_letters(spark, settings, hosts: dict[str, int]) -> list[DownloadTask]:
    """Tasks on the pending topic (their source records) and one open xact_dlq row each."""
    tasks = [
        sample_task(f"http://{host}/f{i}.pdf?sig=S", f"f{i}.pdf", trace_id=f"T-{host}-{i}")
        for host, count in hosts.items()
        for i in range(count)
    ]
    offsets: dict[str, tuple[int, int]] = {}
    producer = make_producer(settings)
    for task in tasks:

        def delivered(err, msg, task_id=task.task_id):
            assert err is None, err
            offsets[task_id] = (msg.partition(), msg.offset())

        producer.produce(settings.topics.pending.name, key=task.trace_id, value=task.encode(), on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0
    create_tables(spark, settings)
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = []
    for n, task in enumerate(tasks):
        partition, offset = offsets[task.task_id]
        row = dict.fromkeys(DLQ_SCHEMA.fieldNames())
        row.update(
            dlq_id=f"dlq-{n:05d}",
            stage="download",
            category="http_transient",
            reason="HTTP 503",
            failed_at=now,
            attempts=4,
            trace_id=task.trace_id,
            task_id=task.task_id,
            event_id=task.event_id,
            url=task.url.split("?")[0],
            host=task.url.split("/")[2],
            http_status=503,
            source_topic=settings.topics.pending.name,
            source_partition=partition,
            source_offset=offset,
            task_json="{}",
            status="open",
            replay_count=0,
            first_seen_at=now,
            updated_at=now,
            failed_date=now.date().isoformat(),
        )
        rows.append(row)
    spark.createDataFrame(rows, DLQ_SCHEMA).write.format("delta").mode("append").save(dlq_table(settings).path)
    return tasks


def published(settings, replay_id: str) -> list[tuple[DownloadTask, int]]:
    """The replay's tasks on the pending topic, each with its Kafka timestamp (ms)."""
    from confluent_kafka import TopicPartition

    topic = settings.topics.pending.name
    consumer = assigned_consumer(settings, "xact-test-read")
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        out = []
        for p in parts:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            consumer.assign([TopicPartition(topic, p, low)])
            while low < high:
                msg = consumer.poll(10)
                assert msg is not None and not msg.error()
                low = msg.offset() + 1
                task = DownloadTask.decode(msg.value())
                if task.replay_id == replay_id:
                    out.append((task, msg.timestamp()[1]))
        return sorted(out, key=lambda pair: pair[1])
    finally:
        consumer.close()


def statuses(spark, settings) -> Counter:
    return Counter((r.status, r.replay_count) for r in read_table(spark, settings, "dlq").collect())


def rate_of(times_ms: list[int]) -> float:
    return (len(times_ms) - 1) / ((times_ms[-1] - times_ms[0]) / 1000)


def test_a_replay_keeps_to_its_total_and_per_host_caps_and_marks_in_chunks(spark, make_kafka_settings):
    s = make_kafka_settings(replay__mark_chunk_rows=100, replay__progress_seconds=1)
    # d.test sets the pace (300 rows at 20/s: 15 s); while the others have rows too, the total
    # cap binds (40/s), and after them d.test goes alone at its own cap.
    seed_dead_letters(spark, s, {"a.test": 100, "b.test": 100, "d.test": 300})
    lines: list[str] = []
    rate = ReplayRate(total=40, per_host=20)
    dry = spark_replay.replay(spark, s, DlqSelection(), dry_run=True, rate=rate, emit=lines.append)
    assert "at 40 rows/s, 20 per host: would take about 15 s (host d.test (300 rows at 20/s) sets the pace)" in (
        dry.describe()
    )
    report = spark_replay.replay(spark, s, DlqSelection(), dry_run=False, rate=rate, emit=lines.append)
    assert len(report.replayed) == 500 and not report.cancelled

    sent = published(s, report.replay_id)
    assert Counter(t.task_id for t, _ in sent).most_common(1)[0][1] == 1 and len(sent) == 500
    assert {(t.attempt, t.replay_generation) for t, _ in sent} == {(0, 1)}
    last_shared = max(ts for t, ts in sent if "d.test" not in t.url)
    total = rate_of([ts for _, ts in sent if ts <= last_shared])
    d_host = rate_of([ts for t, ts in sent if "d.test" in t.url])
    shared = sum(1 for _, ts in sent if ts <= last_shared)
    print(f"measured: {total:.1f} rows/s in all over {shared} rows (cap 40), {d_host:.1f} rows/s to d.test (cap 20)")
    assert shared >= 350 and abs(total - 40) / 40 <= 0.2, total
    assert abs(d_host - 20) / 20 <= 0.2, d_host  # 300 rows
    for start in (ts for _, ts in sent):  # no second holds more than the caps (+1, +1 for ms rounding)
        second = [t for t, ts in sent if start <= ts < start + 1000]
        assert len(second) <= 42 and max(Counter(t.url.split("/")[2] for t in second).values()) <= 22

    assert statuses(spark, s) == {("replayed", 1): 500}
    history = spark.sql(f"DESCRIBE HISTORY delta.`{dlq_table(s).path}`").collect()
    merges = [h for h in history if h.operation == "MERGE"]
    assert len(merges) == 1 + 5  # the claim, then one commit per 100 rows marked
    progress = [line for line in lines if re.match(rf"replay {report.replay_id}: \d+ of 500 rows", line)]
    assert len(progress) >= 5 and progress[-1].startswith(f"replay {report.replay_id}: 500 of 500 rows (100.0 %)")


def test_a_cancelled_replay_resumes_where_it_stopped_and_publishes_each_task_once(spark, make_kafka_settings):
    s = make_kafka_settings(replay__mark_chunk_rows=25, replay__progress_seconds=0.2)
    seed_dead_letters(spark, s, {"a.test": 60, "b.test": 60})
    cancel = threading.Event()

    def emit(line: str) -> None:
        done = re.match(r"replay \S+: (\d+) of", line)
        if done and int(done.group(1)) >= 30:
            cancel.set()

    rate = ReplayRate(total=40, per_host=40)
    first = spark_replay.replay(spark, s, DlqSelection(), dry_run=False, rate=rate, cancel=cancel, emit=emit)
    assert first.cancelled and 30 <= len(first.replayed) < 120 and first.remaining == 120 - len(first.replayed)
    assert "--resume " + first.replay_id in first.describe()
    assert statuses(spark, s) == {("replayed", 1): len(first.replayed), ("replaying", 0): first.remaining}
    assert len(published(s, first.replay_id)) == len(first.replayed)
    # A new replay of the same selection takes nothing the first one holds, and says so.
    notes: list[str] = []
    other = spark_replay.replay(spark, s, DlqSelection(), dry_run=True, rate=rate, emit=notes.append)
    assert other.replayed == [] and any(f"--resume {first.replay_id}" in n for n in notes)

    # What the scheduled job runs: finish the stopped replay, then replay what is still open.
    lines: list[str] = []
    later = spark_replay.replay(
        spark, s, DlqSelection(), dry_run=False, rate=rate, resume_unfinished=True, emit=lines.append
    )
    assert later.replayed == [] and not later.cancelled
    assert any(
        line.startswith(f"resumed {first.replay_id}: replayed {first.remaining} dead letter(s)") for line in lines
    ), lines
    sent = published(s, first.replay_id)
    assert len(sent) == 120 and set(Counter(t.task_id for t, _ in sent).values()) == {1}
    assert statuses(spark, s) == {("replayed", 1): 120}
    again = spark_replay.replay(spark, s, DlqSelection(), dry_run=False, rate=rate, resume=first.replay_id)
    assert again.replayed == [] and len(published(s, first.replay_id)) == 120


def test_a_crash_between_publishing_and_marking_resumes_without_a_second_copy(spark, make_kafka_settings, monkeypatch):
    s = make_kafka_settings(replay__mark_chunk_rows=20)
    seed_dead_letters(spark, s, {"a.test": 50, "b.test": 30})
    real_mark, calls = spark_replay.mark_replayed, []

    def mark_then_crash(*args):
        calls.append(len(args[3]))
        if len(calls) == 2:  # chunk 2 is on Kafka; the process dies before its rows are marked
            raise RuntimeError("simulated crash")
        real_mark(*args)

    monkeypatch.setattr(spark_replay, "mark_replayed", mark_then_crash)
    rate = ReplayRate(total=100, per_host=60)
    with pytest.raises(RuntimeError, match="simulated crash"):
        spark_replay.replay(spark, s, DlqSelection(), dry_run=False, rate=rate)
    monkeypatch.setattr(spark_replay, "mark_replayed", real_mark)
    held = [r for r in read_table(spark, s, "dlq").collect() if r.status == "replaying"]
    replay_id = held[0].replay_id
    before = len(published(s, replay_id))
    assert statuses(spark, s)[("replayed", 1)] == 20 and len(held) == 60 and before >= 40

    resumed = spark_replay.replay(spark, s, DlqSelection(), dry_run=False, rate=rate, resume=replay_id)
    assert resumed.already_published == before - 20  # found on Kafka, marked, not sent again
    assert len(resumed.replayed) == 80 - before
    sent = published(s, replay_id)
    assert len(sent) == 80 and set(Counter(t.task_id for t, _ in sent).values()) == {1}
    assert {t.replay_generation for t, _ in sent} == {1}
    assert statuses(spark, s) == {("replayed", 1): 80}  # one row per dead letter, counted once
    assert read_table(spark, s, "dlq").select("dlq_id").distinct().count() == 80
