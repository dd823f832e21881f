"""The results job against the real broker, Spark and Delta: one row per task, bad input dead-lettered."""

from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline_lib.contracts import AttachmentResult, DeadLetter
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.tables import attachments_table, maintain_tables
from tests.streaming import run_available_now

pytestmark = pytest.mark.integration


T1, T2 = "1" * 32, "2" * 32  # task ids are 32 hex characters (ids.py)


def result(task, attempt, status, at, **kw) -> str:
    return AttachmentResult(
        task_id=task,
        trace_id="T1",
        attempt=attempt,
        stage="upload" if status == "completed" else "download",
        status=status,
        occurred_at=at,
        event_date="2026-11-20",
        blob_path=f"s/A/T1/{task}.pdf",
        **kw,
    ).encode()


def run_once(spark, settings):
    run_available_now(run_results, spark, settings)


def test_results_job_keeps_one_row_per_task_across_batches_and_dead_letters_bad_input(spark, kafka_settings):
    topic = kafka_settings.topics.results.name
    produce(
        kafka_settings,
        topic,
        [
            ("t1", result(T1, 0, "retrying", "2026-11-27T10:00:00Z", http_status=503)),
            ("t1", result(T1, 1, "completed", "2026-11-27T10:10:00Z", bytes=42, sha256="ab" * 32)),
            ("t1", result(T1, 1, "completed", "2026-11-27T10:10:00Z", bytes=42, sha256="ab" * 32)),  # duplicate
            ("t1", "garbage"),  # same key: 4th record of t1's partition, offset 3
            ("t2", result(T2, 0, "dead", "2026-11-27T10:05:00Z", error_category="permanent", http_status=404)),
        ],
    )
    run_once(spark, kafka_settings)
    # A late, older outcome of t1 arrives in a later batch after a restart.
    produce(kafka_settings, topic, [("t1", result(T1, 0, "retrying", "2026-11-27T09:59:00Z", http_status=429))])
    run_once(spark, kafka_settings)

    rows = {r.task_id: r for r in spark.read.format("delta").load(kafka_settings.table_path("attachments")).collect()}
    assert set(rows) == {T1, T2}
    assert (rows[T1].status, rows[T1].attempts, rows[T1].bytes, rows[T1].file_type) == (
        "completed",
        2,
        42,
        "pdf",
    )
    assert rows[T1].first_seen_at.isoformat() == "2026-11-27T09:59:00"
    assert (rows[T2].status, rows[T2].http_status, rows[T2].error_category) == ("dead", 404, "permanent")

    (dead,) = [DeadLetter.decode(v) for _, v, _ in consume_all(kafka_settings, kafka_settings.topics.dlq.name)]
    assert dead.stage == "results" and dead.category == "malformed" and dead.payload == "garbage"
    assert dead.source.topic == topic and dead.source.offset == 3


def test_maintenance_compacts_and_vacuums_existing_tables_and_skips_missing_ones(spark, kafka_settings, tmp_path):
    for task in (T1, T2):  # two batches inserting two tasks: two files in one partition to compact
        produce(
            kafka_settings,
            kafka_settings.topics.results.name,
            [(task, result(task, 1, "retrying", "2026-11-27T10:00:00Z"))],
        )
        run_once(spark, kafka_settings)
    spec = attachments_table(kafka_settings)
    missing = replace(spec, name="nowhere", path=str(tmp_path / "nowhere"))
    maintain_tables(spark, [spec, missing], retain_hours=168)
    ops = [r.operation for r in spark.sql(f"DESCRIBE HISTORY delta.`{spec.path}`").collect()]
    assert "OPTIMIZE" in ops and "VACUUM END" in ops
    assert spark.read.format("delta").load(spec.path).count() == 2
