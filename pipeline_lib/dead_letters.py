"""The dead-letter factories of the per-record stages, one per cause.

| factory                | for                                                  | category                    |
| ---------------------- | ---------------------------------------------------- | --------------------------- |
| `task_dead_letter`     | a task that failed for good, or has no attempt left  | the failure's, or exhausted |
| `malformed_input`      | a record a stage cannot read                         | malformed                   |
| `internal_dead_letter` | a record whose handling raised (`internal_failure`)  | internal                    |

Where each goes (the DLQ topic, with a results message when there is a task) is routing.py's.
"""

from __future__ import annotations

import traceback
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline_lib import ids
from pipeline_lib.contracts import DeadLetter, DownloadTask, SourceRef
from pipeline_lib.failures import Failure, failure
from pipeline_lib.records import InputRecord
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.times import iso_utc


def task_dead_letter(
    task: DownloadTask,
    result: Failure,
    stage: str,
    source: SourceRef | None,
    at: datetime,
    policy: RetryPolicy,
    history: list[dict[str, Any]],
    first_attempt_at: str,
) -> DeadLetter:
    """The dead letter of `task` after its last attempt: a permanent failure, or a transient one with
    no attempt left (category `exhausted`); `history` already holds this attempt's entry."""
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


def malformed_input(stage: str, reason: str, record: InputRecord, at: datetime) -> DeadLetter:
    """A record a stage cannot read: dead-lettered with its provenance and payload, never dropped
    (a record without a value has the empty payload)."""
    payload = record.value if record.value is not None else b""
    return DeadLetter.malformed(stage, reason, payload, record.source, at)


def internal_failure(exc: BaseException, stage: str) -> Failure:
    """An unexpected exception while handling one record, as a permanent failure naming its type and place."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    return failure("internal", f"{type(exc).__name__} while the {stage} stage handled this record: {exc}{where}")


def internal_dead_letter(stage: str, exc: BaseException, record: InputRecord, at: datetime) -> DeadLetter:
    """The dead letter of a record whose handling raised: its provenance, the record, the exception type."""
    reason = internal_failure(exc, stage).message
    dead = DeadLetter.malformed(stage, reason, record.value, record.source, at)
    return replace(dead, category="internal")
