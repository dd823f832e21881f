"""Where each outcome of a download (and later an upload) goes, as Kafka messages.

| outcome                                | topic                          | results status |
| -------------------------------------- | ------------------------------ | -------------- |
| success                                | the next stage's topic         | downloaded / completed |
| transient failure, attempts left       | retry tier of this attempt     | retrying       |
| permanent failure, or no attempt left  | xact.downloads.dlq             | dead           |
| unreadable input message               | xact.downloads.dlq (malformed) | (none: no task) |
| handling the record raised             | xact.downloads.dlq (internal)  | dead, if a task was read |

Every outcome of a task also gives one message on xact.downloads.results. All messages are keyed
by the trace id, so one claim's messages stay in order within a partition.
"""

from __future__ import annotations

import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Generic, Protocol, Self, TypeVar

from pipeline_lib import ids
from pipeline_lib.config import Settings
from pipeline_lib.contracts import (
    AttachmentResult,
    ContractError,
    DeadLetter,
    DownloadTask,
    Message,
    SourceRef,
    history_entry,
)
from pipeline_lib.failures import Failure, failure
from pipeline_lib.logs import get_logger
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.times import iso_from_millis, iso_utc, parse_iso
from pipeline_lib.worker_state import per_worker

log = get_logger("routing")


@dataclass(frozen=True)
class OutMessage:
    """One Kafka message a stage emits; `outcome` feeds the stage's metrics."""

    outcome: str  # cached | retry | dead | malformed | result
    topic: str
    key: str | None
    message: Message

    def row(self) -> tuple[str, str | None, str, dict[str, str]]:
        return self.topic, self.key, self.message.encode(), self.message.headers()


@dataclass(frozen=True)
class PendingRecord:
    """One Kafka record a stage reads: key, value and where it was read (for dead letters)."""

    key: str | None
    value: bytes | str | None
    source: SourceRef


class Outcome(Protocol):
    """What the Spark layer's metrics read from a stage's outcome."""

    @property
    def breaker_opened(self) -> bool: ...

    @property
    def bytes(self) -> int: ...


@dataclass(frozen=True)
class Routed:
    """The messages one input record produced, and the outcome behind them (None: no outcome).

    `rows` holds the messages encoded for Kafka; RecordStage.process fills it inside its guard,
    so a message that cannot be encoded fails its own record, not the batch.
    """

    messages: list[OutMessage]
    outcome: Outcome | None = None
    rows: list[tuple[str, str | None, str, dict[str, str]]] | None = None


@dataclass(frozen=True)
class Topics:
    results: str
    dlq: str
    pending: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Topics:
        t = settings.topics
        return cls(t.results.name, t.dlq.name, t.pending.name)


def result_message(task: DownloadTask, stage: str, status: str, at: datetime, **facts: Any) -> AttachmentResult:
    return AttachmentResult(
        task_id=task.task_id,
        trace_id=task.trace_id,
        attempt=task.attempt,
        stage=stage,
        status=status,
        occurred_at=iso_utc(at),
        event_date=task.event_date,
        attachment_url=task.url,  # redacted by AttachmentResult
        blob_path=task.blob_path,
        status_subtype=task.status_subtype,
        assignment_id=task.assignment_id,
        created_at=task.created_at,
        replay_id=task.replay_id,
        replay_generation=task.replay_generation,
        event_time=task.event_time,
        event_produced_at=task.event_produced_at,
        **facts,
    )


