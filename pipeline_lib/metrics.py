"""Pipeline metrics, without Spark: one row per micro-batch of every query, read from its progress
(the JSON of a StreamingQueryProgress), buffered and written in few commits to the
`xact_pipeline_metrics` Delta table (spark/metrics.py), which notebooks/pipeline_health.ipynb reads.

    row = metric_row(progress_json)       # total: a progress it cannot read gives None, never raises
    buffer.add(row); if buffer.due(now): write(buffer.drain())

Recording is best effort by design: a failure to record a metric never fails a query.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

# The outcome counts each job's observed metrics carry (stage_io, ingest, results, ...) that are
# not counts of outcomes: they get columns of their own.
_SPECIAL = ("bytes", "breaker_openings", "refetches", "worker_peak_rss_bytes", "max_lateness_ms")

METRIC_COLUMNS = (
    "stage", "query_id", "run_id", "batch_id", "batch_time", "batch_date", "input_rows", "input_rows_per_second",
    "processed_rows_per_second", "duration_ms", "durations_ms", "lag_max", "lag_avg", "outcomes", "bytes",
    "breaker_openings", "refetches", "worker_peak_rss_bytes", "max_lateness_ms",
)  # fmt: skip


def _number(value: object) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) < 1e18 else None  # no NaN, no absurd values


def _int(value: object) -> int | None:
    number = _number(value)
    return int(number) if number is not None else None


def metric_row(progress: Mapping[str, Any]) -> dict[str, Any] | None:
    """The metrics row of one micro-batch, or None when the progress is not a query's batch."""
    try:
        name, batch_id, stamp = progress.get("name"), progress.get("batchId"), progress.get("timestamp")
        if not isinstance(name, str) or not isinstance(stamp, str) or _int(batch_id) is None:
            return None
        durations = {
            k: v for k, v in ((str(k), _int(v)) for k, v in (progress.get("durationMs") or {}).items()) if v is not None
        }
        maxes, avgs = [], []
        for source in progress.get("sources") or []:
            metrics = source.get("metrics") or {}
            lag_max = _number(metrics.get("maxOffsetsBehindLatest"))
            lag_avg = _number(metrics.get("avgOffsetsBehindLatest"))
            if lag_max is not None:
                maxes.append(lag_max)
            if lag_avg is not None:
                avgs.append(lag_avg)
        outcomes: dict[str, int] = {}
        special: dict[str, int | None] = dict.fromkeys(_SPECIAL)
        for observed in (progress.get("observedMetrics") or {}).values():
            for key, value in (observed or {}).items():
                number = _int(value)
                if number is None:
                    continue
                if key in special:
                    special[key] = number
                else:
                    outcomes[str(key)] = number
        return {
            "stage": name,
            "query_id": str(progress.get("id") or ""),
            "run_id": str(progress.get("runId") or ""),
            "batch_id": _int(batch_id),
            "batch_time": stamp,
            "batch_date": stamp[:10],
            "input_rows": _int(progress.get("numInputRows")) or 0,
            "input_rows_per_second": _number(progress.get("inputRowsPerSecond")),
            "processed_rows_per_second": _number(progress.get("processedRowsPerSecond")),
            "duration_ms": durations.get("triggerExecution"),
            "durations_ms": durations,
            "lag_max": int(max(maxes)) if maxes else None,
            "lag_avg": sum(avgs) / len(avgs) if avgs else None,
            "outcomes": outcomes,
            **special,
        }
    except Exception:  # noqa: BLE001 - a progress event must never fail anything
        return None


class MetricsBuffer:
    """Rows waiting to be written: flushed every `flush_seconds`, bounded so a lake that cannot be
    written to never grows the driver's memory (the oldest rows are dropped first, and counted)."""

    def __init__(self, flush_seconds: float, max_rows: int = 20_000, clock=time.monotonic) -> None:
        self.flush_seconds, self.max_rows, self.clock = flush_seconds, max_rows, clock
        self.dropped = 0
        self._rows: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last = clock()

    def add(self, row: dict[str, Any] | None) -> None:
        if row is None:
            return
        with self._lock:
            self._rows.append(row)
            excess = len(self._rows) - self.max_rows
            if excess > 0:
                del self._rows[:excess]
                self.dropped += excess

    def due(self) -> bool:
        with self._lock:
            return bool(self._rows) and self.clock() - self._last >= self.flush_seconds

    def drain(self) -> list[dict[str, Any]]:
        with self._lock:
            rows, self._rows, self._last = self._rows, [], self.clock()
            return rows

    def put_back(self, rows: list[dict[str, Any]]) -> None:
        """Rows a flush could not write: kept for the next one (within the bound)."""
        with self._lock:
            self._rows[:0] = rows
            excess = len(self._rows) - self.max_rows
            if excess > 0:
                del self._rows[:excess]
                self.dropped += excess

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)
