"""What analysts do with xact_dlq: select, summarise, replay, resolve (the CLI's `dlq` commands and
notebooks/dlq_analysis.ipynb): the Spark side of the pure pipeline_lib.replay, which decides which
rows and what a replayed task looks like. This module reads the table, reads the source records
from Kafka, publishes and marks the rows.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DownloadTask, SourceRef
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import produce, read_at, short_reason, unreachable_reason
from pipeline_lib.logs import get_logger
from pipeline_lib.redaction import redact, truncate
from pipeline_lib.replay import (
    DeadRow,
    DlqSelection,
    ReplayReport,
    new_replay_id,
    plan_replay,
    resolve_note,
    task_from_record,
)
from pipeline_lib.spark.tables import dlq_table, read_table, require_table

log = get_logger("dlq")


def selection_filter(selection: DlqSelection) -> Column:
    cond = F.col("status").isin(*selection.statuses)
    for column, values in (
        ("task_id", selection.task_ids),
        ("trace_id", selection.trace_ids),
        ("category", selection.categories),
        ("host", selection.hosts),
        ("stage", selection.stages),
    ):
        if values:
            cond = cond & F.col(column).isin(*values)
    if selection.since:
        cond = cond & (F.col("failed_at") >= F.to_timestamp(F.lit(selection.since)))
    if selection.until:
        cond = cond & (F.col("failed_at") < F.to_timestamp(F.lit(selection.until)))
    return cond


def select_dead_letters(spark: SparkSession, settings: Settings, selection: DlqSelection) -> DataFrame:
    return read_table(spark, settings, "dlq").filter(selection_filter(selection))


def dlq_summary(rows: DataFrame) -> DataFrame:
    """Counts per status, stage, category and host: where to look first."""
    return (
        rows.groupBy("status", "stage", "category", "host")
        .agg(F.count("*").alias("rows"), F.max("failed_at").alias("last_failed_at"))
        .orderBy(F.col("rows").desc())
    )


def _dead_row(row: Row) -> DeadRow:
    source = (
        SourceRef(row.source_topic, int(row.source_partition), int(row.source_offset))
        if row.source_topic is not None and row.source_partition is not None and row.source_offset is not None
        else None
    )
    return DeadRow(
        row.dlq_id, row.stage, row.category, row.attempts, row.task_id, row.trace_id, bool(row.task_json), source
    )


def live_task(settings: Settings, source: SourceRef, task_id: str) -> DownloadTask | str:
    """The task as it was on its source topic (with its live URL), or why it cannot be had."""
    value = read_at(settings, source)
    if value is None:
        return (
            f"its source record {source.topic}/{source.partition}/{source.offset} is no longer on Kafka "
            "(retention); ask upstream to re-send the event"
        )
    return task_from_record(value, task_id)


def replay(
    spark: SparkSession,
    settings: Settings,
    selection: DlqSelection,
    *,
    dry_run: bool = True,
    force: bool = False,
    note: str | None = None,
) -> ReplayReport:
    """Re-publish the selected dead tasks to the pending topic with a fresh attempt budget.

    Args:
        selection: which rows; only `open` ones unless `force` (which adds `replayed`).
        dry_run: list what would be replayed and why others would be skipped; change nothing.
        force: replay rows that were replayed before.
        note: stored on the replayed rows.

    Each replayed task gets attempt 0, an empty history and the report's replay id; its rows become
    `replayed` with the replay id, time and selection. Replaying the same rows again selects
    nothing (they are no longer open) unless forced.
    """
    if force:
        selection = selection.forced()
    report = ReplayReport(new_replay_id(), selection, dry_run)
    rows = [_dead_row(r) for r in select_dead_letters(spark, settings, selection).collect()]
    unreachable = unreachable_reason(settings, timeout=3)
    if unreachable is not None:
        if not dry_run:
            raise PipelineError(f"replay needs Kafka to read each task back and re-publish it: {unreachable}")
        print(f"dry run without Kafka: {short_reason(settings, unreachable)}")  # one line, then the rows
        plan_replay(rows, lambda source, task_id: "its source record cannot be read: Kafka is not reachable", report)
        return report
    tasks = plan_replay(rows, lambda source, task_id: live_task(settings, source, task_id), report)
    if dry_run or not tasks:
        return report
    produce(settings, settings.topics.pending.name, [(t.trace_id, t.encode(), t.headers()) for t in tasks])
    _mark(
        spark,
        settings,
        [r["dlq_id"] for r in report.replayed],
        {
            "status": F.lit("replayed"),
            "replay_id": F.lit(report.replay_id),
            "replayed_at": F.current_timestamp(),
            "replay_selection": F.lit(selection.to_json()),
            "replay_count": F.col("replay_count") + 1,
            "note": F.lit(truncate(redact(note), 2000)) if note else F.col("note"),
        },
    )
    log.info("replay %s: %d task(s) re-published to %s", report.replay_id, len(tasks), settings.topics.pending.name)
    return report


def resolve(spark: SparkSession, settings: Settings, selection: DlqSelection, note: str) -> int:
    """Mark the selected rows resolved (no replay), with a note saying why; returns how many."""
    note = resolve_note(note)
    dlq_ids = [r.dlq_id for r in select_dead_letters(spark, settings, selection).select("dlq_id").collect()]
    resolved = {
        "status": F.lit("resolved"),
        "resolved_at": F.current_timestamp(),
        "note": F.lit(truncate(redact(note), 2000)),
    }
    _mark(spark, settings, dlq_ids, resolved)
    return len(dlq_ids)


def _mark(spark: SparkSession, settings: Settings, dlq_ids: list[str], updates: dict[str, Column]) -> None:
    if not dlq_ids:
        return
    table = require_table(spark, dlq_table(settings))
    table.update(F.col("dlq_id").isin(*dlq_ids), {**updates, "updated_at": F.current_timestamp()})
