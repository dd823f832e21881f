"""One progress line per micro-batch: the streaming equivalent of a progress bar.

`format_progress` reads the JSON form of a StreamingQueryProgress, so it is plain Python and is
unit-tested without Spark; `pipeline_lib.spark.progress` feeds it from a query listener.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class StepTimer:
    """Wall seconds of the named steps of one unit of work, in order; str() gives `a 1.2 s, b 0.3 s`.

    steps = StepTimer()
    with steps("kafka"):
        ...
    """

    def __init__(self, clock: Any = time.perf_counter) -> None:
        self.seconds: dict[str, float] = {}
        self._clock = clock

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = self._clock()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + self._clock() - start

    def __str__(self) -> str:
        return ", ".join(f"{name} {sec:.1f} s" for name, sec in self.seconds.items())


def _lag(sources: list[dict[str, Any]]) -> str:
    maxes, avgs = [], []
    for source in sources:
        metrics = source.get("metrics") or {}
        if "maxOffsetsBehindLatest" in metrics:
            maxes.append(int(float(metrics["maxOffsetsBehindLatest"])))
            avgs.append(float(metrics.get("avgOffsetsBehindLatest", 0)))
    if not maxes:
        return "lag n/a"
    return f"lag max {max(maxes)} avg {sum(avgs) / len(avgs):.1f}"


def format_progress(job: str, progress: dict[str, Any]) -> str:
    """E.g. `[ingest] batch 7: in 300 rows (1520.3/s), out tasks=900 dlq=2, lag max 0 avg 0.0, 210 ms`."""
    rows_in = int(progress.get("numInputRows", 0))
    rate = float(progress.get("processedRowsPerSecond") or 0.0)
    observed = progress.get("observedMetrics") or {}
    outs: list[str] = []
    for metrics in observed.values():
        outs.extend(f"{k}={v}" for k, v in sorted(metrics.items()))
    sink_rows = (progress.get("sink") or {}).get("numOutputRows", -1)
    out = " ".join(outs) if outs else (f"{sink_rows} rows" if sink_rows is not None and sink_rows >= 0 else "n/a")
    duration = (progress.get("durationMs") or {}).get("triggerExecution", 0)
    return (
        f"[{job}] batch {progress.get('batchId')}: in {rows_in} rows ({rate:.1f}/s), out {out}, "
        f"{_lag(progress.get('sources') or [])}, {duration} ms"
    )


def drained(progress: dict[str, Any]) -> bool:
    """True for a micro-batch that read nothing while every source was at its latest offset.

    A query with processing-time state timeouts (the retry scheduler) never ends under
    Trigger.AvailableNow: Spark runs a no-data batch every trigger while timeouts are pending. Such
    a batch, once the input is drained, has fired every due timeout, so the query may stop there.
    """
    sources = progress.get("sources") or []
    return progress.get("numInputRows") == 0 and all(
        s.get("endOffset") is not None and s.get("endOffset") == s.get("latestOffset") for s in sources
    )
