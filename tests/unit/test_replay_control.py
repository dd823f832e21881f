"""Replay under control, without Spark or Kafka: the caps (pace_order, Pacer), the estimate a dry
run gives, progress lines, one task per replay, and what a report says."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.config import load_settings
from pipeline_lib.contracts import SourceRef
from pipeline_lib.local.samples import sample_task
from pipeline_lib.replay import (
    DeadRow,
    DlqSelection,
    Pacer,
    ReplayProgress,
    ReplayRate,
    ReplayReport,
    SelectionError,
    check_replay_id,
    format_duration,
    pace_order,
    pace_setter,
    plan_replay,
    replay_rate,
)

EPS = 1e-6
RATES = st.tuples(st.sampled_from([0.5, 1, 2, 3.3, 5, 7, 10, 50]), st.sampled_from([0.2, 0.7, 1, 2, 5, 10, 50])).map(
    lambda r: ReplayRate(r[0], min(r[0], r[1]))
)
HOSTS = st.lists(st.tuples(st.sampled_from(["a", "b", "c", "d", None]), st.integers(1, 40)), min_size=1, max_size=5)


def items_of(hosts):
    counts = Counter()
    for host, n in hosts:
        counts[host] += n
    return [(host, i) for host, n in counts.items() for i in range(n)], counts


@settings(max_examples=300, deadline=None)
@given(HOSTS, RATES)
def test_a_plan_sends_every_row_once_and_never_faster_than_either_cap(hosts, rate):
    items, counts = items_of(hosts)
    plan = pace_order(items, lambda item: item[0], rate)
    assert sorted((item for _, item in plan), key=str) == sorted(items, key=str)
    times = [at for at, _ in plan]
    assert times == sorted(times) and times[0] == 0.0
    assert all(b - a >= 1 / rate.total - EPS for a, b in zip(times, times[1:], strict=False))
    for host in counts:
        mine = [at for at, item in plan if item[0] == host]
        assert all(b - a >= 1 / rate.per_host - EPS for a, b in zip(mine, mine[1:], strict=False))
    # Never much slower than the caps allow: the total, or the biggest host at its cap (each of
    # its sends waits at most one total-cap gap for its turn).
    n, biggest = len(items), max(counts.values())
    assert times[-1] <= max((n - 1) / rate.total, (biggest - 1) * (1 / rate.per_host + 1 / rate.total)) + EPS
    assert times[-1] >= max((n - 1) / rate.total, (biggest - 1) / rate.per_host) - EPS


def test_the_host_with_most_rows_goes_first_when_both_may_send():
    plan = pace_order([("big", i) for i in range(6)] + [("small", 0)], lambda x: x[0], ReplayRate(10, 5))
    assert [item[0] for _, item in plan][:3] == ["big", "small", "big"]
    assert plan[-1][0] == pytest.approx(1.0)  # 6 rows of one host at 5/s: 5 gaps of 0.2 s


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "b", "c"]), min_size=2, max_size=200),
    RATES,
    st.lists(st.floats(0, 0.5), min_size=200, max_size=200),
)
def test_a_late_sender_catches_up_by_at_most_one_gap(hosts, rate, lateness):
    # The runtime loop: wait for the pacer, arrive late by a random amount, send. No window of
    # length w holds more than w x cap + 2 sends, for all hosts and for one.
    pacer, now, sent = Pacer(rate, catch_up=True), 0.0, []
    for host, late in zip(hosts, lateness, strict=False):
        now = pacer.ready_at(host, now) + late
        pacer.sent(host, now)
        sent.append((now, host))
    for i, (start, _) in enumerate(sent):
        for width in (0.5, 1.0, 3.0):
            window = [h for t, h in sent[i:] if t < start + width]
            assert len(window) <= math.floor(width * rate.total + EPS) + 2
            for host in set(window):
                assert window.count(host) <= math.floor(width * rate.per_host + EPS) + 2


def test_small_delays_do_not_slow_a_replay_below_its_cap():
    # Each send 2 ms late (waking up, producing): without catch-up 40/s would become 37/s.
    rate = ReplayRate(40, 40)
    for catch_up, expected in ((True, 40.0), (False, 1 / (1 / 40 + 0.002))):
        pacer, now = Pacer(rate, catch_up=catch_up), 0.0
        for _ in range(401):
            now = pacer.ready_at("h", now) + 0.002
            pacer.sent("h", now)
        assert 400 / (now - 0.002) == pytest.approx(expected, rel=0.01)


def test_pace_setter_names_what_bounds_the_replay():
    rate = ReplayRate(50, 10)
    assert pace_setter(["a"] * 1000 + ["b"] * 10, rate) == "host a (1000 rows at 10/s) sets the pace"
    assert pace_setter([f"h{i}" for i in range(500)], rate) == "the total cap (500 rows at 50/s) sets the pace"
    assert pace_setter([], rate) == "nothing to replay"


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0 s"), (44.6, "45 s"), (60, "1m 00s"), (980, "16m 20s"), (7500, "2h 05m")]
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_lines_say_rows_rate_and_time_left_by_the_plan():
    clock = iter([0.0, 1.0, 6.0, 6.0, 7.0, 7.0]).__next__
    lines: list[str] = []
    progress = ReplayProgress("replay-x", [0.0, 1.0, 2.0, 100.0], lines.append, every=5, clock=clock)
    progress.update(1)  # 1 s after the start: too soon for a line
    progress.update(2)  # 6 s: a line
    progress.update(3, final=True)
    assert lines == [
        "replay replay-x: 2 of 4 rows (50.0 %), 0.3 rows/s, about 1m 39s left",
        "replay replay-x: 3 of 4 rows (75.0 %), 0.4 rows/s, about 1m 38s left",
    ]


def row(dlq_id, task, host="h", generation_source=None):
    return DeadRow(dlq_id, "download", "http_transient", 1, task.task_id, task.trace_id, True,
                   SourceRef("t", 0, generation_source or 0), host, "2026-12-01")  # fmt: skip


def test_a_task_is_published_once_per_replay_from_its_latest_generation():
    task = sample_task("http://127.0.0.1:1/a.pdf", "a.pdf")
    later = sample_task("http://127.0.0.1:1/a.pdf", "a.pdf", replay_generation=1)
    rows = [row("old", task, generation_source=1), row("new", task, generation_source=2)]
    by_offset = {1: task, 2: later}
    report = ReplayReport("replay-1", DlqSelection(), dry_run=False)
    tasks = plan_replay(rows, lambda source, _id: by_offset[source.offset], report)
    assert len(tasks) == 1 and tasks[0].replay_generation == 2 and tasks[0].replay_id == "replay-1"
    assert [(e["dlq_id"], e.get("duplicate_of")) for e in report.replayed] == [("new", None), ("old", "new")]


def test_a_report_lists_20_rows_then_counts_and_gives_the_estimate_and_how_to_resume():
    report = ReplayReport("replay-9", DlqSelection(hosts=("h",)), dry_run=True, rate=ReplayRate(50, 10))
    report.replayed = [
        {"dlq_id": f"d{i}", "task_id": f"t{i}", "category": "exhausted", "attempts": 4} for i in range(25)
    ]
    report.planned_seconds, report.pace = 2.4, "host h (25 rows at 10/s) sets the pace"
    text = report.describe()
    assert text.splitlines()[0] == "would replay 25 dead letter(s), skipped 0 [hosts=h statuses=open]"
    assert "  at 50 rows/s, 10 per host: would take about 2 s (host h (25 rows at 10/s) sets the pace)" in text
    assert "  ... and 5 more to replay (`dlq list` shows every row)" in text and "d20" not in text
    nothing = ReplayReport("replay-0", DlqSelection(), dry_run=True, rate=ReplayRate(50, 10))
    assert nothing.describe() == "would replay 0 dead letter(s), skipped 0 [statuses=open]"  # no estimate of nothing
    report.dry_run, report.cancelled, report.remaining = False, True, 7
    assert text != report.describe() and report.describe().endswith(
        "stopped early: 7 row(s) stay `replaying`; continue with `xact-pipeline dlq replay --resume replay-9`"
    )


def test_rates_come_from_config_and_bad_ones_are_refused_naming_the_flag():
    s = load_settings("local")
    assert replay_rate(s) == ReplayRate(s.replay.rows_per_second, s.replay.rows_per_second_per_host)
    assert replay_rate(s, 5, 20) == ReplayRate(5, 5)  # one host cannot outrun all of them
    for total, host in ((0, 1), (float("nan"), 1), (1, -1), (float("inf"), 1)):
        with pytest.raises(SelectionError, match="--rate .* --host-rate"):
            replay_rate(s, total, host)


def test_config_refuses_a_host_rate_above_the_total_naming_both_keys():
    refused = r"replay.rows_per_second_per_host \(60\) must be at most replay.rows_per_second"
    with pytest.raises(Exception, match=refused):
        load_settings("local", overrides=["replay.rows_per_second=50", "replay.rows_per_second_per_host=60"])


def test_resume_takes_only_a_replay_id_and_no_selection_takes_rows_a_replay_holds():
    assert check_replay_id(" replay-1a2b3c4d5e6f ") == "replay-1a2b3c4d5e6f"
    for bad in ("", None, "replay-", "replay-1a2b3c4d5e6f' OR 1=1 --", "x"):
        with pytest.raises(SelectionError, match="is not a replay id"):
            check_replay_id(bad)
    with pytest.raises(SelectionError, match="--resume REPLAY_ID"):
        DlqSelection(statuses=("open", "replaying")).check_replayable()
    assert DlqSelection().forced().check_replayable().statuses == ("open", "replayed")


def test_a_stored_selection_reads_back_and_a_broken_one_is_everything():
    selection = DlqSelection(categories=("expired",), hosts=("h",), since="2026-11-01", statuses=("open", "replayed"))
    assert DlqSelection.from_json(selection.to_json()) == selection
    assert DlqSelection.from_json("not json") == DlqSelection() == DlqSelection.from_json(None)
    assert DlqSelection.from_json("[1]") == DlqSelection() == DlqSelection.from_json('{"since": "yesterday"}')
