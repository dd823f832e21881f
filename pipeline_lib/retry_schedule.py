"""What the retry scheduler needs from a message on a retry tier, without Spark: where it goes
back to and when. Read from the `xact.retry.*` headers (contracts.py), so the scheduler never
parses a body and serves every stage's messages alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pipeline_lib.bounds import checked_time
from pipeline_lib.contracts import H_ATTEMPT, H_RETRY_DUE_AT, H_RETRY_TICK, H_RETRY_TOPIC, H_TASK_ID, DeadLetter
from pipeline_lib.dead_letters import internal_dead_letter
from pipeline_lib.errors import PipelineError
from pipeline_lib.records import InputRecord
from pipeline_lib.times import parse_iso

STAGE = "retry"


@dataclass(frozen=True)
class Waiting:
    """A retry message waiting for its time."""

    group: str  # one state entry per task attempt: a redelivered copy replaces, not adds
    return_topic: str
    due_ms: int


class NotSchedulable(PipelineError, ValueError):
    """The message lacks what the scheduler needs; it is dead-lettered with this reason."""


def waiting_from_headers(
    headers: dict[str, str],
    allowed_topics: frozenset[str],
    source: str,
    *,
    now: datetime | None = None,
    longest_wait_seconds: float | None = None,
) -> Waiting:
    """The scheduling facts of a retry message, or NotSchedulable naming what is wrong.

    `source` ("topic/partition/offset") identifies a message without task headers. A due time
    further ahead of `now` than `longest_wait_seconds` (the longest any stage asks for, plus
    clock skew) was not written by a stage: it would park the task for that long.
    """
    due_text = headers.get(H_RETRY_DUE_AT)
    topic = headers.get(H_RETRY_TOPIC)
    if not due_text or not topic:
        raise NotSchedulable(f"retry message without the {H_RETRY_DUE_AT} and {H_RETRY_TOPIC} headers")
    try:
        due = checked_time(parse_iso(due_text, naive="error"), f"header {H_RETRY_DUE_AT}")
    except ValueError as exc:
        raise NotSchedulable(f"header {H_RETRY_DUE_AT} is not an ISO 8601 time with a zone in range: {exc}") from None
    if longest_wait_seconds is not None:
        latest = (now or datetime.now(UTC)) + timedelta(seconds=longest_wait_seconds)
        if due > latest:
            raise NotSchedulable(
                f"header {H_RETRY_DUE_AT} {due_text[:40]!r} is later than any retry tier or capped Retry-After "
                f"allows ({longest_wait_seconds:.0f} s from now)"
            )
    if topic not in allowed_topics:
        allowed = ", ".join(sorted(allowed_topics))
        raise NotSchedulable(f"header {H_RETRY_TOPIC} names {topic[:80]!r}, not a stage input topic ({allowed})")
    task, attempt = headers.get(H_TASK_ID), headers.get(H_ATTEMPT)
    group = f"{task}/{attempt}" if task and attempt else source
    return Waiting(group, topic, int(due.timestamp() * 1000))


def schedule_record(
    record: InputRecord,
    headers: dict[str, str],
    allowed_topics: frozenset[str],
    now: datetime,
    longest_wait_seconds: float,
) -> Waiting | DeadLetter | None:
    """What the scheduler does with one retry message: wait for it, or dead-letter it; None for the
    scheduler's own start tick (H_RETRY_TICK), which carries no task. Never raises."""
    source = f"{record.source.topic}/{record.source.partition}/{record.source.offset}"
    if H_RETRY_TICK in headers:
        return None
    try:
        return waiting_from_headers(headers, allowed_topics, source, now=now, longest_wait_seconds=longest_wait_seconds)
    except NotSchedulable as exc:
        return DeadLetter.malformed(STAGE, str(exc), record.value, record.source, now)
    except Exception as exc:  # noqa: BLE001 - one record must never fail the batch
        return internal_dead_letter(STAGE, exc, record, now)
