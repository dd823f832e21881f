"""What the supervisor of the streaming queries decides, without Spark: when a failed query is
started again, what a person reads about it, and how a stop ends.

    xact-pipeline run      -> spark.supervisor.Supervisor over every stage, one Spark application
    xact-pipeline ingest   -> the same supervisor over one stage

A query that fails is restarted from its checkpoint after a cooldown that doubles while it keeps
failing (streaming.restart_initial_seconds, up to streaming.restart_max_seconds), like a circuit
breaker; a query that has run for streaming.healthy_after_seconds since its start counts as
healthy again and its next failure starts over at the initial cooldown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline_lib.redaction import redact, truncate

# Exit codes of a supervised run.
EXIT_OK = 0  # every query finished (available-now) or stopped between batches
EXIT_ABANDONED = 75  # stopped with a batch in flight: it was not committed and runs again at the next start
EXIT_FAILED = 1  # a query failed and the run was not allowed to restart it (available-now, --timeout)


@dataclass(frozen=True)
class Cooldown:
    """The wait before the n-th consecutive restart of a query: initial, doubling, at most maximum."""

    initial_seconds: float
    max_seconds: float

    def after(self, failures: int) -> float:
        if failures <= 0:
            return 0.0
        return min(self.max_seconds, self.initial_seconds * 2 ** min(failures - 1, 32))


@dataclass
class StageState:
    """One supervised query, as the supervisor and the status line see it."""

    name: str
    state: str = "waiting"  # waiting (to start or restart) | running | finished | stopped
    failures: int = 0  # consecutive failures
    restarts: int = 0  # restarts in this run
    started_at: float | None = None
    restart_at: float = 0.0
    last_error: str | None = None
    last_batch: int | None = None
    rows_per_second: float | None = None
    lag: int | None = None
    extra: dict[str, float] = field(default_factory=dict)

    def failed(self, error: str, now: float, cooldown: Cooldown, healthy_after: float) -> float:
        """Record a failure; returns the cooldown before the restart."""
        if self.started_at is not None and now - self.started_at >= healthy_after:
            self.failures = 0  # it had been healthy: this is a new fault, not the same one again
        self.failures += 1
        wait = cooldown.after(self.failures)
        self.state, self.restart_at, self.last_error = "waiting", now + wait, error
        return wait

    def describe(self, now: float) -> str:
        if self.state == "running":
            rate = f"{self.rows_per_second:.1f} rows/s" if self.rows_per_second is not None else "- rows/s"
            lag = f"lag {self.lag}" if self.lag is not None else "lag -"
            batch = f"batch {self.last_batch}" if self.last_batch is not None else "no batch yet"
            return f"{self.name} running, {batch}, {rate}, {lag}"
        if self.state == "waiting" and self.failures:
            return f"{self.name} restarting in {max(0.0, self.restart_at - now):.0f}s (failed {self.failures}x)"
        return f"{self.name} {self.state}"


def status_line(stages: list[StageState], now: float) -> str:
    """One line for a person: every query's state, last batch, rows/s and lag."""
    return "[run] " + " | ".join(s.describe(now) for s in stages)


_EXCEPTION_LINE = re.compile(
    r"(?:^|[\s:\[(])(?:[\w$]+\.)*(\w+(?:Error|Exception|Failure|Missing)): (.+)$", re.MULTILINE
)
_WRAPPERS = {"Py4JJavaError", "StreamingQueryException", "PythonException", "SparkException"}


def failure_summary(error: object, limit: int = 300) -> str:
    """A query's exception as one redacted line: the innermost exception it names (a Python worker's
    traceback or a JVM cause), not the wrappers around it and not the stack."""
    text = str(error).strip()
    causes = [(cls, msg.strip()) for cls, msg in _EXCEPTION_LINE.findall(text) if cls not in _WRAPPERS]
    if causes:
        cls, msg = causes[-1]
        line = f"{cls}: {msg}"
    else:
        line = text.splitlines()[0] if text else type(error).__name__
    for marker in ("TimeoutException", "Timed out waiting for a node assignment", "Connection refused"):
        if marker in text and "Kafka" not in line:
            line = f"Kafka unreachable? {line}"
            break
    return truncate(redact(line), limit)
