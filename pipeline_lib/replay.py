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

import heapq
import math
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TypeVar

import orjson

from pipeline_lib.config import Settings
from pipeline_lib.contracts import CachedAttachment, ContractError, DownloadTask, SourceRef
from pipeline_lib.errors import PipelineError
from pipeline_lib.times import parse_iso

# replaying: claimed by a replay (its replay_id) and not yet confirmed on Kafka; `--resume ID`
# finishes it. replayed: its task is on the pending topic again.
STATUSES = ("open", "replaying", "replayed", "resolved")
MAX_RATE = 100_000.0  # rows per second: replay.rows_per_second's own bound
SHOWN_ROWS = 20  # rows a report lists one by one; the rest are counted


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

    def check_replayable(self) -> DlqSelection:
        """SelectionError when the selection takes rows a replay holds (`replaying`)."""
        if "replaying" in self.statuses:
            raise SelectionError(
                "rows `replaying` belong to a replay that may have published them: finish it with "
                "`xact-pipeline dlq replay --resume REPLAY_ID` (replay selects open rows, forced also replayed ones; "
                "resolve takes them once it finished)"
            )
        return self

    def forced(self) -> DlqSelection:
        """The selection of a forced replay: rows replayed before are selectable again (never rows
        another replay has claimed and not finished: that would publish them twice)."""
        return self if "replayed" in self.statuses else replace(self, statuses=(*self.statuses, "replayed"))

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_json(cls, text: str | None) -> DlqSelection:
        """The selection a replay stored (`replay_selection`); an unreadable one is `everything`."""
        try:
            data = orjson.loads(text or "{}")
            known = {
                k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in cls.__dataclass_fields__
            }
            return cls(**known)  # type: ignore[arg-type]
        except (ValueError, TypeError, AttributeError, SelectionError):  # not JSON, not an object, bad values
            return cls()

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
    host: str | None = None  # the source host the replayed task will be fetched from
    failed_date: str | None = None  # the row's partition


@dataclass(frozen=True)
class ReplayRate:
    """How fast a replay publishes: at most `total` tasks a second, `per_host` for one source host."""

    total: float
    per_host: float

    def describe(self) -> str:
        return f"{self.total:g} rows/s, {self.per_host:g} per host"


class Pacer:
    """The replay's rate cap: a GCRA per host and one for all of them. Each keeps the time its next
    send is due (`max(due, sent) + 1/rate`), so sends keep to the rate's grid; with
    `catch_up=True` a send may go up to one gap early, which makes up for the small delays of a
    real loop (waking, producing, a flush) without drifting below the rate. A sender that was
    later than that earns no more credit: no window of w seconds holds more than w x rate + 2
    sends, for all hosts or for one. The plan (pace_order) runs without catch-up."""

    def __init__(self, rate: ReplayRate, *, catch_up: bool = False) -> None:
        self._total_gap = 1.0 / rate.total
        self._host_gap = 1.0 / rate.per_host
        self._early_total = self._total_gap if catch_up else 0.0
        self._early_host = self._host_gap if catch_up else 0.0
        self._next_any = -math.inf
        self._next_host: dict[str | None, float] = {}

    def ready_at(self, host: str | None, now: float) -> float:
        return max(
            now,
            self._next_any - self._early_total,
            self._next_host.get(host, -math.inf) - self._early_host,
        )

    def any_ready(self, now: float) -> float:
        return max(now, self._next_any - self._early_total)

    def host_ready(self, host: str | None) -> float:
        return self._next_host.get(host, -math.inf) - self._early_host

    def sent(self, host: str | None, at: float) -> None:
        self._next_any = max(self._next_any, at) + self._total_gap
        self._next_host[host] = max(self._next_host.get(host, -math.inf), at) + self._host_gap


T = TypeVar("T")
TIME_EPSILON = 1e-9


