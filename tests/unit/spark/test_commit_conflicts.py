"""Trying a Delta commit again after it lost to a concurrent writer (spark/tables.py), without a
session: delta-spark raises its `captured` classes, matched by name along the MRO."""

from __future__ import annotations

import pytest

from pipeline_lib.spark import tables


class CapturedBase(Exception):
    pass


class ConcurrentAppendException(CapturedBase):  # the name delta-spark's captured class has
    pass


class Subclass(ConcurrentAppendException):
    pass


def test_a_conflict_is_tried_again_and_anything_else_is_raised_at_once(monkeypatch):
    monkeypatch.setattr(tables.time, "sleep", lambda _s: None)
    calls = []

    def commit():
        calls.append(1)
        if len(calls) < 3:
            raise Subclass("Files were added to partition [failed_date=2026-12-07] by a concurrent update")

    tables.retry_on_conflict(commit, "test")
    assert len(calls) == 3 and tables.is_commit_conflict(Subclass()) and not tables.is_commit_conflict(CapturedBase())

    def broken():
        calls.append(1)
        raise ValueError("not a conflict")

    calls.clear()
    with pytest.raises(ValueError):
        tables.retry_on_conflict(broken, "test")
    assert len(calls) == 1

    def always():
        raise ConcurrentAppendException("again")

    with pytest.raises(ConcurrentAppendException):
        tables.retry_on_conflict(always, "test", attempts=3)
