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
