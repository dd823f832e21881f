"""The retry scheduler's wake-up plan (retry_wakeups.py): never a tick before a due time plus the
margin, always one within a trigger interval after it, a follow-up after that, bounded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.contracts import H_RETRY_DUE_AT, H_RETRY_TICK
from pipeline_lib.retry_wakeups import (
    FOLLOW_UP_INTERVALS,
    MAX_CLOCK_SKEW_MS,
    QUANTUM_MS,
    WAKE_MARGIN_MS,
    RetryWakeUps,
    WakeUpPlan,
    due_ms_of,
)

INTERVAL = 15_000
T0 = 1_800_000_000_000  # 2027-01-15, epoch ms
LONGEST = 2_700_000


def follow_ups(interval: int = INTERVAL) -> list[int]:
    """The follow-up offsets of one wake-up: 2, 4, 8, ... intervals, until past the clock skew."""
    offsets, k = [], FOLLOW_UP_INTERVALS
    while True:
        offsets.append(k * interval)
        if k * interval >= MAX_CLOCK_SKEW_MS:
            return offsets
        k *= 2


PER_DUE = 1 + len(follow_ups())


@given(st.lists(st.integers(T0, T0 + 3_600_000), min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_every_due_time_gets_a_tick_after_it_within_one_quantum_and_a_follow_up(dues):
    plan = WakeUpPlan(INTERVAL)
    for due in dues:
        plan.add(due)
    ticks = []
    now = T0
    while plan.next_at() is not None:
        now = plan.next_at()
        assert plan.take_due(now)
        ticks.append(now)
    assert ticks == sorted(set(ticks))
    for due in dues:
        first = min(t for t in ticks if t >= due + WAKE_MARGIN_MS)
        assert first - (due + WAKE_MARGIN_MS) < QUANTUM_MS
        assert all(first + offset in ticks for offset in follow_ups())
    assert follow_ups()[-1] >= MAX_CLOCK_SKEW_MS  # a worker clock behind by the skew still forwards
    # Coalesced: at most PER_DUE ticks per quantum the due times fall in, however many retries wait.
    assert len(ticks) <= PER_DUE * (len({(d + WAKE_MARGIN_MS + QUANTUM_MS - 1) // QUANTUM_MS for d in dues}))


def test_a_thousand_retries_due_in_one_quantum_share_their_wake_ups():
    plan = WakeUpPlan(INTERVAL)
    for i in range(1000):
        plan.add(T0 + 2 * INTERVAL + i % QUANTUM_MS // 2)  # all within one quantum
    assert len(plan) == PER_DUE
    assert not plan.take_due(T0)  # nothing is due yet


def test_take_due_takes_everything_passed_at_once():
    plan = WakeUpPlan(INTERVAL)
    plan.add(T0)
    plan.add(T0 + 10 * INTERVAL)
    assert plan.take_due(T0 + 5 * INTERVAL)
    assert not plan.take_due(T0 + 5 * INTERVAL)
    assert plan.next_at() is not None and plan.next_at() > T0 + 5 * INTERVAL
    plan.add(T0, follow_ups=False)  # one wake-up alone (the thread's own at start)
    assert plan.take_due(T0 + WAKE_MARGIN_MS + QUANTUM_MS) and plan.next_at() > T0 + 5 * INTERVAL


def test_due_time_comes_from_the_header_and_anything_else_is_none():
    expected = int(datetime(2027, 1, 15, 8, 0, 0, 250_000, tzinfo=UTC).timestamp() * 1000)
    assert due_ms_of([("other", b"x"), (H_RETRY_DUE_AT, b"2027-01-15T08:00:00.250Z")]) == expected
    assert due_ms_of([(H_RETRY_DUE_AT, "2027-01-15T08:00:00.250+00:00")]) == expected
    assert due_ms_of([(H_RETRY_TICK, b"2027"), (H_RETRY_DUE_AT, b"2027-01-15T08:00:00Z")]) is None
    for bad in (
        None,
        [],
        [(H_RETRY_DUE_AT, None)],
        [(H_RETRY_DUE_AT, b"2027-01-15T08:00:00")],
        [(H_RETRY_DUE_AT, b"\xff")],
    ):
        assert due_ms_of(bad) is None
    assert due_ms_of([(H_RETRY_DUE_AT, b"2" * 10_000)]) is None


@given(
    st.one_of(
        st.none(),
        st.lists(st.tuples(st.text(max_size=20), st.one_of(st.none(), st.binary(max_size=80), st.text(max_size=80)))),
    )
)
def test_due_ms_of_never_raises(headers):
    result = due_ms_of(headers)
    assert result is None or isinstance(result, int)


@dataclass
class Msg:
    headers_list: list | None
    err: object = None

    def headers(self):
        return self.headers_list

    def error(self):
        return self.err


class FakeConsumer:
    def __init__(self, batches):
        self.batches = list(batches)
        self.closed = False

    def consume(self, n, timeout):
        return self.batches.pop(0) if self.batches else []

    def close(self):
        self.closed = True


def test_step_plans_what_it_reads_and_ticks_once_when_due():
    now = [T0 / 1000]
    ticks = []
    due = "2027-01-15T08:00:10Z"
    consumer = FakeConsumer(
        [
            [
                Msg([(H_RETRY_DUE_AT, due.encode())]),
                Msg([(H_RETRY_TICK, b"x")]),
                Msg(None),
                Msg([(H_RETRY_DUE_AT, b"garbage")]),
                Msg([(H_RETRY_DUE_AT, due.encode())], err="broken"),
                Msg([(H_RETRY_DUE_AT, b"9999-12-31T23:59:59Z")]),  # dead-lettered, never held
            ]
        ]
    )
    wake = RetryWakeUps(
        consumer, lambda: None, lambda: ticks.append(1), lambda: True, INTERVAL, LONGEST, clock=lambda: now[0]
    )
    due_ms = due_ms_of([(H_RETRY_DUE_AT, due.encode())])
    assert due_ms is not None
    now[0] = (due_ms - 1) / 1000
    wake.step(0)
    assert ticks == [] and len(wake.plan) == PER_DUE
    now[0] = (due_ms + WAKE_MARGIN_MS + QUANTUM_MS) / 1000
    wake.step(0)
    assert ticks == [1]
    for k, offset in enumerate(follow_ups(), start=2):
        now[0] = (due_ms + WAKE_MARGIN_MS + QUANTUM_MS + offset) / 1000
        wake.step(0)
        assert len(ticks) == k
    assert len(wake.plan) == 0


def test_the_thread_ends_with_its_query_and_closes_its_consumer():
    consumer = FakeConsumer([])
    wake = RetryWakeUps(consumer, lambda: None, lambda: None, lambda: False, INTERVAL, LONGEST).start()
    wake._thread.join(5)
    assert not wake._thread.is_alive() and consumer.closed


def test_an_assign_that_fails_is_tried_again_without_ending_the_thread(monkeypatch):
    import pipeline_lib.retry_wakeups as module

    monkeypatch.setattr(module, "ALIVE_CHECK_SECONDS", 0.01)
    monkeypatch.setattr(module, "FALLBACK_WAIT_SECONDS", 0.01)
    calls = []

    def assign():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("broker not there yet")

    active = iter([True] * 50 + [False] * 1000)
    wake = RetryWakeUps(FakeConsumer([]), assign, lambda: None, lambda: next(active), 10, LONGEST).start()
    wake._thread.join(10)
    assert len(calls) == 3
    assert wake.ticks == 3  # one per failed try (what it holds is released meanwhile), then its own


def test_a_tick_that_cannot_be_written_stays_planned_and_is_tried_again():
    now = [T0 / 1000]
    failures = [RuntimeError("broker gone")]
    sent = []

    def send():
        if failures:
            raise failures.pop()
        sent.append(1)

    due = "2027-01-15T08:00:10Z"
    wake = RetryWakeUps(
        FakeConsumer([[Msg([(H_RETRY_DUE_AT, due.encode())])]]),
        lambda: None,
        send,
        lambda: True,
        INTERVAL,
        LONGEST,
        clock=lambda: now[0],
    )
    now[0] = (due_ms_of([(H_RETRY_DUE_AT, due.encode())]) + WAKE_MARGIN_MS + QUANTUM_MS) / 1000
    try:
        wake.step(0)
    except RuntimeError:
        pass
    assert sent == [] and len(wake.plan) == PER_DUE
    wake.step(0)
    assert sent == [1] and len(wake.plan) == PER_DUE - 1


def test_an_is_active_that_raises_ends_the_thread_and_both_clients_are_closed():
    closed = []

    def gone():
        raise ConnectionError("py4j gateway is gone")

    consumer = FakeConsumer([])
    wake = RetryWakeUps(
        consumer, lambda: None, lambda: None, gone, INTERVAL, LONGEST, close=lambda: closed.append(1)
    ).start()
    wake._thread.join(5)
    assert not wake._thread.is_alive() and consumer.closed and closed == [1]
