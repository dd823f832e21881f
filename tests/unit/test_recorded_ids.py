"""The per-date filters that let ingest skip its lookup: never a false negative, whatever the order
of lookups, appends, evictions, overfull filters and restarts."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.recorded_ids import BloomFilter, RecordedEventIds

ids = st.text(min_size=1, max_size=40)
days = st.sampled_from(["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", None])
maybe_ids = st.one_of(st.none(), st.text(alphabet="abc", min_size=1, max_size=3))


@given(st.lists(ids, max_size=300), st.integers(min_value=1, max_value=500))
def test_a_bloom_filter_holds_everything_added_to_it(items, capacity):
    bloom = BloomFilter(capacity)
    for item in items:
        bloom.add(item)
    assert all(item in bloom for item in items)
    assert bloom.full == (len(items) > capacity)


def test_a_bloom_filter_keeps_its_false_positive_rate_up_to_its_capacity():
    bloom = BloomFilter(10_000)
    for i in range(10_000):
        bloom.add(f"event-{i}")
    false = sum(f"other-{i}" in bloom for i in range(20_000))
    assert false / 20_000 < 0.02  # sized for 1 %
    assert len(bloom._array) < 13_000  # about 9.6 bits per id


def test_a_bloom_filter_refuses_a_size_it_cannot_have():
    with pytest.raises(ValueError, match="capacity"):
        BloomFilter(0)
    with pytest.raises(ValueError, match="error_rate"):
        BloomFilter(10, error_rate=1.0)


class Table:
    """xact_events as far as the filters see it: event ids per event date, appended in batches."""

    def __init__(self) -> None:
        self.rows: dict[str, list[str]] = {}
        self.loads = 0

    def load(self, day: str) -> tuple[int, list[str]]:
        self.loads += 1
        ids = list(self.rows.get(day, []))
        return len(set(ids)), iter(ids)

    def append(self, events) -> None:
        for event_id, day in events:
            self.rows.setdefault(day, []).append(event_id)

    def holds(self, event_id: str | None, day: str | None) -> bool:
        return event_id is not None and day is not None and event_id in self.rows.get(day, [])


# A small pool of ids, so redeliveries (an id the table holds, asked again) are common; and now
# and then an event without an id or a date, which no lookup can match.
batches = st.lists(st.lists(st.tuples(maybe_ids, days), max_size=12), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None)
@given(batches, st.lists(st.sampled_from(["append", "fail", "restart", "forget"]), min_size=25, max_size=25))
def test_whatever_happens_an_id_the_table_holds_is_always_looked_up(batches, fates):
    """A model of the ingest job: per batch, ask, add, then append (or fail before it, or restart
    the job, or take the big-batch path that forgets the dates). The filters are tiny (capacity
    3, two dates, one build a batch) so rebuilding when full, evicting and dates left without a
    filter happen all the time."""
    table = Table()

    def fresh() -> RecordedEventIds:
        return RecordedEventIds(table.load, max_dates=2, max_builds=1, min_capacity=3)

    recorded = fresh()
    for batch, fate in zip(batches, fates, strict=False):
        if fate == "forget":  # a big batch: no ids gathered, looked up by a join, dates forgotten
            recorded.forget({d for _, d in batch if d is not None})
            table.append([(e, d) for e, d in batch if d is not None])
            continue
        maybe = set(recorded.maybe_recorded(batch))
        missed = {e for e, d in batch if table.holds(e, d)} - maybe
        assert not missed, f"recorded ids the filters said were certainly new: {missed}"
        assert maybe <= {e for e, d in batch if e is not None and d is not None}  # only ids a lookup can find
        recorded.add(batch)
        if fate == "fail":
            continue  # the append failed: the filters hold ids the table does not (harmless)
        table.append([(e, d) for e, d in batch if d is not None])
        if fate == "restart":
            recorded = fresh()


def test_a_batch_of_new_events_needs_no_lookup_and_a_redelivery_does():
    table = Table()
    table.append([("old", "2026-12-01")])
    recorded = RecordedEventIds(table.load)
    new = [(f"e{i}", "2026-12-01") for i in range(50)]
    assert recorded.maybe_recorded(new) == []
    recorded.add(new)
    table.append(new)
    assert recorded.maybe_recorded([("e7", "2026-12-01"), ("old", "2026-12-01"), ("e8", None)]) == ["e7", "old"]
    assert table.loads == 1  # the date's filter was built once, then fed


def test_an_overfull_filter_is_rebuilt_from_the_table_and_at_most_max_dates_are_kept():
    table = Table()
    recorded = RecordedEventIds(table.load, max_dates=2, min_capacity=2)
    batch = [(f"e{i}", "2026-12-01") for i in range(5)]
    recorded.maybe_recorded(batch)
    recorded.add(batch)  # 5 ids in a filter sized for 2: kept as is until the next lookup
    table.append(batch)
    assert recorded.maybe_recorded([("e4", "2026-12-01")]) == ["e4"]
    assert recorded.builds == 2  # rebuilt, sized for twice the partition
    for day in ("2026-12-02", "2026-12-03"):
        recorded.maybe_recorded([("x", day)])
    assert len(recorded._filters) == 2 and "2026-12-01" not in recorded._filters


def test_max_dates_must_be_positive():
    with pytest.raises(ValueError, match="max_dates"):
        RecordedEventIds(lambda day: (0, []), max_dates=0)
    with pytest.raises(ValueError, match="max_builds"):
        RecordedEventIds(lambda day: (0, []), max_builds=-1)


def test_a_batch_of_many_old_dates_builds_at_most_max_builds_filters_and_looks_the_rest_up():
    table = Table()
    old = [(f"e{i}", f"2026-11-{i + 1:02d}") for i in range(20)]
    table.append(old)
    recorded = RecordedEventIds(table.load)
    backfill = [(f"n{i}", f"2026-11-{i + 1:02d}") for i in range(20)] + [("e0", "2026-11-01")]
    maybe = recorded.maybe_recorded(backfill)
    assert recorded.builds == 2 and table.loads == 2  # the two newest dates
    assert "e0" in maybe and {f"n{i}" for i in range(18)} <= set(maybe)  # the 18 older: looked up
    assert not {"n18", "n19"} & set(maybe)  # the newest two have filters: certainly new
    recorded.add(backfill)  # feeds the two filters; builds nothing
    assert table.loads == 2
    table.append(backfill)
    assert recorded.maybe_recorded([("n19", "2026-11-20")]) == ["n19"]


def test_a_filter_is_filled_from_a_stream_sized_by_the_count_it_is_given():
    def load(day):
        return 50_000, (f"id-{i}" for i in range(50_000))

    recorded = RecordedEventIds(load)
    assert recorded.maybe_recorded([("id-7", "2026-12-01"), ("new", "2026-12-01")]) == ["id-7"]
    assert recorded._filters["2026-12-01"].capacity == 100_000
