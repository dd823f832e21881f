"""`xact-pipeline health`: the facts pipeline_lib/health.py judges, gathered from the tables and
the input topics, and the verdict lines.

    verdicts = stage_verdicts(spark, settings)    # one Verdict per stage, in pipeline order

Per stage, over the window (`health.window_minutes`):
- xact_pipeline_metrics: its last batch (over all the rows kept), the lag of each batch in the
  window, its circuit-breaker openings;
- xact_dlq: the dead letters it made in the window, and its oldest `open` one;
- xact_attachments (results only): the event-to-inventory p95 of the window;
- Kafka: the oldest record on its input topics written after its last batch (the record
  timestamps; the broker's time index finds it without reading the topics).
A table not created yet has no rows; Kafka that cannot be read makes a `warn` that says so.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import STAGES, Settings, Stage
from pipeline_lib.health import StageFacts, Verdict, exit_code, judge, render, task_exit_code
from pipeline_lib.kafka_client import first_record_time_after, unreachable_reason
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.tables import table_or_none

log = get_logger("health")

# The stage a dead letter names (DeadLetter.stage) -> the query that made it.
DEAD_LETTER_STAGES = {"retry": Stage.RETRY_SCHEDULER.value, "dlq": Stage.DLQ_TABLE.value}

# A record written this soon after a batch started may have been in it (the batch reads the
# latest offsets as it starts): it does not count as waiting for a later batch.
BATCH_START_SLACK = timedelta(seconds=2)


def _at(moment: datetime) -> F.Column:
    """`moment` as a timestamp literal (the form recent_metrics compares batch_time with)."""
    return F.lit(f"{moment:%Y-%m-%d %H:%M:%S}").cast("timestamp")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _metrics_facts(metrics: DataFrame | None, since: datetime) -> dict[str, dict]:
    if metrics is None:
        return {}
    facts: dict[str, dict] = {}
    for row in metrics.groupBy("stage").agg(F.max("batch_time").alias("last")).collect():
        facts.setdefault(row["stage"], {})["last_batch_at"] = _utc(row["last"])
    recent = metrics.filter(F.col("batch_time") >= _at(since))
    for row in recent.select("stage", "batch_time", "lag_max", "breaker_openings").orderBy("batch_time").collect():
        entry = facts.setdefault(row["stage"], {})
        if row["lag_max"] is not None:
            entry.setdefault("lags", []).append((_utc(row["batch_time"]), int(row["lag_max"])))
        entry["breaker_openings"] = entry.get("breaker_openings", 0) + int(row["breaker_openings"] or 0)
    return facts


def _dlq_facts(dlq: DataFrame | None, since: datetime) -> dict[str, dict]:
    if dlq is None:
        return {}
    rows = dlq.groupBy("stage").agg(
        F.count(F.when(F.col("failed_at") >= _at(since), 1)).alias("recent"),
        # A row a stopped replay still holds (`replaying`) is as unfinished as an open one.
        F.min(F.when(F.col("status").isin("open", "replaying"), F.col("failed_at"))).alias("oldest_open"),
    )
    out: dict[str, dict] = {}
    for r in rows.collect():
        entry = out.setdefault(DEAD_LETTER_STAGES.get(r["stage"], r["stage"]), {"dead_letters": 0})
        entry["dead_letters"] += int(r["recent"])
        oldest = [t for t in (entry.get("oldest_open_dead_letter_at"), _utc(r["oldest_open"])) if t is not None]
        entry["oldest_open_dead_letter_at"] = min(oldest) if oldest else None
    return out


def _latency_p95(attachments: DataFrame | None, since: datetime) -> float | None:
    if attachments is None:
        return None
    latency = F.col("recorded_at").cast("double") - F.col("event_produced_at").cast("double")
    done = attachments.filter(
        (F.col("status") == "completed") & F.col("event_produced_at").isNotNull() & (F.col("recorded_at") >= _at(since))
    )
    row = done.agg(F.percentile_approx(latency, 0.95).alias("p95")).first()
    return None if row is None or row["p95"] is None else float(row["p95"])


def gather(spark: SparkSession, settings: Settings, now: datetime | None = None) -> list[StageFacts]:
    """The facts of every stage, in pipeline order."""
    now = now or datetime.now(UTC)
    since = now - timedelta(minutes=settings.health.window_minutes)
    by_stage = _metrics_facts(table_or_none(spark, settings, "metrics"), since)
    dead = _dlq_facts(table_or_none(spark, settings, "dlq"), since)
    p95 = _latency_p95(table_or_none(spark, settings, "attachments"), since)
    unreachable = unreachable_reason(settings, timeout=5)  # once, not a timeout per stage
    if unreachable is not None:  # every verdict says so; the whole reason at debug
        log.debug("[health] %s: the input topics are not checked", unreachable)
    out = []
    for stage in STAGES:
        known = {**by_stage.get(stage, {}), **dead.get(stage, {})}
        last = known.get("last_batch_at")
        after = (last + BATCH_START_SLACK) if last is not None else since
        checked, waiting = unreachable is None, None
        try:
            if not checked:
                raise ConnectionError(unreachable)
            stamp = first_record_time_after(settings, settings.stage_inputs(stage), int(after.timestamp() * 1000))
            waiting = datetime.fromtimestamp(stamp / 1000, UTC) if stamp is not None else None
        except Exception as exc:  # noqa: BLE001 - the verdict says the input was not checked
            log.debug("[health] %s: input not checked: %s", stage, exc)
            checked = False
        out.append(
            StageFacts(
                stage=stage,
                trigger_seconds=settings.trigger_seconds(stage),
                last_batch_at=last,
                input_waiting_since=waiting,
                input_checked=checked,
                lags=tuple(known.get("lags", ())),
                dead_letters=known.get("dead_letters", 0),
                oldest_open_dead_letter_at=known.get("oldest_open_dead_letter_at"),
                breaker_openings=known.get("breaker_openings", 0),
                latency_p95_seconds=p95 if stage == Stage.RESULTS.value else None,
            )
        )
    return out


def stage_verdicts(spark: SparkSession, settings: Settings, now: datetime | None = None) -> list[Verdict]:
    """One verdict per stage, in pipeline order."""
    now = now or datetime.now(UTC)
    flush = settings.metrics.flush_seconds if settings.metrics.enabled else 0.0
    return [judge(facts, settings.health, now, flush_seconds=flush) for facts in gather(spark, settings, now)]


def health_command(settings: Settings, *, task: bool = False, spark: SparkSession | None = None) -> int:
    """Print the verdicts; the exit code: 0 all ok, 1 a warn, 2 a failing. `task` (the scheduled
    health task): a warn exits 0 unless `health.fail_on_warn`, so only what fails the task alerts."""
    from pipeline_lib.spark.session import session_for

    spark = spark or session_for(settings)
    now = datetime.now(UTC)
    verdicts = stage_verdicts(spark, settings, now)
    for line in render(verdicts, now, timedelta(minutes=settings.health.window_minutes)):
        print(line)
    return task_exit_code(verdicts, settings.health.fail_on_warn) if task else exit_code(verdicts)


def verdict_frame(verdicts: list[Verdict]) -> pd.DataFrame:
    """The verdicts as a table (the health notebook's first cell): stage, verdict, reasons."""
    rows = [{"stage": v.stage, "verdict": v.level, "reasons": "; ".join(v.reasons)} for v in verdicts]
    return pd.DataFrame(rows, columns=["stage", "verdict", "reasons"]).set_index("stage")