def route_failure(
    task: DownloadTask,
    result: Failure,
    *,
    stage: str,
    source: SourceRef | None,
    at: datetime,
    policy: RetryPolicy,
    topics: Topics,
    return_topic: str,
    wrap: Callable[[DownloadTask], Message] | None = None,
    requeue_topic: str | None = None,
) -> tuple[OutMessage, OutMessage]:
    """(the retry or dead letter, the results message) for one failed attempt of `task`.

    `wrap` turns the retry task into the stage's own input message (upload: a CachedAttachment).
    `requeue_topic`, when set, sends a transient failure with attempts left straight to that topic
    as a fresh task (no tier, no wait): the upload's lost cache file goes back to pending.
    """
    first = task.first_attempt_at or iso_utc(at)
    if result.category in WAITS_WITHOUT_ATTEMPT:
        return _hold(task, result, stage=stage, source=source, at=at, policy=policy, topics=topics,
                                 return_topic=return_topic, wrap=wrap, first=first)  # fmt: skip
    entry = history_entry(iso_utc(at), stage, task.attempt, result.category, result.http_status, result.message)
    history = [*task.history, entry]
    step = policy.next_step(task.attempt, at, result.retry_after_seconds) if result.transient else None
    if step is not None and requeue_topic is not None:
        again = replace(
            task, attempt=step.next_attempt, history=history, first_attempt_at=first,
            due_at=None, retry_stage=None, return_topic=None,
        )  # fmt: skip
        routed = OutMessage("refetch", requeue_topic, task.trace_id, again)
    elif step is not None:
        retry = replace(
            task,
            attempt=step.next_attempt,
            history=history,
            first_attempt_at=first,
            due_at=iso_utc(step.due_at),
            retry_stage=stage,
            return_topic=return_topic,
        )
        routed = OutMessage("retry", step.topic, task.trace_id, wrap(retry) if wrap else retry)
    else:
        routed = OutMessage(
            "dead", topics.dlq, task.trace_id, _dead_letter(task, result, stage, source, at, policy, history, first)
        )
    facts = {"http_status": result.http_status, "error_category": result.category, "error_message": result.message}
    status = "retrying" if step is not None else "dead"
    return routed, OutMessage("result", topics.results, task.trace_id, result_message(task, stage, status, at, **facts))


# Failures that say nothing about the source (no request was made, or this host's own cache
# could not take the file): the task waits without using an attempt, up to
# retry.max_task_age_seconds, then is dead-lettered with the category given here.
WAITS_WITHOUT_ATTEMPT = {"circuit_open": "host_unavailable", "disk_full": "cache_unavailable",
                         "cache_io": "cache_unavailable"}  # fmt: skip


def _hold(
    task: DownloadTask,
    result: Failure,
    *,
    stage: str,
    source: SourceRef | None,
    at: datetime,
    policy: RetryPolicy,
    topics: Topics,
    return_topic: str,
    wrap: Callable[[DownloadTask], Message] | None,
    first: str,
) -> tuple[OutMessage, OutMessage]:
    """A wait that uses no attempt: a circuit-breaker refusal (no request was made; the task waits
    on its current tier for the breaker's next probe) or a cache that cannot take the file (full,
    unwritable: the task waits its tier's delay). Past retry.max_task_age_seconds since its first
    failure it is dead-lettered instead, as host_unavailable or cache_unavailable."""
    age = (at - parse_iso(first)).total_seconds()
    if age > policy.max_task_age_seconds:
        gone = Failure(
            WAITS_WITHOUT_ATTEMPT[result.category], False,
            f"{result.message}; the task waited {age:.0f}s for it, longer than retry.max_task_age_seconds "
            f"({policy.max_task_age_seconds:.0f}s)",
        )  # fmt: skip
        entry = history_entry(iso_utc(at), stage, task.attempt, gone.category, None, gone.message)
        history = [*task.history, entry]
        dead = _dead_letter(task, gone, stage, source, at, policy, history, first)
        facts = {"error_category": gone.category, "error_message": gone.message}
        result_msg = result_message(task, stage, "dead", at, **facts)
        return OutMessage("dead", topics.dlq, task.trace_id, dead), OutMessage(
            "result", topics.results, task.trace_id, result_msg
        )
    tier_delay = float(policy.delays_seconds[min(max(task.attempt, 0), len(policy.delays_seconds) - 1)])
    wait = result.retry_after_seconds if result.category == "circuit_open" else tier_delay
    step = policy.hold(task.attempt, at, wait or 0.0)
    held = replace(
        task, first_attempt_at=first, due_at=iso_utc(step.due_at), retry_stage=stage, return_topic=return_topic,
        breaker_waits=task.breaker_waits + 1,
    )  # fmt: skip
    facts = {"error_category": result.category, "error_message": result.message}
    return (
        OutMessage("held", step.topic, task.trace_id, wrap(held) if wrap else held),
        OutMessage("result", topics.results, task.trace_id, result_message(task, stage, "retrying", at, **facts)),
    )


