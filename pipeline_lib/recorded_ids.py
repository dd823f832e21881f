"""Which event ids xact_events may already hold, known without reading it: one Bloom filter per
event date, kept by the ingest job between its micro-batches.

Ingest looks each batch's events up in xact_events (in the partitions of their event dates) so a
redelivered event emits no second set of tasks (spark/sinks.py, IngestBatchWriter). Almost every
batch holds only events never seen, and that lookup is a Spark job over Delta on every batch
(1.4 s of a 4.5 s median batch at one event per second, docs/performance.md). With these filters
a batch none of whose ids may be recorded skips it; a batch with one that may be runs it, for
those ids only, as before.

What keeps a filter a superset of its partition (never a false negative, so never a duplicate):
- a date's filter is built from that partition of the table, every event id in it, the first time
  a batch names the date in this process (and again after it was evicted or grew past its size);
- a batch's event ids are added to the filters their dates have before its events are appended,
  so a failed or repeated append leaves at most extra ids (a lookup more, never one fewer); a date
  without a filter then gets one later, built from the table after the append;
- a batch whose ids were not gathered (a big one) drops its dates' filters: rebuilt when needed;
- ingest is the table's only writer, so no other append can escape the filter.
A false positive (about 1 % per id) costs only the lookup every batch ran before. The state is
bounded: at most `max_dates` filters, each sized for twice its partition when built. A build is
a Spark job over one partition, so one batch builds at most `max_builds` (a backfill naming many
old dates looks their ids up, as every batch did before, instead of building a filter for each).
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable

FALSE_POSITIVE_RATE = 0.01
MIN_CAPACITY = 10_000  # ids a new date's filter holds before it must be rebuilt (12 KB at 1 %)
MAX_DATES = 31  # event dates with a filter at once (a batch of older dates rebuilds theirs)
MAX_BUILDS = 2  # filters one batch may build (today and yesterday, after a restart)


class BloomFilter:
    """A set of strings that answers "maybe" or "certainly not": no false negatives, and false
    positives at about `error_rate` while at most `capacity` items were added."""

    def __init__(self, capacity: int, error_rate: float = FALSE_POSITIVE_RATE) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        if not 0 < error_rate < 1:
            raise ValueError("error_rate must be between 0 and 1")
        self.capacity = capacity
        self.bits = max(8, math.ceil(-capacity * math.log(error_rate) / math.log(2) ** 2))
        self.hashes = max(1, round(self.bits / capacity * math.log(2)))
        self._array = bytearray((self.bits + 7) // 8)
        self.count = 0  # items added (repeats included)

    def _positions(self, item: str) -> Iterable[int]:
        # Double hashing (Kirsch-Mitzenmacher): k positions from two 64-bit halves of one digest.
        digest = hashlib.blake2b(item.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        first, second = int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little") | 1
        return ((first + i * second) % self.bits for i in range(self.hashes))

    def add(self, item: str) -> None:
        for p in self._positions(item):
            self._array[p >> 3] |= 1 << (p & 7)
        self.count += 1

    def __contains__(self, item: str) -> bool:
        return all(self._array[p >> 3] & (1 << (p & 7)) for p in self._positions(item))

    @property
    def full(self) -> bool:
        """More items were added than it was sized for: its false-positive rate is above its own."""
        return self.count > self.capacity


class RecordedEventIds:
    """Per event date, a filter of the event ids xact_events holds (see the module docstring).

    Args:
        load: a date (ISO, as the batch carries it) -> (how many ids, the ids) of that partition
            of the table, the ids streamed (a partition of millions never sits in a list);
            called when a date's filter is (re)built.
        max_dates: filters kept at once, the least recently used dropped first.
        max_builds: filters one `maybe_recorded` call may build; a date beyond that has all its
            ids returned as maybe recorded.
    """

    def __init__(
        self,
        load: Callable[[str], tuple[int, Iterable[str | None]]],
        *,
        max_dates: int = MAX_DATES,
        max_builds: int = MAX_BUILDS,
        min_capacity: int = MIN_CAPACITY,
        error_rate: float = FALSE_POSITIVE_RATE,
    ) -> None:
        if max_dates < 1:
            raise ValueError("max_dates must be at least 1")
        if max_builds < 0:
            raise ValueError("max_builds must be at least 0")
        self._load = load
        self._max_dates, self._max_builds = max_dates, max_builds
        self._min_capacity = min_capacity
        self._error_rate = error_rate
        self._filters: OrderedDict[str, BloomFilter] = OrderedDict()
        self.builds = 0  # filters built from the table (for logs and tests)

    def _build(self, day: str) -> BloomFilter:
        count, ids = self._load(day)
        built = BloomFilter(max(self._min_capacity, 2 * count), self._error_rate)
        for event_id in ids:
            if event_id is not None:
                built.add(event_id)
        self._filters[day] = built
        self.builds += 1
        return built

    def _evict(self) -> None:
        while len(self._filters) > self._max_dates:
            self._filters.popitem(last=False)

    def maybe_recorded(self, events: Iterable[tuple[str | None, str | None]]) -> list[str]:
        """The ids among (event id, event date) pairs that the table may hold, sorted; the others
        it certainly does not. An event without a date or an id is never looked up (the table's
        lookup reads the batch's dates only, and matches ids by IN), so it is never returned."""
        maybe: set[str] = set()
        builds = 0
        for day, ids in sorted(_by_day(events).items(), reverse=True):  # the newest dates first
            found = self._filters.get(day)
            if found is None or found.full:
                if builds >= self._max_builds:
                    maybe.update(ids)  # no filter for it this batch: looked up
                    continue
                found = self._build(day)
                builds += 1
            self._filters.move_to_end(day)
            maybe.update(event_id for event_id in ids if event_id in found)
        self._evict()
        return sorted(maybe)

    def add(self, events: Iterable[tuple[str | None, str | None]]) -> None:
        """Record that these events are about to be appended (call before the append).

        Each date's ids go into the filter the date has, as it is (a full one is rebuilt only by
        the next lookup, when the table holds them); a date without one needs nothing: its filter
        is built from the table, after this append."""
        for day, ids in _by_day(events).items():
            found = self._filters.get(day)
            if found is not None:
                for event_id in ids:
                    found.add(event_id)

    def forget(self, days: Iterable[str]) -> None:
        """Drop these dates' filters (their partitions were appended to by ids not added here)."""
        for day in days:
            self._filters.pop(day, None)


def _by_day(events: Iterable[tuple[str | None, str | None]]) -> dict[str, set[str]]:
    """Ids by date; a pair missing either is left out (the table's lookup could not match it:
    an IN list never matches a null)."""
    grouped: dict[str, set[str]] = {}
    for event_id, day in events:
        if event_id is not None and day is not None:
            grouped.setdefault(day, set()).add(event_id)
    return grouped
