"""Per-key circuit breakers (a source host, or the storage endpoint), shared by the threads of one
Python process.

closed -> open after `failure_threshold` consecutive failures; open -> half-open after
`open_seconds`, letting exactly one probe through; the probe's success closes it, its failure
opens it again for another `open_seconds`. While open, callers skip the request and send the task
to retry (category circuit_open).

Scope: PySpark runs one Python worker per concurrently running task and reuses it across tasks
(spark.python.worker.reuse, on by default), so a breaker is shared by every download thread of
that worker and by later tasks it runs. Workers do not share breakers with each other: on an
executor with N task slots a failing host costs at most N x failure_threshold requests per
`open_seconds` before all of them are open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline_lib.logs import get_logger

log = get_logger("breaker")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass
class CircuitBreaker:
    name: str
    failure_threshold: int = 5
    open_seconds: float = 60.0
    clock: Callable[[], float] = time.monotonic
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    openings: int = 0  # how many times it opened, for metrics
    _probe_out: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def allow(self) -> bool:
        """May a request go out now? In half-open state only one probe at a time is allowed."""
        with self._lock:
            if self.state == CLOSED:
                return True
            if self.state == OPEN and self.clock() - self.opened_at >= self.open_seconds:
                self.state = HALF_OPEN
                self._probe_out = False
                log.info("circuit %s half-open: sending one probe", self.name)
            if self.state == HALF_OPEN and not self._probe_out:
                self._probe_out = True
                return True
            return False

    def seconds_until_probe(self) -> float:
        """How long until this breaker lets a request out again (0 when closed).

        Open: until its half-open probe. Half-open with the probe out: a short while, for the
        probe's answer.
        """
        with self._lock:
            if self.state == CLOSED:
                return 0.0
            if self.state == OPEN:
                return max(0.0, self.open_seconds - (self.clock() - self.opened_at))
            return max(1.0, self.open_seconds / 10)

    def record_success(self) -> None:
        with self._lock:
            if self.state != CLOSED:
                log.info("circuit %s closed: the probe succeeded", self.name)
            self.state, self.failures, self._probe_out = CLOSED, 0, False

    def record_failure(self) -> bool:
        """Count a failure; True when this failure opened the breaker."""
        with self._lock:
            self.failures += 1
            if self.state == HALF_OPEN or (self.state == CLOSED and self.failures >= self.failure_threshold):
                self.state, self.opened_at, self._probe_out = OPEN, self.clock(), False
                self.openings += 1
                log.warning(
                    "circuit %s open after %d consecutive failure(s): requests skipped for %.0fs",
                    self.name,
                    self.failures,
                    self.open_seconds,
                )
                return True
            return False

    def record_neutral(self) -> None:
        """An outcome that says nothing about the host's health (a 404, a policy refusal)."""
        with self._lock:
            if self.state == HALF_OPEN:
                self.state, self.failures, self._probe_out = CLOSED, 0, False


class BreakerRegistry:
    """One breaker per key, created on first use with the same thresholds."""

    def __init__(self, failure_threshold: int, open_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.failure_threshold, self.open_seconds, self.clock = failure_threshold, open_seconds, clock
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> CircuitBreaker:
        with self._lock:
            breaker = self._breakers.get(key)
            if breaker is None:
                breaker = self._breakers[key] = CircuitBreaker(
                    key, self.failure_threshold, self.open_seconds, self.clock
                )
            return breaker

    def states(self) -> dict[str, str]:
        with self._lock:
            return {key: b.state for key, b in self._breakers.items()}


_registries: dict[tuple[str, int, float], BreakerRegistry] = {}
_registries_lock = threading.Lock()


def shared_registry(scope: str, failure_threshold: int, open_seconds: float) -> BreakerRegistry:
    """The process-wide registry for `scope` ("download", "upload") and these thresholds."""
    key = (scope, failure_threshold, open_seconds)
    with _registries_lock:
        registry = _registries.get(key)
        if registry is None:
            registry = _registries[key] = BreakerRegistry(failure_threshold, open_seconds)
        return registry
