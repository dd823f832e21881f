import pytest

from pipeline_lib.progress import StepTimer, format_progress

PROGRESS = {
    "name": "ingest",
    "batchId": 7,
    "numInputRows": 300,
    "processedRowsPerSecond": 1520.34,
    "durationMs": {"triggerExecution": 210},
    "observedMetrics": {"ingest": {"events": 300, "tasks": 900, "dead_letters": 2}},
    "sources": [{"metrics": {"maxOffsetsBehindLatest": "12", "avgOffsetsBehindLatest": "4.0"}}],
    "sink": {"numOutputRows": -1},
}


def test_progress_line_has_rows_rate_outcomes_and_lag():
    line = format_progress("ingest", PROGRESS)
    assert line == (
        "[ingest] batch 7: in 300 rows (1520.3/s), out dead_letters=2 events=300 tasks=900, lag max 12 avg 4.0, 210 ms"
    )


def test_progress_line_without_metrics_says_so():
    line = format_progress("x", {"batchId": 0, "numInputRows": 0, "sources": [{}], "sink": {"numOutputRows": 5}})
    assert line == "[x] batch 0: in 0 rows (0.0/s), out 5 rows, lag n/a, 0 ms"


def test_step_timer_adds_up_each_named_step_in_order_even_when_it_raises():
    ticks = iter([0.0, 1.5, 2.0, 2.25, 3.0, 3.5])
    steps = StepTimer(clock=lambda: next(ticks))
    with steps("route"):
        pass
    with steps("kafka"):
        pass
    with pytest.raises(RuntimeError), steps("route"):
        raise RuntimeError("boom")
    assert steps.seconds == {"route": 2.0, "kafka": 0.25}
    assert str(steps) == "route 2.0 s, kafka 0.2 s"


def test_drained_is_a_batch_that_read_nothing_with_every_source_at_its_latest_offset():
    from pipeline_lib.progress import drained

    at_end = {"endOffset": {"t": {"0": 5}}, "latestOffset": {"t": {"0": 5}}}
    behind = {"endOffset": {"t": {"0": 3}}, "latestOffset": {"t": {"0": 5}}}
    assert drained({"numInputRows": 0, "sources": [at_end, at_end]})
    assert not drained({"numInputRows": 2, "sources": [at_end]})  # it still forwarded something
    assert not drained({"numInputRows": 0, "sources": [at_end, behind]})
    assert not drained({"numInputRows": 0, "sources": [{"endOffset": None, "latestOffset": None}]})  # not started
