"""Helpers for tests that run the real streaming jobs."""

from __future__ import annotations


def run_available_now(start, spark, settings) -> None:
    """Run a job's query with Trigger.AvailableNow to the end; fail on its exception."""
    query = start(spark, settings, available_now=True)
    try:
        query.awaitTermination(300)
        assert query.exception() is None
    finally:
        query.stop()


def run_until(start, spark, settings, done, timeout: float = 180.0, poll: float = 0.5):
    """Run a job's query continuously (its processing-time trigger) until `done()` holds.

    Fails if the query stops or fails on its own meanwhile: the hardening tests assert that no
    input can stop a query. Returns the query's last progress events.
    """
    import time

    query = start(spark, settings, available_now=False)
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert query.isActive, f"the query stopped: {query.exception()}"
            assert time.monotonic() < deadline, f"not done within {timeout:.0f}s; last progress {query.lastProgress}"
            time.sleep(poll)
        assert query.isActive and query.exception() is None
        return query.recentProgress
    finally:
        query.stop()
