"""Metric rows from query progress, and their buffer: total, bounded, never raising."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.metrics import METRIC_COLUMNS, MetricsBuffer, metric_row

PROGRESS = {
    "id": "q-1",
    "runId": "r-1",
    "name": "download",
    "timestamp": "2026-11-27T10:00:00.000Z",
    "batchId": 7,
    "numInputRows": 40,
    "inputRowsPerSecond": 12.5,
    "processedRowsPerSecond": 20.0,
    "durationMs": {"triggerExecution": 2100, "addBatch": 1800, "latestOffset": 12},
    "sources": [
        {"metrics": {"maxOffsetsBehindLatest": "3", "avgOffsetsBehindLatest": "1.5"}},
        {"metrics": {"maxOffsetsBehindLatest": "9", "avgOffsetsBehindLatest": "4.5"}},
    ],
    "observedMetrics": {
        "download": {
            "cached": 30,
            "retry": 8,
            "retry_5m": 8,
            "dead": 2,
            "bytes": 1000,
            "breaker_openings": 1,
            "worker_peak_rss_bytes": 123456,
        }
    },
}


def test_a_batch_progress_becomes_one_row_with_its_outcomes_lag_and_durations():
    row = metric_row(PROGRESS)
    assert set(row) == set(METRIC_COLUMNS)
    assert (row["stage"], row["batch_id"], row["batch_date"], row["input_rows"]) == ("download", 7, "2026-11-27", 40)
    assert (row["lag_max"], row["lag_avg"], row["duration_ms"]) == (9, 3.0, 2100)
    assert row["outcomes"] == {"cached": 30, "retry": 8, "retry_5m": 8, "dead": 2}
    assert (row["bytes"], row["breaker_openings"], row["worker_peak_rss_bytes"]) == (1000, 1, 123456)
    assert row["durations_ms"]["addBatch"] == 1800


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(sorted(PROGRESS) + ["x"]),
        st.none()
        | st.text()
        | st.integers()
        | st.floats()
        | st.lists(st.dictionaries(st.text(), st.text()))
        | st.dictionaries(st.text(), st.integers()),
    )
)
def test_any_progress_gives_a_row_or_none_and_never_raises(progress):
    row = metric_row({**PROGRESS, **progress})
    assert row is None or set(row) == set(METRIC_COLUMNS)


def test_the_buffer_flushes_on_time_and_drops_the_oldest_rows_past_its_bound():
    now = [0.0]
    buffer = MetricsBuffer(60, max_rows=3, clock=lambda: now[0])
    for i in range(5):
        buffer.add({"batch_id": i})
    assert len(buffer) == 3 and buffer.dropped == 2 and not buffer.due()
    now[0] = 61
    assert buffer.due()
    rows = buffer.drain()
    assert [r["batch_id"] for r in rows] == [2, 3, 4] and not buffer.due()
    buffer.put_back(rows)  # a failed write keeps them for the next flush
    assert len(buffer) == 3