def pace_order(items: Sequence[T], host_of: Callable[[T], str | None], rate: ReplayRate) -> list[tuple[float, T]]:
    """`items` in the order a replay sends them, each with its planned send time (seconds from the
    start) under `rate`. Whenever the caps allow a send, it goes to the host with the most rows
    left among the hosts whose own cap allows one (ties: first seen), so the host that bounds the
    replay never waits on the others and one slow host never holds them back. The last time is
    the replay's duration; a replay follows this order, so its dry run's estimate and its progress
    agree. O(n log hosts)."""
    queues: dict[str | None, list[T]] = {}
    for item in items:
        queues.setdefault(host_of(item), []).append(item)
    pacer = Pacer(rate)
    waiting = [(-math.inf, i, host) for i, host in enumerate(queues)]  # (host's next time, order, host)
    ready: list[tuple[int, int, str | None]] = []  # (-rows left, order, host)
    taken = dict.fromkeys(queues, 0)
    plan: list[tuple[float, T]] = []
    now = 0.0
    while waiting or ready:
        if not ready and waiting[0][0] > now:
            now = waiting[0][0]
        while waiting and waiting[0][0] <= now + TIME_EPSILON:  # sums of 1/rate are not exact
            _, i, host = heapq.heappop(waiting)
            heapq.heappush(ready, (taken[host] - len(queues[host]), i, host))
        _, i, host = heapq.heappop(ready)
        pacer.sent(host, now)
        plan.append((now, queues[host][taken[host]]))
        taken[host] += 1
        if taken[host] < len(queues[host]):
            heapq.heappush(waiting, (pacer.host_ready(host), i, host))
        now = pacer.any_ready(now)  # the total cap's next time
    return plan


def pace_setter(hosts: Iterable[str | None], rate: ReplayRate) -> str:
    """What bounds a replay's duration: the total cap, or the host with the most rows at its cap."""
    counts = Counter(hosts)
    if not counts:
        return "nothing to replay"
    host, most = counts.most_common(1)[0]
    total = sum(counts.values())
    if most / rate.per_host > total / rate.total:
        return f"host {host or 'unknown'} ({most} rows at {rate.per_host:g}/s) sets the pace"
    return f"the total cap ({total} rows at {rate.total:g}/s) sets the pace"


def replay_rate(settings: Settings, total: float | None = None, per_host: float | None = None) -> ReplayRate:
    """The caps from `replay:` in config, each overridden when given (--rate, --host-rate)."""
    total = settings.replay.rows_per_second if total is None else total
    per_host = settings.replay.rows_per_second_per_host if per_host is None else per_host
    if not (0 < total <= MAX_RATE and 0 < per_host <= MAX_RATE):
        raise SelectionError(
            f"replay rates must be above 0 and at most {MAX_RATE:g} rows/s "
            f"(got --rate {total:g}, --host-rate {per_host:g})"
        )
    return ReplayRate(total, min(per_host, total))


