"""Replaying dead letters, without Spark or Kafka: which rows an analyst means, which of them can be
replayed, and what a replayed task looks like. Shared by the DLQ CLI, the notebook and
`pipeline_lib.spark.replay`, which does the I/O.

    DlqSelection(categories=("http_transient",), hosts=("files.example.com",), since="2026-11-01")

Every field of a selection narrows it; an empty selection means every row with a selectable
status (open; also replayed when forced). The selection is stored with a replay as its lineage.

Replay needs the live URL, which the DLQ never holds (invariant 5): it reads the dead letter's
source record (topic, partition, offset: the provenance) back from Kafka, where the task still
has it, as long as the topic's retention keeps it. A row whose source is gone is reported as
skipped and stays open.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import orjson

from pipeline_lib.contracts import CachedAttachment, ContractError, DownloadTask, SourceRef
from pipeline_lib.errors import PipelineError
from pipeline_lib.times import parse_iso

STATUSES = ("open", "replayed", "resolved")


class SelectionError(PipelineError, ValueError):
    """A filter value is malformed, or a command lacks what it needs; the message names which."""

    exit_code = 2


def _check_time(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        parse_iso(value)
    except ValueError:
        raise SelectionError(f"{name}: {value!r} is not an ISO 8601 date or time, e.g. 2026-11-27T10:00:00Z") from None


@dataclass(frozen=True)
class DlqSelection:
    task_ids: tuple[str, ...] = ()
    trace_ids: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    stages: tuple[str, ...] = ()
    since: str | None = None  # failed_at >= since (ISO 8601, UTC when no zone)
    until: str | None = None  # failed_at < until
    statuses: tuple[str, ...] = field(default=("open",))

    def __post_init__(self) -> None:
        _check_time("since", self.since)
        _check_time("until", self.until)
        bad = set(self.statuses) - set(STATUSES)
        if bad:
            raise SelectionError(f"statuses: {', '.join(sorted(bad))} is not one of {', '.join(STATUSES)}")

    def forced(self) -> DlqSelection:
        """The selection of a forced replay: rows replayed before are selectable again."""
        return self if "replayed" in self.statuses else replace(self, statuses=(*self.statuses, "replayed"))

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    def describe(self) -> str:
        parts = [f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in asdict(self).items() if v]
        return " ".join(parts) or "everything"


def resolve_note(note: str | None) -> str:
    """The note a resolve stores; SelectionError when there is none."""
    if not note or not note.strip():
        raise SelectionError("dlq resolve needs --note saying why the rows are resolved (e.g. --note 'claim closed')")
    return note.strip()


@dataclass(frozen=True)
class DeadRow:
    """The columns of one xact_dlq row that replay reads."""

    dlq_id: str
    stage: str
    category: str
    attempts: int | None
    task_id: str | None
    trace_id: str | None
    has_task: bool  # the dead letter carries a (redacted) task
    source: SourceRef | None  # where the task was read when it died


@dataclass
class ReplayReport:
    replay_id: str
    selection: DlqSelection
    dry_run: bool
    replayed: list[dict[str, Any]] = field(default_factory=list)  # dlq_id, task_id, trace_id, attempts, category
    skipped: list[dict[str, Any]] = field(default_factory=list)  # dlq_id, reason

    def describe(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        lines = [
            f"{verb} {len(self.replayed)} dead letter(s), skipped {len(self.skipped)} [{self.selection.describe()}]"
        ]
        lines += [
            f"  {verb}: {r['dlq_id']} task {r['task_id']} ({r['category']}, {r['attempts']} attempts)"
            for r in self.replayed
        ]
        lines += [f"  skipped: {s['dlq_id']}: {s['reason']}" for s in self.skipped]
        if not self.dry_run and self.replayed:
            lines.append(f"  replay id {self.replay_id}")
        return "\n".join(lines)


def new_replay_id() -> str:
    return f"replay-{uuid.uuid4().hex[:12]}"


def task_from_record(value: bytes | str | None, task_id: str) -> DownloadTask | str:
    """The task a source record holds (a download task, or a cached attachment's task), or why not."""
    raw = value if value is not None else b""
    try:
        task = DownloadTask.decode(raw)
    except ContractError:
        try:
            task = CachedAttachment.decode(raw).download_task
        except ContractError as exc:
            return f"its source record is not a task: {exc}"
    if task.task_id != task_id:
        return f"the source record holds task {task.task_id}, not {task_id}"
    return task


def reset_for_replay(task: DownloadTask, replay_id: str) -> DownloadTask:
    """A dead task as replay re-publishes it: a fresh attempt budget, tagged with the replay, one
    generation later (the results fold ranks a task's outcomes by generation before attempt)."""
    return replace(
        task,
        attempt=0,
        history=[],
        replay_id=replay_id,
        replay_generation=task.replay_generation + 1,
        due_at=None,
        retry_stage=None,
        return_topic=None,
        first_attempt_at=None,
    )


def plan_replay(
    rows: Iterable[DeadRow],
    live_task: Callable[[SourceRef, str], DownloadTask | str],
    report: ReplayReport,
) -> list[DownloadTask]:
    """The tasks to re-publish for `rows`, recording every replayed and skipped row in `report`.

    `live_task(source, task_id)` reads the task back from its source record, or says why it cannot.
    """
    tasks: list[DownloadTask] = []
    for row in rows:
        if not row.has_task or not row.task_id:
            reason = f"a {row.stage} dead letter carries no task; fix the input upstream and re-send it"
            report.skipped.append({"dlq_id": row.dlq_id, "reason": reason})
            continue
        if row.source is None:
            report.skipped.append({"dlq_id": row.dlq_id, "reason": "no source record to recover the live URL from"})
            continue
        found = live_task(row.source, row.task_id)
        if isinstance(found, str):
            report.skipped.append({"dlq_id": row.dlq_id, "reason": found})
            continue
        tasks.append(reset_for_replay(found, report.replay_id))
        report.replayed.append(
            {
                "dlq_id": row.dlq_id,
                "task_id": row.task_id,
                "trace_id": row.trace_id,
                "attempts": row.attempts,
                "category": row.category,
            }
        )
    return tasks
