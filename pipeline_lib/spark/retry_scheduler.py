"""Retry scheduler: every retry tier -> back to the stage's input topic, never before it is due.

    source (Kafka, all retry tiers) -> the per-record function (retry_schedule.schedule_record:
    the task attempt and due time a retry message's headers give) -> groupBy(task attempt)
        .applyInPandasWithState(hold until due, processing-time timeout) -> Kafka sink by `topic`

The mechanism (runs on Spark 3.4+ and 4.x: applyInPandasWithState with
GroupStateTimeout.ProcessingTimeTimeout):

- A message that is already due is forwarded in the batch that reads it.
- Otherwise it is kept in the query's state store (one entry per task attempt, so a redelivered
  copy replaces, never adds) with a timeout at its due time. A batch calls the function for each
  group whose timeout has passed; it forwards the message only if the wall clock says it is due
  (a batch's timestamp can lag the wall clock), else re-arms the timeout. So a message is never
  forwarded early.
- What starts those batches: with `retry.wake_on_due` (the default) the query runs no no-data
  batches (noDataMicroBatches off for this query alone); a driver thread follows the tiers' due
  times and writes a tick record when a held retry falls due, and the batch that reads it fires
  the timeouts (retry_wakeups.py says why that is never early and never stuck). Idle, the
  scheduler runs no batch at all. With `wake_on_due: false`, Spark runs a no-data batch every
  trigger interval while timeouts are pending (a state-store scan each): a message is at most one
  trigger interval plus one batch's duration late.
- After a restart Spark runs no batch until new input arrives (its "run another batch for the
  timeouts" decision looks at the previous batch of the same process), so held messages would wait
  for the next retry. The scheduler therefore writes one tick record (header xact.retry.tick, no
  task) to the first tier when it starts: the batch that reads it fires every due timeout; the
  tick itself is dropped.
- Crash safety: the state store is versioned with the checkpoint. After a kill -9 anywhere, the
  query restarts from the last committed batch: messages read but not yet committed are read
  again, and messages forwarded in an uncommitted batch are forwarded again (the Kafka sink is
  at-least-once; later stages are idempotent by task id). Nothing is lost or forwarded early.
- A retry message without usable `xact.retry.*` headers, or with a due time further ahead than any
  tier or capped Retry-After allows, is dead-lettered (stage `retry`) at once; any other failure
  to read one record is an `internal` dead letter (retry_schedule.schedule_record is total).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import orjson
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupState, GroupStateTimeout
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipeline_lib.config import Settings, Stage
from pipeline_lib.contracts import H_RETRY_FORWARDED_AT, H_RETRY_TICK, DeadLetter
from pipeline_lib.dead_letters import internal_dead_letter
from pipeline_lib.kafka_client import make_producer, produce
from pipeline_lib.logs import get_logger
from pipeline_lib.records import InputRecord
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.retry_schedule import STAGE as RETRY_STAGE
from pipeline_lib.retry_schedule import schedule_record
from pipeline_lib.retry_wakeups import start_wake_ups
from pipeline_lib.routing import OutMessage
from pipeline_lib.spark.sinks import KafkaSink
from pipeline_lib.spark.stage_query import RecordFunction, StageQuery, per_record, stage_rows, start_stage
from pipeline_lib.times import iso_from_millis, iso_utc

log = get_logger(Stage.RETRY_SCHEDULER.value)

SCHEDULED_SCHEMA = StructType(
    [
        StructField("grp", StringType(), False),
        StructField("topic", StringType(), False),
        StructField("key", StringType(), True),
        StructField("value", StringType(), False),
        StructField("headers_json", StringType(), True),
        StructField("due_ms", LongType(), False),
        StructField("outcome", StringType(), False),  # moved | malformed
    ]
)
STATE_SCHEMA = StructType([f for f in SCHEDULED_SCHEMA.fields if f.name != "grp"])
OUTPUT_SCHEMA = StructType(
    [
        StructField("outcome", StringType(), False),
        StructField("topic", StringType(), False),
        StructField("key", StringType(), True),
        StructField("value", StringType(), False),
        StructField("headers_json", StringType(), True),
        StructField("lateness_ms", LongType(), False),  # forwarded at - due (never negative)
    ]
)


def scheduled_records(settings: Settings) -> RecordFunction:
    """The per-record function: a retry message in, its SCHEDULED_SCHEMA row out (none for the tick)."""
    allowed = frozenset({settings.topics.pending.name, settings.topics.cached.name})
    dlq = settings.topics.dlq.name
    longest_wait = RetryPolicy.from_settings(settings).longest_wait_seconds

    def dead_row(record: InputRecord, dead: DeadLetter) -> tuple:
        topic, key, value, headers = OutMessage(dead.category, dlq, record.key, dead).row()
        group = f"dead/{record.source.topic}/{record.source.partition}/{record.source.offset}"
        return (group, topic, key, value, orjson.dumps(headers).decode(), 0, "malformed")

    def rows_of(record: InputRecord, now: datetime) -> Iterable[tuple]:
        decision = schedule_record(record, dict(record.headers), allowed, now, longest_wait)
        if decision is None:  # the start tick: nothing to schedule
            return []
        if isinstance(decision, DeadLetter):
            return [dead_row(record, decision)]
        headers_json = orjson.dumps(dict(record.headers)).decode()
        return [
            (decision.group, decision.return_topic, record.key, record.text, headers_json, decision.due_ms, "moved")
        ]

    def failed(record: InputRecord, exc: BaseException, now: datetime) -> Iterable[tuple]:
        return [dead_row(record, internal_dead_letter(RETRY_STAGE, exc, record, now))]

    return per_record(rows_of, failed)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _forwarded(outcome: str, topic: str, key: str | None, value: str, headers: str, due: int, now: int) -> pd.DataFrame:
    """One output row; a moved message gets an `xact.retry.forwarded_at` header (audit: when it left)."""
    if outcome == "moved":
        header_map = orjson.loads(headers) if headers else {}
        header_map[H_RETRY_FORWARDED_AT] = iso_from_millis(now)
        headers = orjson.dumps(header_map).decode()
    return pd.DataFrame([(outcome, topic, key, value, headers, max(0, now - due))], columns=OUTPUT_SCHEMA.fieldNames())


def hold_until_due(key: tuple[str], batches: Iterator[pd.DataFrame], state: GroupState) -> Iterator[pd.DataFrame]:
    """applyInPandasWithState function: forward a group's message when due, else keep it in state."""
    now = _now_ms()
    if state.hasTimedOut:
        topic, msg_key, value, headers, due, outcome = state.get
        if due <= now:
            state.remove()
            yield _forwarded(outcome, topic, msg_key, value, headers, due, now)
        else:  # the batch's clock ran ahead of the wall clock: wait the rest
            state.setTimeoutDuration(due - now)
        return
    latest = None
    for pdf in batches:
        for row in pdf.itertuples(index=False):
            latest = row  # copies of one task attempt are the same message
    if latest is None:
        return
    if latest.due_ms <= now:
        if state.exists:
            state.remove()
        yield _forwarded(
            latest.outcome, latest.topic, latest.key, latest.value, latest.headers_json, int(latest.due_ms), now
        )
        return
    state.update((latest.topic, latest.key, latest.value, latest.headers_json, int(latest.due_ms), latest.outcome))
    state.setTimeoutDuration(int(latest.due_ms) - now)


