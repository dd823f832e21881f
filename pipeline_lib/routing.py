"""Where each outcome of a download or an upload goes, as Kafka messages: outcome -> topic.

| outcome                                | topic                          | results status |
| -------------------------------------- | ------------------------------ | -------------- |
| success                                | the next stage's topic         | downloaded / completed |
| transient failure, attempts left       | retry tier of this attempt     | retrying       |
| permanent failure, or no attempt left  | xact.downloads.dlq             | dead           |
| unreadable input message               | xact.downloads.dlq (malformed) | (none: no task) |
| handling the record raised             | xact.downloads.dlq (internal)  | dead, if a task was read |

Every outcome of a task also gives one message on xact.downloads.results. All messages are keyed
by the trace id, so one claim's messages stay in order within a partition.

The loop that produces the outcomes, and sends an unreadable or failing record to the DLQ, is
record_stage.RecordStage; the dead letters themselves are built by dead_letters.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from pipeline_lib.config import Settings
from pipeline_lib.contracts import AttachmentResult, DownloadTask, Message, SourceRef, history_entry
from pipeline_lib.dead_letters import task_dead_letter
from pipeline_lib.failures import Failure
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.times import iso_utc, parse_iso


@dataclass(frozen=True)
class OutMessage:
    """One Kafka message a stage emits; `outcome` feeds the stage's metrics."""

    outcome: str  # cached | retry | dead | malformed | result
    topic: str
    key: str | None
    message: Message

    def row(self) -> tuple[str, str | None, str, dict[str, str]]:
        return self.topic, self.key, self.message.encode(), self.message.headers()


class Outcome(Protocol):
    """What the Spark layer's metrics read from a stage's outcome."""

    @property
    def breaker_opened(self) -> bool: ...

    @property
    def bytes(self) -> int: ...


@dataclass(frozen=True)
class Routed:
    """The messages one input record produced, and the outcome behind them (None: no outcome).

    `rows` holds the messages encoded for Kafka; record_stage.RecordStage fills it inside its guard,
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
        return _hold(
            task,
            result,
            stage=stage,
            source=source,
            at=at,
            policy=policy,
            topics=topics,
            return_topic=return_topic,
            wrap=wrap,
            first=first,
        )
    entry = history_entry(iso_utc(at), stage, task.attempt, result.category, result.http_status, result.message)
    history = [*task.history, entry]
    step = policy.next_step(task.attempt, at, result.retry_after_seconds) if result.transient else None
    if step is not None and requeue_topic is not None:
        again = replace(
            task,
            attempt=step.next_attempt,
            history=history,
            first_attempt_at=first,
            due_at=None,
            retry_stage=None,
            return_topic=None,
        )
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
            "dead", topics.dlq, task.trace_id, task_dead_letter(task, result, stage, source, at, policy, history, first)
        )
    facts = {"http_status": result.http_status, "error_category": result.category, "error_message": result.message}
    status = "retrying" if step is not None else "dead"
    return routed, OutMessage("result", topics.results, task.trace_id, result_message(task, stage, status, at, **facts))


# Failures that say nothing about the source (no request was made, or this host's own cache
# could not take the file): the task waits without using an attempt, up to
# retry.max_task_age_seconds, then is dead-lettered with the category given here.
WAITS_WITHOUT_ATTEMPT = {
    "circuit_open": "host_unavailable",
    "disk_full": "cache_unavailable",
    "cache_io": "cache_unavailable",
}


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
            WAITS_WITHOUT_ATTEMPT[result.category],
            False,
            f"{result.message}; the task waited {age:.0f}s for it, longer than retry.max_task_age_seconds "
            f"({policy.max_task_age_seconds:.0f}s)",
        )
        entry = history_entry(iso_utc(at), stage, task.attempt, gone.category, None, gone.message)
        history = [*task.history, entry]
        dead = task_dead_letter(task, gone, stage, source, at, policy, history, first)
        facts = {"error_category": gone.category, "error_message": gone.message}
        result_msg = result_message(task, stage, "dead", at, **facts)
        return OutMessage("dead", topics.dlq, task.trace_id, dead), OutMessage(
            "result", topics.results, task.trace_id, result_msg
        )
    tier_delay = float(policy.delays_seconds[min(max(task.attempt, 0), len(policy.delays_seconds) - 1)])
    wait = result.retry_after_seconds if result.category == "circuit_open" else tier_delay
    step = policy.hold(task.attempt, at, wait or 0.0)
    held = replace(
        task,
        first_attempt_at=first,
        due_at=iso_utc(step.due_at),
        retry_stage=stage,
        return_topic=return_topic,
        breaker_waits=task.breaker_waits + 1,
    )
    facts = {"error_category": result.category, "error_message": result.message}
    return (
        OutMessage("held", step.topic, task.trace_id, wrap(held) if wrap else held),
        OutMessage("result", topics.results, task.trace_id, result_message(task, stage, "retrying", at, **facts)),
    )
