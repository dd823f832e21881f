"""Where each outcome of a download (and later an upload) goes, as Kafka messages.

| outcome                                | topic                          | results status |
| -------------------------------------- | ------------------------------ | -------------- |
| success                                | the next stage's topic         | downloaded / completed |
| transient failure, attempts left       | retry tier of this attempt     | retrying       |
| permanent failure, or no attempt left  | xact.downloads.dlq             | dead           |
| unreadable input message               | xact.downloads.dlq (malformed) | (none: no task) |

Every outcome of a task also gives one message on xact.downloads.results. All messages are keyed
by the trace id, so one claim's messages stay in order within a partition.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

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
from pipeline_lib.failures import Failure
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.times import iso_from_millis, iso_utc


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
    """The messages one input record produced, and the outcome behind them (None: unreadable input)."""

    messages: list[OutMessage]
    outcome: Outcome | None = None


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
    entry = history_entry(iso_utc(at), stage, task.attempt, result.category, result.http_status, result.message)
    history = [*task.history, entry]
    first = task.first_attempt_at or iso_utc(at)
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
R = TypeVar("R")  # a stage's outcome


def process_records(
    records: Iterable[PendingRecord],
    message_cls: type[M],
    work: Callable[[M], R],
    route: Callable[[R, SourceRef | None], Routed],
    pool: Executor,
    *,
    stage: str,
    dlq_topic: str,
) -> Iterator[Routed]:
    """The I/O stages' loop: decode every record as `message_cls` (an unreadable one is
    dead-lettered as malformed, never dropped), run `work` on the readable ones on `pool`, and
    yield `route(outcome, source)` for each record in input order."""
    now = datetime.now(UTC)
    decoded: list[tuple[PendingRecord, M | Routed]] = []
    for record in records:
        raw = record.value
        try:
            decoded.append((record, message_cls.decode(raw if raw is not None else b"")))
        except ContractError as exc:
            reason = f"not a readable {message_cls.KIND.replace('_', ' ')}: {exc}"
            dead = malformed_input(stage, reason, raw, record.source, record.key, now, dlq_topic)
            decoded.append((record, Routed([dead])))
    items = [item for _, item in decoded if not isinstance(item, Routed)]
    outcomes = iter(pool.map(work, items))
    for record, item in decoded:
        yield item if isinstance(item, Routed) else route(next(outcomes), record.source)
