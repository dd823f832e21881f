import threading

from pipeline_lib.circuit_breaker import CLOSED, HALF_OPEN, OPEN, BreakerRegistry, CircuitBreaker, shared_registry


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_then_one_probe_after_open_seconds():
    clock = Clock()
    b = CircuitBreaker("h", failure_threshold=3, open_seconds=10, clock=clock)
    assert [b.record_failure() for _ in range(3)] == [False, False, True]
    assert (b.state, b.openings, b.allow()) == (OPEN, 1, False)
    clock.now = 9.9
    assert b.allow() is False
    clock.now = 10
    assert b.allow() is True and b.state == HALF_OPEN
    assert b.allow() is False  # one probe at a time
    assert b.record_failure() is True and b.state == OPEN and b.openings == 2
    clock.now = 20
    assert b.allow() is True
    b.record_success()
    assert (b.state, b.failures, b.allow()) == (CLOSED, 0, True)


def test_a_success_resets_the_count_and_a_neutral_outcome_closes_a_half_open_breaker():
    clock = Clock()
    b = CircuitBreaker("h", failure_threshold=2, open_seconds=1, clock=clock)
    b.record_failure()
    b.record_success()
    assert b.record_failure() is False and b.state == CLOSED
    b.record_failure()
    clock.now = 5
    assert b.allow()
    b.record_neutral()  # e.g. a 404: the host answered
    assert b.state == CLOSED


def test_only_one_thread_gets_the_half_open_probe():
    clock = Clock()
    b = CircuitBreaker("h", failure_threshold=1, open_seconds=1, clock=clock)
    b.record_failure()
    clock.now = 2
    allowed = []
    threads = [threading.Thread(target=lambda: allowed.append(b.allow())) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert allowed.count(True) == 1


def test_registry_shares_one_breaker_per_key_and_per_process():
    r = BreakerRegistry(2, 5)
    assert r.get("a") is r.get("a") and r.get("a") is not r.get("b")
    r.get("a").record_failure()
    r.get("a").record_failure()
    assert r.states() == {"a": OPEN, "b": CLOSED}
    assert shared_registry("download", 2, 5) is shared_registry("download", 2, 5)
    assert shared_registry("download", 2, 5) is not shared_registry("upload", 2, 5)
