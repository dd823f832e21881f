"""What the retry scheduler needs from a message on a retry tier, without Spark: where it goes
back to and when. Read from the `xact.retry.*` headers (contracts.py), so the scheduler never
parses a body and serves every stage's messages alike.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline_lib.contracts import H_ATTEMPT, H_RETRY_DUE_AT, H_RETRY_TOPIC, H_TASK_ID
from pipeline_lib.errors import PipelineError
from pipeline_lib.times import parse_iso


@dataclass(frozen=True)
class Waiting:
    """A retry message waiting for its time."""

    group: str  # one state entry per task attempt: a redelivered copy replaces, not adds
    return_topic: str
    due_ms: int


class NotSchedulable(PipelineError, ValueError):
    """The message lacks what the scheduler needs; it is dead-lettered with this reason."""


def waiting_from_headers(headers: dict[str, str], allowed_topics: frozenset[str], source: str) -> Waiting:
    """The scheduling facts of a retry message, or NotSchedulable naming what is wrong.

    `source` ("topic/partition/offset") identifies a message without task headers.
    """
    due_text = headers.get(H_RETRY_DUE_AT)
    topic = headers.get(H_RETRY_TOPIC)
    if not due_text or not topic:
        raise NotSchedulable(f"retry message without the {H_RETRY_DUE_AT} and {H_RETRY_TOPIC} headers")
    try:
        due = parse_iso(due_text, naive="error")
    except ValueError as exc:
        raise NotSchedulable(f"header {H_RETRY_DUE_AT} is not an ISO 8601 time with a zone: {exc}") from None
    if topic not in allowed_topics:
        raise NotSchedulable(
            f"header {H_RETRY_TOPIC} names {topic!r}, not a stage input topic ({', '.join(sorted(allowed_topics))})"
        )
    task, attempt = headers.get(H_TASK_ID), headers.get(H_ATTEMPT)
    group = f"{task}/{attempt}" if task and attempt else source
    return Waiting(group, topic, int(due.timestamp() * 1000))
