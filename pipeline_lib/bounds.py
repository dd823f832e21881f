"""Numbers and times that come from outside (HTTP headers, Kafka messages, events), read once and
range-checked, so a hostile value can neither crash a stage nor park a task for years.

    ascii_int("42", high=10**6)              -> 42
    ascii_int("²") / ascii_int("1e9")        -> None   (str.isdigit() accepts "²"; int() does not)
    checked_time(parse_iso(text), "utcDateTime", latest=now + EVENT_CLOCK_SKEW)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

# The widest window any timestamp of the pipeline may fall in: older than 1970 or later than 2200
# is a broken clock or a hostile value, and such dates overflow the arithmetic done on them.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)
# How far ahead of this host's clock an event may claim to be (producers' clocks drift).
EVENT_CLOCK_SKEW = timedelta(days=1)


def ascii_int(text: str | bytes | None, *, low: int = 0, high: int = INT64_MAX) -> int | None:
    """The integer `text` spells in ASCII digits (surrounding spaces allowed), if in [low, high]; else None."""
    if text is None:
        return None
    if isinstance(text, bytes):
        text = text.decode("ascii", "replace")
    digits = text.strip(" \t")  # HTTP optional whitespace only: str.strip() also takes \x1c-\x1f
    if not digits or len(digits) > 19 or not all("0" <= c <= "9" for c in digits):
        return None
    value = int(digits)
    return value if low <= value <= high else None


def checked_time(value: datetime, name: str, *, earliest: datetime = EARLIEST, latest: datetime = LATEST) -> datetime:
    """`value` (aware) if it lies in [earliest, latest]; ValueError naming the field otherwise."""
    if not earliest <= value <= latest:
        raise ValueError(
            f"{name} {value.isoformat()} is outside the accepted range {earliest.isoformat()} .. {latest.isoformat()}"
        )
    return value
