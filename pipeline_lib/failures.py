"""How a failed download or upload is classified: the one table the stages route by.

| category        | transient | what                                                                |
| --------------- | --------- | ------------------------------------------------------------------- |
| timeout         | yes       | connect or read timeout, or the total deadline passed (it covers    |
|                 |           | DNS, connect, headers and body)                                     |
| connection      | yes       | refused, reset (also mid-body), DNS lookup failed, a status line or |
|                 |           | header block the HTTP parser refuses (garbage, too long, too many)  |
| truncated       | yes       | the body ended before its Content-Length, the connection ended      |
|                 |           | inside the headers, or a gzip/deflate body before its stream's end  |
| http_transient  | yes       | 408, 425, 429 and every 5xx; Retry-After is a minimum delay         |
| circuit_open    | yes (3)   | the host's circuit breaker is open: no request was made             |
| disk_full       | yes (3)   | the local cache has no space left                                   |
| cache_io        | yes (3)   | the local cache could not be written (permissions, a lost mount)    |
| cache_lost      | yes (2)   | upload: the cached file is missing or does not match its checksum   |
| auth            | no (1)    | 401, 403                                                            |
| http_permanent  | no        | 400, 404, 410, 422 and every other 4xx; unexpected 1xx/2xx/3xx; a   |
|                 |           | response whose framing cannot be trusted (Content-Length not one    |
|                 |           | ASCII integer, a Transfer- or Content-Encoding it cannot decode)    |
| expired         | no        | the presigned URL has expired (or will within the margin): no request |
| policy          | no        | the URL policy refused the URL or a redirect hop (scheme, host,     |
|                 |           | address, credentials, a Location that cannot be parsed), or there   |
|                 |           | were too many redirects                                             |
| too_large       | no        | Content-Length or the bytes counted exceed download.max_bytes       |
| content_type    | no        | the extension is not allowed, or the content type contradicts it    |
| host_unavailable | no       | the source host (or the storage endpoint) kept its circuit breaker  |
|                 |           | open for longer than retry.max_task_age_seconds (3)                 |
| cache_unavailable | no      | the cache stayed full or unwritable longer than that (3)            |
| internal        | no        | handling the record raised unexpectedly (a bug, or input nothing    |
|                 |           | else catches): its dead letter names the exception type             |

(1) transient when download.auth_errors_transient is true and the URL has not expired; for the
    storage endpoint a 401 (a token to refresh) is transient and a 403 permanent.
(2) not a retry tier: the task goes straight back to the pending topic for a fresh download.
(3) `circuit_open`, `disk_full` and `cache_io` use no attempt: no request was made, or the source
    served fine and this host could not keep the file. The task waits on its current tier (for the
    breaker's next probe, or the tier's delay), attempt unchanged; only a task older than
    retry.max_task_age_seconds (counted from its first failure) is dead-lettered, as
    `host_unavailable` or `cache_unavailable`.

A transient failure goes to the next retry tier while attempts remain; everything else, and a
transient failure with no attempt left (category kept, status `dead`), goes to the DLQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from pipeline_lib.bounds import LATEST, ascii_int, checked_time
from pipeline_lib.redaction import redact, truncate

TRANSIENT_CATEGORIES = frozenset(
    {"timeout", "connection", "truncated", "http_transient", "circuit_open", "disk_full", "cache_io", "cache_lost"}
)
PERMANENT_CATEGORIES = frozenset(
    {
        "auth",
        "http_permanent",
        "expired",
        "policy",
        "too_large",
        "content_type",
        "host_unavailable",
        "cache_unavailable",
        "internal",
    }
)
TRANSIENT_STATUSES = frozenset({408, 425, 429})
AUTH_STATUSES = frozenset({401, 403})
# Failures that say something about the host's health (for its circuit breaker).
HOST_HEALTH_CATEGORIES = frozenset({"timeout", "connection", "truncated", "http_transient"})


@dataclass(frozen=True)
class Failure:
    """One failed attempt: its category, whether to retry it, and what a human needs to know."""

    category: str
    transient: bool
    message: str  # redacted
    http_status: int | None = None
    retry_after_seconds: float | None = None  # the server's minimum delay (Retry-After)

    def __post_init__(self) -> None:
        if self.category not in TRANSIENT_CATEGORIES | PERMANENT_CATEGORIES:
            raise ValueError(f"unknown failure category {self.category!r}")
        object.__setattr__(self, "message", truncate(redact(self.message), 1000))


def failure(category: str, message: str, http_status: int | None = None) -> Failure:
    """A Failure whose transient flag follows the table."""
    return Failure(category, category in TRANSIENT_CATEGORIES, message, http_status)


def classify_status(
    status: int, *, retry_after: str | None = None, auth_transient: bool = False, now: datetime | None = None
) -> Failure:
    """The Failure for an HTTP error status (anything but 2xx)."""
    if status in TRANSIENT_STATUSES or 500 <= status <= 599:
        delay = parse_retry_after(retry_after, now)
        return Failure("http_transient", True, f"HTTP {status} from the source", status, delay)
    if status in AUTH_STATUSES:
        why = "retried: download.auth_errors_transient is true" if auth_transient else "the link may be revoked"
        return Failure("auth", auth_transient, f"HTTP {status}: access denied ({why})", status)
    if 400 <= status <= 499:
        return Failure("http_permanent", False, f"HTTP {status} from the source", status)
    return Failure("http_permanent", False, f"unexpected HTTP {status} (not a success or an error)", status)


def parse_retry_after(value: object, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now: ASCII delta-seconds, or an HTTP date between 1970 and 2200
    (bounds.py). None for anything else (never raises: the value comes from any server)."""
    if not isinstance(value, str):
        return None
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    value = value.strip()
    if value.isdigit():  # delta-seconds, in ASCII digits only: "²" is a digit to str.isdigit, not to int
        seconds = ascii_int(value, high=_seconds_until(LATEST, now))
        return None if seconds is None else float(seconds)
    if len(value) > 64:  # an HTTP date is 29 characters
        return None
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        checked_time(when, "Retry-After")
    except (TypeError, ValueError, OverflowError, IndexError):
        return None
    return max(0.0, (when - now).total_seconds())


def _seconds_until(when: datetime, now: datetime) -> int:
    return max(0, int((when - now).total_seconds()))
