"""UTC timestamps as the pipeline writes and reads them: ISO 8601, millisecond precision, `Z` suffix."""

from __future__ import annotations

from datetime import UTC, datetime


def iso_utc(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_millis(ms: float | None) -> str | None:
    """Epoch milliseconds (e.g. a Kafka record timestamp) as ISO 8601 UTC; None stays None."""
    if ms is None or ms != ms:  # None or NaN (pandas' missing value)
        return None
    return iso_utc(datetime.fromtimestamp(int(ms) / 1000, UTC))


def parse_iso(text: str, *, naive: str = "utc") -> datetime:
    """An ISO 8601 date or date-time (`Z` accepted) as an aware datetime.

    Args:
        naive: what a value without a zone means: "utc" (assume UTC) or "error" (refuse it).

    Raises:
        ValueError: the text is not ISO 8601, or has no zone when `naive` is "error".
    """
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        if naive == "error":
            raise ValueError(f"{text!r} has no time zone")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed
