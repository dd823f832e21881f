"""Health verdicts, without Spark: per stage, `ok`, `warn` or `failing`, and why, from the facts
`xact-pipeline health` gathers (spark/health_check.py: xact_pipeline_metrics, xact_dlq,
xact_attachments and the input topics' newest records).

    verdicts = [judge(facts, settings.health, now) for facts in gathered]
    print("\n".join(render(verdicts))); exit(exit_code(verdicts))

What each verdict looks at, and its thresholds (conf/base.yaml `health:`):
- **stalled**: the oldest input record written after the stage's last batch has waited longer
  than its stall limit (`stall_triggers` x its trigger, at least `min_stall_seconds`, plus the
  metrics' flush interval, since rows are buffered). A stage with no input waiting runs no batch
  and is `ok`: the retry scheduler, for one, runs none while it only holds retries.
- **lag**: the last batch's offsets behind the latest, `warn` from `lag_warn_records` when it grew
  over the window, `failing` from `lag_fail_records` whatever its trend.
- **dead letters**: the stage's dead letters per hour over the window (xact_dlq `failed_at`).
- **oldest open dead letter**: the age of its oldest `open` row.
- **breaker openings** in the window.
- **event-to-inventory p95** (results only) over the window.
Every rule gives `ok`, `warn` or `failing`; the stage's verdict is the worst of them, and the
exit code the worst over the stages: 0 all ok, 1 a warn, 2 a failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from pipeline_lib.config import HealthSettings

OK, WARN, FAILING = "ok", "warn", "failing"
LEVELS = (OK, WARN, FAILING)
EXIT_CODES = {OK: 0, WARN: 1, FAILING: 2}


@dataclass(frozen=True)
class StageFacts:
    """What is known about one stage over the window (None: not known, e.g. Kafka unreachable)."""

    stage: str
    trigger_seconds: float
    last_batch_at: datetime | None = None
    # The oldest record on its input topics written after its last batch (None: nothing waits).
    input_waiting_since: datetime | None = None
    input_checked: bool = True  # False: the topics could not be read (the reason says so)
    lags: Sequence[tuple[datetime, int]] = ()  # (batch time, lag_max) in the window, oldest first
    dead_letters: int = 0  # failed in the window
    oldest_open_dead_letter_at: datetime | None = None
    breaker_openings: int = 0
    latency_p95_seconds: float | None = None  # results only


@dataclass(frozen=True)
class Verdict:
    stage: str
    level: str
    reasons: tuple[str, ...] = field(default=())

    @property
    def line(self) -> str:
        return f"{self.stage:<16} {self.level:<8} {'; '.join(self.reasons) or 'nothing to report'}"


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def stall_limit_seconds(facts: StageFacts, health: HealthSettings, flush_seconds: float) -> float:
    """How long input may wait for a batch before the stage counts as stalled."""
    return max(health.stall_triggers * facts.trigger_seconds, health.min_stall_seconds) + flush_seconds


def _stalled(facts: StageFacts, health: HealthSettings, now: datetime, flush_seconds: float) -> tuple[str, str]:
    if not facts.input_checked:
        return WARN, "input not checked: Kafka could not be read"
    last = facts.last_batch_at
    last_said = f"last batch {_ago((now - last).total_seconds())} ago" if last is not None else "no batch in the window"
    waiting = facts.input_waiting_since
    if waiting is None:
        return OK, f"{last_said}, no input waiting"
    limit = stall_limit_seconds(facts, health, flush_seconds)
    waited = (now - waiting).total_seconds()
    if waited <= limit:
        return OK, f"{last_said}, input waiting {_ago(max(waited, 0))} (limit {_ago(limit)})"
    return FAILING, f"stalled: input waiting {_ago(waited)} (limit {_ago(limit)}), {last_said}"


def _lag(facts: StageFacts, health: HealthSettings) -> tuple[str, str] | None:
    if not facts.lags:
        return None
    first, last = facts.lags[0][1], facts.lags[-1][1]
    if last >= health.lag_fail_records:
        return FAILING, f"lag {last:,} records (failing from {health.lag_fail_records:,})"
    if last >= health.lag_warn_records and last > first:
        return WARN, f"lag {last:,} records and growing (from {first:,} in the window)"
    return None


def _rate(count: int, window_hours: float, warn: float, fail: float, what: str) -> tuple[str, str] | None:
    per_hour = count / window_hours if window_hours > 0 else float(count)
    if count and per_hour >= fail:
        return FAILING, f"{count:,} {what} in the window ({per_hour:,.1f}/h, failing from {fail:g}/h)"
    if count and per_hour >= warn:
        return WARN, f"{count:,} {what} in the window ({per_hour:,.1f}/h, warn from {warn:g}/h)"
    return None


def judge(facts: StageFacts, health: HealthSettings, now: datetime, *, flush_seconds: float = 0.0) -> Verdict:
    """The verdict on one stage: the worst of its rules, with every reason that is not ok."""
    window_hours = health.window_minutes / 60
    found: list[tuple[str, str]] = []
    level, reason = _stalled(facts, health, now, flush_seconds)
    found.append((level, reason))
    found.extend(r for r in [_lag(facts, health)] if r is not None)
    dead = _rate(
        facts.dead_letters,
        window_hours,
        health.dead_letters_warn_per_hour,
        health.dead_letters_fail_per_hour,
        "dead letters",
    )
    if dead is not None:
        found.append(dead)
    if facts.oldest_open_dead_letter_at is not None:
        age = (now - facts.oldest_open_dead_letter_at).total_seconds()
        if age >= health.open_dead_letter_fail_hours * 3600:
            found.append((FAILING, f"oldest open dead letter {_ago(age)} old"))
        elif age >= health.open_dead_letter_warn_hours * 3600:
            found.append((WARN, f"oldest open dead letter {_ago(age)} old"))
    breakers = facts.breaker_openings
    if breakers >= health.breaker_openings_fail:
        found.append((FAILING, f"{breakers} circuit-breaker openings in the window"))
    elif breakers >= health.breaker_openings_warn:
        found.append((WARN, f"{breakers} circuit-breaker opening(s) in the window"))
    p95 = facts.latency_p95_seconds
    if p95 is not None:
        if p95 >= health.latency_p95_fail_seconds:
            found.append((FAILING, f"event-to-inventory p95 {p95:,.0f} s"))
        elif p95 >= health.latency_p95_warn_seconds:
            found.append((WARN, f"event-to-inventory p95 {p95:,.0f} s"))
        else:
            found.append((OK, f"event-to-inventory p95 {p95:,.1f} s"))
    worst = max((lvl for lvl, _ in found), key=LEVELS.index)
    # The reasons that made the verdict first; an ok stage says its one-line state.
    reasons = [r for lvl, r in found if lvl != OK] or [r for lvl, r in found if lvl == OK]
    return Verdict(facts.stage, worst, tuple(reasons))


def exit_code(verdicts: Iterable[Verdict]) -> int:
    """0 when every stage is ok, 1 for any warn, 2 for any failing."""
    return max((EXIT_CODES[v.level] for v in verdicts), default=0)


def task_exit_code(verdicts: Iterable[Verdict], fail_on_warn: bool) -> int:
    """The exit code of the scheduled health task: a warn fails it only with `fail_on_warn`."""
    code = exit_code(verdicts)
    return code if code == 2 or (code == 1 and fail_on_warn) else 0


def render(verdicts: Sequence[Verdict], now: datetime, window: timedelta) -> list[str]:
    """The lines `xact-pipeline health` prints: a header, one line per stage, a summary."""
    worst = max((v.level for v in verdicts), key=LEVELS.index, default=OK)
    counts = {lvl: sum(v.level == lvl for v in verdicts) for lvl in LEVELS}
    head = f"health at {now:%Y-%m-%d %H:%M:%S} UTC, window {_ago(window.total_seconds())}"
    summary = f"overall: {worst} ({counts[OK]} ok, {counts[WARN]} warn, {counts[FAILING]} failing)"
    return [head, *(v.line for v in verdicts), summary]