def _dead_letter(
    task: DownloadTask,
    result: Failure,
    stage: str,
    source: SourceRef | None,
    at: datetime,
    policy: RetryPolicy,
    history: list[dict[str, Any]],
    first_attempt_at: str,
) -> DeadLetter:
    exhausted = result.transient  # transient, yet no attempt left
    # The category is a column of its own: the reason says what happened, not the category again.
    reason = (
        f"gave up after {task.attempt + 1} attempts (retry.delays_seconds has {len(policy.delays_seconds)} tiers); "
        f"last failure ({result.category}): {result.message}"
        if exhausted
        else result.message
    )
    return DeadLetter(
        dlq_id=ids.dlq_id(stage, task.task_id, task.replay_id or "", str(task.attempt)),
        stage=stage,
        category="exhausted" if exhausted else result.category,
        reason=reason,
        failed_at=iso_utc(at),
        attempts=task.attempt + 1,
        source=source,
        trace_id=task.trace_id,
        task_id=task.task_id,
        event_id=task.event_id,
        task=replace(task, history=history, first_attempt_at=first_attempt_at, due_at=None).redacted(),
        error_history=history,
    )


def malformed_input(
    stage: str,
    reason: str,
    payload: bytes | str | None,
    source: SourceRef,
    key: str | None,
    at: datetime,
    dlq_topic: str,
) -> OutMessage:
    """A message a stage cannot read: dead-lettered with its provenance, never dropped."""
    return OutMessage("malformed", dlq_topic, key, DeadLetter.malformed(stage, reason, payload, source, at))


def pending_records(columns: Mapping[str, list[Any]]) -> list[PendingRecord]:
    """Kafka records from the column lists of one Arrow batch (spark.kafka_io.RECORD_COLUMNS)."""
    return [
        PendingRecord(
            key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
            value,
            SourceRef(str(topic), int(partition), int(offset), iso_from_millis(ms)),
        )
        for key, value, topic, partition, offset, ms in zip(  # noqa: B905 - equal-length columns
            columns["key"], columns["value"], columns["topic"], columns["partition"], columns["offset"],
            columns["timestamp_ms"],
        )
    ]  # fmt: skip


M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Outcome)  # a stage's outcome