def hold_until_due_in_state(scheduled: DataFrame, settings: Settings) -> DataFrame:
    """The stateful step: SCHEDULED_SCHEMA rows -> OUTPUT_SCHEMA rows, each emitted once it is due."""
    return scheduled.groupBy("grp").applyInPandasWithState(
        hold_until_due,
        OUTPUT_SCHEMA,
        STATE_SCHEMA,
        "append",
        GroupStateTimeout.ProcessingTimeTimeout,
    )


def _start_tick(spark: SparkSession, settings: Settings) -> None:
    _tick(settings)


RETRY_SCHEDULER = StageQuery(
    name=Stage.RETRY_SCHEDULER.value,
    records=scheduled_records,
    schema=SCHEDULED_SCHEMA,
    step=hold_until_due_in_state,
    sink=KafkaSink(headers_json="headers_json"),
    metrics=lambda settings: [
        F.count(F.when(F.col("outcome") == "moved", 1)).alias("moved"),
        F.count(F.when(F.col("outcome") == "malformed", 1)).alias("malformed"),
        F.max(F.when(F.col("outcome") == "moved", F.col("lateness_ms"))).alias("max_lateness_ms"),
    ],
    prepare=_start_tick,
    headers=True,
    timers=True,
)


def schedule_retries(raw: DataFrame, settings: Settings) -> DataFrame:
    """Kafka rows of the retry tiers -> OUTPUT_SCHEMA rows, each emitted once it is due."""
    return hold_until_due_in_state(stage_rows(raw, settings, RETRY_SCHEDULER), settings)


NO_DATA_BATCHES = "spark.sql.streaming.noDataMicroBatches.enabled"


def run_retry_scheduler(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the scheduler. `available_now` forwards what is due now and stops (the rest waits in state):
    its first batch that finds the retry topics drained has fired every due timeout.

    With `retry.wake_on_due` (and not `available_now`) the query runs no no-data batches and a
    driver thread ticks it when a held retry falls due (retry_wakeups.py). A query reads its SQL
    conf from a copy of the session made when it starts, so the setting is this query's alone."""
    if available_now or not settings.retry.wake_on_due:
        return start_stage(spark, settings, RETRY_SCHEDULER, available_now=available_now)
    previous = spark.conf.get(NO_DATA_BATCHES, None)
    spark.conf.set(NO_DATA_BATCHES, "false")
    try:
        query = start_stage(spark, settings, RETRY_SCHEDULER)
    finally:
        if previous is None:
            spark.conf.unset(NO_DATA_BATCHES)
        else:
            spark.conf.set(NO_DATA_BATCHES, previous)
    try:
        start_wake_ups(settings, lambda: query.isActive)
    except BaseException:
        query.stop()  # a query nobody can stop or restart would hold the stage's name
        raise
    return query


def _tick(settings: Settings) -> None:
    """Write the start tick (see the module doc): without it a restarted scheduler holds due retries
    until a new retry arrives. Best effort: a Kafka that cannot take it cannot feed the query either."""
    try:
        producer = make_producer(settings, **{"message.timeout.ms": 10_000})
        tick = (None, b"tick", {H_RETRY_TICK: iso_utc(datetime.now(UTC))})
        produce(settings, settings.retry_topics[0], [tick], producer=producer, timeout=15)
    except Exception as exc:  # noqa: BLE001 - the query itself reports Kafka problems; this must not
        log.warning(
            "[%s] could not write the start tick (%s): held retries wait for the next new one",
            Stage.RETRY_SCHEDULER.value,
            type(exc).__name__,
        )
