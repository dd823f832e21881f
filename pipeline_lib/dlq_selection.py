"""Which dead letters an analyst means: the filter shared by the DLQ CLI, notebook and replay.

    DlqSelection(categories=("http_transient",), hosts=("files.example.com",), since="2026-11-01")

Every field narrows the selection; an empty selection means every row with a selectable status
(open; also replayed when forced). The selection is stored with a replay as its lineage.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

import orjson


class SelectionError(ValueError):
    """A filter value is malformed; the message names the filter."""


def _check_time(name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
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
        bad = set(self.statuses) - {"open", "replayed", "resolved"}
        if bad:
            raise SelectionError(f"statuses: {', '.join(sorted(bad))} is not one of open, replayed, resolved")

    def to_json(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    def describe(self) -> str:
        parts = [f"{k}={','.join(v) if isinstance(v, tuple) else v}" for k, v in asdict(self).items() if v]
        return " ".join(parts) or "everything"