def internal_failure(exc: BaseException, stage: str) -> Failure:
    """An unexpected exception while handling one record, as a permanent failure naming its type and place."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return failure("internal", f"{type(exc).__name__} while the {stage} stage handled this record: {exc}{where}")


def internal_dead_letter(stage: str, exc: BaseException, record: PendingRecord, at: datetime) -> DeadLetter:
    """The dead letter of a record whose handling raised: its provenance, the record, the exception type."""
    reason = internal_failure(exc, stage).message
    dead = DeadLetter.malformed(stage, reason, record.value, record.source, at)
    return replace(dead, category="internal")


# Records an I/O stage holds at once (decoded, in its pool or waiting to be yielded in order). Spark
# hands mapInArrow up to 10,000 records per Arrow batch; holding a whole batch (about 15 KiB a
# record: tasks, outcomes, routed rows) took a download worker from 165 MiB idle to 258 MiB on
# 10,000 x 64 KiB. A sliding window of 500 keeps it near 185 MiB and keeps the pool busy across
# Arrow batches (benchmarks/download_throughput.py).
IN_FLIGHT_WINDOW = 500


class RecordStage(ABC, Generic[M, R]):
    """The decode -> work -> route loop of the I/O stages (download, upload), total per record.

    Whatever a record holds, handling it ends in that record's own messages: its routed outcome,
    or a dead letter. An unreadable record is `malformed`; an exception anywhere else (the work,
    the routing, the encoding of a message) is `internal`, with the exception type and place, the
    record's provenance and, when the record held a task, a `dead` result for it. The other
    records of the batch are unaffected and nothing escapes to fail the Spark task, so no input
    can stop a query. Subclasses supply `work`, `route` and `task_of`.
    """

    name: str
    message_cls: type[M]

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.retry_policy = RetryPolicy.from_settings(settings)
        self.topics = Topics.from_settings(settings)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=self.name)

    @classmethod
    def for_settings(cls, settings: Settings) -> Self:
        """The stage of this worker process for these settings (worker_state.per_worker)."""
        return per_worker(cls, settings)

    @abstractmethod
    def work(self, message: M) -> R:
        """The I/O of one record; expected failures are part of the outcome, not exceptions."""

    @abstractmethod
    def route(self, outcome: R, source: SourceRef | None) -> Routed:
        """The messages an outcome sends."""

    @abstractmethod
    def task_of(self, message: M) -> DownloadTask:
        """The task a decoded message carries (for the dead letter of an internal failure)."""

    def process(self, records: Iterable[PendingRecord], window: int = IN_FLIGHT_WINDOW) -> Iterator[Routed]:
        """Route every record, working on up to `concurrency` at once; yields in input order.

        Records are read lazily and at most `window` of them are decoded, in the pool or waiting
        to be yielded at a time: a worker's memory is bounded by the window, not by the batch,
        and the pool never drains between batches or slices (only at the end of the input).
        """
        pending: deque[tuple[PendingRecord, M | Routed, Future[tuple[R | None, BaseException | None]] | None]] = deque()
        for record in records:
            item = self._decode(record, datetime.now(UTC))
            run = None if isinstance(item, Routed) else self._pool.submit(self._work, item)
            pending.append((record, item, run))
            while len(pending) >= max(1, window):
                yield self._finish(*pending.popleft())
        while pending:
            yield self._finish(*pending.popleft())

    def _finish(
        self, record: PendingRecord, item: M | Routed, run: Future[tuple[R | None, BaseException | None]] | None
    ) -> Routed:
        if isinstance(item, Routed) or run is None:
            return item  # type: ignore[return-value]
        outcome, error = run.result()
        try:
            if error is not None:
                raise error
            routed = self.route(outcome, record.source)  # type: ignore[arg-type]
            return replace(routed, rows=[m.row() for m in routed.messages])
        except Exception as exc:  # noqa: BLE001 - one record's failure must not fail the batch
            return self._internal(record, exc, item)

    def _decode(self, record: PendingRecord, now: datetime) -> M | Routed:
        raw = record.value if record.value is not None else b""
        try:
            return self.message_cls.decode(raw)
        except ContractError as exc:
            reason = f"not a readable {self.message_cls.KIND.replace('_', ' ')}: {exc}"
            return _encoded(Routed([malformed_input(self.name, reason, raw, record.source, record.key, now,
                                                    self.topics.dlq)]))  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - decode is total by contract; this guards a bug in it
            return self._internal(record, exc, None)

    def _work(self, message: M) -> tuple[R | None, BaseException | None]:
        try:
            return self.work(message), None
        except Exception as exc:  # noqa: BLE001 - handed to the record's routing, never lost
            return None, exc

    def _internal(self, record: PendingRecord, exc: BaseException, message: M | None) -> Routed:
        """The dead letter (and `dead` result, when there is a task) of a record whose handling raised."""
        at = datetime.now(UTC)
        log.warning("[%s] record %s/%s/%s: %s: %s", self.name, record.source.topic, record.source.partition,
                    record.source.offset, type(exc).__name__, exc)  # fmt: skip
        if message is not None:
            try:
                task = self.task_of(message)
                dead, result = route_failure(
                    task, internal_failure(exc, self.name), stage=self.name, source=record.source, at=at,
                    policy=self.retry_policy, topics=self.topics, return_topic=self.topics.pending,
                )  # fmt: skip
                return _encoded(Routed([replace(dead, outcome="internal"), result]))
            except Exception:  # noqa: BLE001 - the task itself is broken: fall back to the bare record
                pass
        dead_letter = internal_dead_letter(self.name, exc, record, at)
        return _encoded(Routed([OutMessage("internal", self.topics.dlq, record.key, dead_letter)]))


def _encoded(routed: Routed) -> Routed:
    return replace(routed, rows=[m.row() for m in routed.messages])
