"""Health verdicts (pipeline_lib/health.py) from facts of a known shape: a stalled stage, growing
lag, a dead-letter burst, an old open dead letter, breaker openings, a slow p95; the exit codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_lib.config import load_settings
from pipeline_lib.health import (
    FAILING,
    LEVELS,
    OK,
    WARN,
    StageFacts,
    Verdict,
    exit_code,
    judge,
    render,
    stall_limit_seconds,
    task_exit_code,
)

NOW = datetime(2027, 1, 15, 12, 0, tzinfo=UTC)
HEALTH = load_settings("local").health


def facts(**kw) -> StageFacts:
    return StageFacts(
        **{"stage": "download", "trigger_seconds": 2.0, "last_batch_at": NOW - timedelta(seconds=5), **kw}
    )


def test_an_idle_stage_whose_last_batch_is_old_is_ok():
    verdict = judge(facts(last_batch_at=NOW - timedelta(days=3)), HEALTH, NOW)
    assert verdict.level == OK and "no input waiting" in verdict.reasons[0]


def test_a_stage_with_input_waiting_past_its_limit_is_failing_and_within_it_ok():
    limit = stall_limit_seconds(facts(), HEALTH, 60)
    assert limit == max(HEALTH.stall_triggers * 2.0, HEALTH.min_stall_seconds) + 60
    old = facts(last_batch_at=NOW - timedelta(hours=2), input_waiting_since=NOW - timedelta(seconds=limit + 1))
    verdict = judge(old, HEALTH, NOW, flush_seconds=60)
    assert verdict.level == FAILING and verdict.reasons[0].startswith("stalled: input waiting")
    fresh = facts(last_batch_at=NOW - timedelta(hours=2), input_waiting_since=NOW - timedelta(seconds=limit - 1))
    assert judge(fresh, HEALTH, NOW, flush_seconds=60).level == OK


def test_a_stage_that_never_ran_with_input_waiting_is_failing():
    verdict = judge(facts(last_batch_at=None, input_waiting_since=NOW - timedelta(hours=1)), HEALTH, NOW)
    assert verdict.level == FAILING and "no batch in the window" in verdict.reasons[0]


def test_input_that_could_not_be_checked_is_a_warn_that_says_so():
    verdict = judge(facts(input_checked=False), HEALTH, NOW)
    assert verdict.level == WARN and "Kafka" in verdict.reasons[0]


def lags(*values: int) -> tuple[tuple[datetime, int], ...]:
    return tuple((NOW - timedelta(minutes=len(values) - i), v) for i, v in enumerate(values))


def test_growing_lag_warns_a_high_steady_one_does_not_and_a_huge_one_fails():
    grow = judge(facts(lags=lags(100, 5_000, HEALTH.lag_warn_records + 1)), HEALTH, NOW)
    assert grow.level == WARN and "growing" in grow.reasons[0]
    steady = judge(facts(lags=lags(HEALTH.lag_warn_records * 2, HEALTH.lag_warn_records * 2)), HEALTH, NOW)
    assert steady.level == OK
    shrinking = judge(facts(lags=lags(HEALTH.lag_warn_records * 3, HEALTH.lag_warn_records * 2)), HEALTH, NOW)
    assert shrinking.level == OK
    huge = judge(facts(lags=lags(HEALTH.lag_fail_records, HEALTH.lag_fail_records)), HEALTH, NOW)
    assert huge.level == FAILING


def test_a_dead_letter_burst_warns_then_fails_by_its_rate_over_the_window():
    hours = HEALTH.window_minutes / 60
    assert judge(facts(dead_letters=1), HEALTH, NOW).level == OK
    warn = judge(facts(dead_letters=int(HEALTH.dead_letters_warn_per_hour * hours) + 1), HEALTH, NOW)
    assert warn.level == WARN and "dead letters" in warn.reasons[0]
    fail = judge(facts(dead_letters=int(HEALTH.dead_letters_fail_per_hour * hours) + 1), HEALTH, NOW)
    assert fail.level == FAILING


def test_an_old_open_dead_letter_warns_then_fails():
    def at(hours: float) -> str:
        return judge(facts(oldest_open_dead_letter_at=NOW - timedelta(hours=hours)), HEALTH, NOW).level

    assert at(1) == OK
    assert at(HEALTH.open_dead_letter_warn_hours + 1) == WARN
    assert at(HEALTH.open_dead_letter_fail_hours + 1) == FAILING


def test_breaker_openings_and_a_slow_p95_are_named():
    breakers = judge(facts(breaker_openings=HEALTH.breaker_openings_warn), HEALTH, NOW)
    assert breakers.level == WARN and "circuit-breaker" in breakers.reasons[0]
    slow = judge(facts(stage="results", latency_p95_seconds=HEALTH.latency_p95_fail_seconds + 1), HEALTH, NOW)
    assert slow.level == FAILING and "p95" in slow.reasons[0]
    quick = judge(facts(stage="results", latency_p95_seconds=12.5), HEALTH, NOW)
    assert quick.level == OK and any("p95 12.5 s" in r for r in quick.reasons)


def test_the_verdict_is_the_worst_rule_and_names_every_rule_that_is_not_ok():
    verdict = judge(
        facts(
            dead_letters=10_000,
            oldest_open_dead_letter_at=NOW - timedelta(hours=HEALTH.open_dead_letter_warn_hours + 1),
        ),
        HEALTH,
        NOW,
    )
    assert verdict.level == FAILING and len(verdict.reasons) == 2


def test_exit_codes_and_the_scheduled_task_rule():
    ok, warn, failing = Verdict("a", OK), Verdict("b", WARN), Verdict("c", FAILING)
    assert [exit_code(v) for v in ([ok], [ok, warn], [warn, failing], [])] == [0, 1, 2, 0]
    assert task_exit_code([ok, warn], fail_on_warn=False) == 0
    assert task_exit_code([ok, warn], fail_on_warn=True) == 1
    assert task_exit_code([failing], fail_on_warn=False) == 2


def test_render_prints_a_line_per_stage_and_a_summary():
    lines = render(
        [Verdict("ingest", OK, ("fine",)), Verdict("upload", FAILING, ("stalled",))], NOW, timedelta(hours=1)
    )
    assert lines[0].startswith("health at 2027-01-15 12:00:00 UTC, window 60 min")
    assert lines[1].split()[:2] == ["ingest", "ok"] and lines[2].split()[:2] == ["upload", "failing"]
    assert lines[-1] == "overall: failing (1 ok, 0 warn, 1 failing)"


def test_a_warn_threshold_above_its_failure_is_refused_naming_both_keys():
    from pipeline_lib.errors import PipelineError

    with pytest.raises(PipelineError, match="lag_warn_records.*lag_fail_records"):
        load_settings("local", overrides=["health.lag_warn_records=2000000"])


stamps = st.one_of(st.none(), st.integers(-10 * 86400, 86400).map(lambda s: NOW + timedelta(seconds=s)))


@given(
    last=stamps,
    waiting=stamps,
    checked=st.booleans(),
    lag_values=st.lists(st.integers(0, 10**9), max_size=5),
    dead=st.integers(0, 10**6),
    opened=stamps,
    breakers=st.integers(0, 1000),
    p95=st.one_of(st.none(), st.floats(0, 1e7)),
    trigger=st.floats(0.1, 3600),
)
def test_any_facts_give_one_verdict_with_a_reason_and_more_dead_letters_never_improve_it(
    last, waiting, checked, lag_values, dead, opened, breakers, p95, trigger
):
    base = StageFacts("results", trigger, last, waiting, checked, lags(*lag_values), dead, opened, breakers, p95)
    verdict = judge(base, HEALTH, NOW, flush_seconds=60)
    assert verdict.level in LEVELS and verdict.reasons
    worse = judge(
        StageFacts(
            "results", trigger, last, waiting, checked, lags(*lag_values), dead * 10 + 1000, opened, breakers, p95
        ),
        HEALTH,
        NOW,
        flush_seconds=60,
    )
    assert LEVELS.index(worse.level) >= LEVELS.index(verdict.level)
