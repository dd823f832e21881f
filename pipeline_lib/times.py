"""UTC timestamps as the pipeline writes them: ISO 8601, millisecond precision, `Z` suffix."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_utc(value: datetime) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_from_millis(ms: float | None) -> str | None:
    """Epoch milliseconds (e.g. a Kafka record timestamp) as ISO 8601 UTC; None stays None."""
    if ms is None or ms != ms:  # None or NaN (pandas' missing value)
        return None
    return iso_utc(datetime.fromtimestamp(int(ms) / 1000, timezone.utc))