def format_duration(seconds: float) -> str:
    """E.g. `45 s`, `16m 20s`, `2h 05m`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class ReplayProgress:
    """Progress lines of a running replay: rows done, the rate so far, the time left by the plan.

    `planned` holds the plan's send times; `emit` gets a line at most every `every` seconds (and
    the last one whatever the interval)."""

    def __init__(
        self,
        replay_id: str,
        planned: Sequence[float],
        emit: Callable[[str], None],
        every: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.replay_id, self._planned, self._emit, self._every, self._clock = replay_id, planned, emit, every, clock
        self._start = clock()
        self._last = self._start

    def line(self, done: int) -> str:
        total = len(self._planned)
        elapsed = self._clock() - self._start
        rate = done / elapsed if elapsed > 0 else 0.0
        left = self._planned[-1] - self._planned[done - 1] if 0 < done <= total else (self._planned or [0.0])[-1]
        share = 100.0 * done / total if total else 100.0
        return (
            f"replay {self.replay_id}: {done} of {total} rows ({share:.1f} %), {rate:.1f} rows/s, "
            f"about {format_duration(left)} left"
        )

    def update(self, done: int, *, final: bool = False) -> None:
        now = self._clock()
        if final or now - self._last >= self._every:
            self._last = now
            self._emit(self.line(done))


@dataclass
class ReplayReport:
    replay_id: str
    selection: DlqSelection
    dry_run: bool
    # dlq_id, task_id, trace_id, attempts, category, host: published (or, dry, would be)
    replayed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # dlq_id, reason
    rate: ReplayRate | None = None
    planned_seconds: float = 0.0  # the replay's duration at the caps (the last planned send)
    pace: str = ""  # what sets that duration
    resumed: bool = False
    already_published: int = 0  # resume: rows the interrupted run had published (found on Kafka)
    cancelled: bool = False
    remaining: int = 0  # rows still `replaying` when the replay stopped early

    def describe(self) -> str:
        verb = "would replay" if self.dry_run else "replayed"
        count = len(self.replayed) + self.already_published
        head = f"{verb} {count} dead letter(s), skipped {len(self.skipped)} [{self.selection.describe()}]"
        if self.resumed:
            head = f"resumed {self.replay_id}: {head}; {self.already_published} of them were on Kafka already"
        lines = [head]
        if self.rate is not None and self.replayed:
            took = "would take" if self.dry_run else "planned"
            lines.append(
                f"  at {self.rate.describe()}: {took} about {format_duration(self.planned_seconds)} ({self.pace})"
            )
        lines += _listed(
            [
                f"  {verb}: {r['dlq_id']} task {r['task_id']} ({r['category']}, {r['attempts']} attempts)"
                for r in self.replayed
            ],
            "replayed" if not self.dry_run else "to replay",
        )
        lines += _listed([f"  skipped: {s['dlq_id']}: {s['reason']}" for s in self.skipped], "skipped")
        if self.cancelled:
            lines.append(
                f"  stopped early: {self.remaining} row(s) stay `replaying`; continue with "
                f"`xact-pipeline dlq replay --resume {self.replay_id}`"
            )
        elif not self.dry_run and count:
            lines.append(f"  replay id {self.replay_id}")
        return "\n".join(lines)


def _listed(lines: list[str], what: str) -> list[str]:
    if len(lines) <= SHOWN_ROWS:
        return lines
    return [*lines[:SHOWN_ROWS], f"  ... and {len(lines) - SHOWN_ROWS} more {what} (`dlq list` shows every row)"]


REPLAY_ID = re.compile(r"replay-[0-9a-f]{12}")


def new_replay_id() -> str:
    return f"replay-{uuid.uuid4().hex[:12]}"


def check_replay_id(text: str | None) -> str:
    """A replay id as `--resume` takes it; SelectionError naming the form otherwise (an empty
    shell variable must not start a new replay of everything)."""
    if text is None or not REPLAY_ID.fullmatch(text.strip()):
        raise SelectionError(
            f"--resume: {text!r} is not a replay id such as replay-1a2b3c4d5e6f "
            "(`xact-pipeline dlq list --status replaying` shows the ids of unfinished replays)"
        )
    return text.strip()


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
    A task is published once per replay: when several rows hold one task (a forced replay selects
    its earlier, replayed dead letters too) it is replayed from the row whose task is of the latest
    generation, and the others ride along (`duplicate_of`) and are marked with it. Two copies would
    start two attempt chains of one generation.
    """
    chosen: dict[str, tuple[DeadRow, DownloadTask]] = {}
    extra: dict[str, list[DeadRow]] = {}
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
        before = chosen.get(row.task_id)
        if before is None or found.replay_generation > before[1].replay_generation:
            if before is not None:
                extra.setdefault(row.task_id, []).append(before[0])
            chosen[row.task_id] = (row, found)
        else:
            extra.setdefault(row.task_id, []).append(row)
    tasks: list[DownloadTask] = []
    for task_id, (row, found) in chosen.items():
        tasks.append(reset_for_replay(found, report.replay_id))
        report.replayed.append(_entry(row))
        report.replayed.extend({**_entry(other), "duplicate_of": row.dlq_id} for other in extra.get(task_id, []))
    return tasks


def _entry(row: DeadRow) -> dict[str, Any]:
    return {
        "dlq_id": row.dlq_id,
        "task_id": row.task_id,
        "trace_id": row.trace_id,
        "attempts": row.attempts,
        "category": row.category,
        "host": row.host,
        "failed_date": row.failed_date,
    }
