"""Where a failed attempt goes next: the retry tiers from config (retry.delays_seconds).

Attempts are numbered from 0 (the first try). When attempt n fails transiently and attempts
remain, the task goes to tier n (topic `<pending>.retry.<delay n>`), due `delays[n]` seconds after
the failure, or later when the server's Retry-After asks for more (never more than
retry.max_retry_after_seconds, by default the last tier's delay). After the last tier there is no
attempt left: the task is dead-lettered as `exhausted`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pipeline_lib.config import Settings


@dataclass(frozen=True)
class RetryStep:
    topic: str
    delay_seconds: float
    due_at: datetime
    next_attempt: int


@dataclass(frozen=True)
class RetryPolicy:
    delays_seconds: tuple[int, ...]
    topics: tuple[str, ...]
    retry_after_cap_seconds: float | None = None  # None: the last tier's delay
    max_task_age_seconds: float = 86400.0
    breaker_open_seconds: float = 60.0  # the longest a breaker wait lasts (download or upload)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        r = settings.retry
        breaker = max(settings.download.breaker.open_seconds, settings.upload.breaker.open_seconds)
        return cls(r.delays_seconds, settings.retry_topics, r.retry_after_cap_seconds, r.max_task_age_seconds, breaker)

    @property
    def max_attempts(self) -> int:
        return len(self.delays_seconds) + 1

    @property
    def longest_wait_seconds(self) -> float:
        """The longest a stage ever asks a retry to wait, plus 5 minutes of clock skew between hosts."""
        cap = self.retry_after_cap_seconds or self.delays_seconds[-1]
        return max(float(self.delays_seconds[-1]), float(cap), self.breaker_open_seconds) + 300

    def next_step(self, attempt: int, failed_at: datetime, retry_after: float | None = None) -> RetryStep | None:
        """The retry of a transient failure of `attempt`, or None when no attempt is left."""
        if attempt + 1 >= self.max_attempts:
            return None
        tier = max(attempt, 0)
        delay = float(self.delays_seconds[tier])
        if retry_after is not None and retry_after > delay:
            # The server's minimum wins, up to the cap; the tier's topic stays the same.
            cap = self.retry_after_cap_seconds or float(self.delays_seconds[-1])
            delay = max(delay, min(retry_after, cap))
        return RetryStep(self.topics[tier], delay, failed_at + timedelta(seconds=delay), attempt + 1)

    def hold(self, attempt: int, failed_at: datetime, wait_seconds: float) -> RetryStep:
        """A wait that is no attempt (a circuit-breaker refusal, a full cache): the current attempt's
        tier, due after `wait_seconds` (at most a breaker window or the last tier), the attempt
        number unchanged."""
        tier = min(max(attempt, 0), len(self.topics) - 1)
        wait = min(max(wait_seconds, 1.0), max(self.breaker_open_seconds, float(self.delays_seconds[-1])))
        return RetryStep(self.topics[tier], wait, failed_at + timedelta(seconds=wait), attempt)
