"""When the retry scheduler has to run a batch, without Spark: a held retry's due time, plus a margin.

Spark runs a stateful query's no-data batch every trigger interval while any state timeout is
pending, and each one costs the scheduler a state-store scan (about 0.6 s of a core): most of an
idle `run`'s Spark work. With `retry.wake_on_due`, the scheduler's query runs no such batch.
Instead a thread on the driver (RetryWakeUps) reads the retry tiers itself (whole records, of
which it uses only the `xact.retry.due_at` header) and writes one tick record (header
xact.retry.tick, no task) to the first tier when a held retry falls due. The batch that reads
the tick fires every timeout that has passed, exactly as a no-data batch would.

Why nothing is forwarded early or held for ever:
- A tick is written WAKE_MARGIN_MS after the due time, rounded up to QUANTUM_MS. The batch that
  reads it is stamped after it was written (Spark stamps a batch once its offsets are known), so
  later than the timeout Spark set for the message (never after its due time), and Spark fires a
  timeout whose time is below the batch's. A release is at most WAKE_MARGIN_MS + QUANTUM_MS later
  than with a no-data batch every trigger interval: one trigger interval plus one batch, plus that.
- The hold function still forwards only when its own clock says the message is due; a worker
  whose clock runs behind the driver's re-arms the timeout, and a follow-up tick (2, 4, 8, ...
  trigger intervals later, up to the 5 minutes of skew every wait allows for) fires it.
- After a restart the thread starts reading each tier at `longest_wait_seconds` plus a minute
  before now (from the end the partition had before that lookup when nothing is later): a message
  written earlier is due by now (no stage asks for a longer wait, clock skew included), and the
  scheduler's start tick, and the thread's own first tick, fire those. Everything later is read
  again and planned. Partitions added to a tier are followed within a minute, from their start.
- While the thread cannot read the tiers (Kafka unreachable, a tier or partition it cannot place),
  it writes a tick every trigger interval instead, as the no-data batches would have run.

The plan is bounded: tick times are coalesced to one per QUANTUM_MS, so it holds at most
(1 + the follow-ups) x (the longest wait / QUANTUM_MS) entries (about 60,000 integers for the
default tiers, and only while retries fall due in every quantum), however many retries wait.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import suppress
from datetime import UTC, datetime

from pipeline_lib.config import Settings, Stage
from pipeline_lib.contracts import H_RETRY_DUE_AT, H_RETRY_TICK
from pipeline_lib.logs import get_logger
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.times import iso_utc, parse_iso

log = get_logger("retry-scheduler")

# A tick is written this long after a due time. The batch that reads it is stamped (on the
# driver's clock, after its offsets are read) later than the tick was written, so later than the
# message's timeout, which is never after its due time.
WAKE_MARGIN_MS = 100
# Due times within this span share one tick (Spark reads every tick of one trigger interval in one
# batch anyway); it bounds the plan and the ticks written, and adds at most this to a release.
QUANTUM_MS = 250
# Each wake-up is repeated 2, 4, 8, ... trigger intervals later, up to MAX_CLOCK_SKEW_MS: a worker
# whose clock runs behind the driver's (up to the skew every retry wait allows for) re-arms the
# timeout at the first tick and forwards the message at a later one.
FOLLOW_UP_INTERVALS = 2
MAX_CLOCK_SKEW_MS = 300_000
# How often the thread checks that its query still runs (it ends with the query), and how often
# it looks for partitions added to a tier.
ALIVE_CHECK_SECONDS = 1.0
NEW_PARTITIONS_SECONDS = 60.0
# Between tries while Kafka cannot answer.
FALLBACK_WAIT_SECONDS = 5.0


class WakeUpPlan:
    """The times the scheduler must run a batch, earliest first: each due time plus the margin,
    rounded up to QUANTUM_MS (one tick for every retry due in that span), and its follow-ups
    2, 4, 8, ... trigger intervals later, the last at or past MAX_CLOCK_SKEW_MS."""

    def __init__(self, interval_ms: int, margin_ms: int = WAKE_MARGIN_MS, quantum_ms: int = QUANTUM_MS) -> None:
        if interval_ms <= 0 or quantum_ms <= 0:
            raise ValueError(f"interval_ms and quantum_ms must be above 0, got {interval_ms} and {quantum_ms}")
        self.interval_ms, self.margin_ms, self.quantum_ms = interval_ms, margin_ms, quantum_ms
        self._heap: list[int] = []
        self._planned: set[int] = set()

    def __len__(self) -> int:
        return len(self._heap)

    def add(self, due_ms: int, *, follow_ups: bool = True) -> None:
        """Plan the wake-ups for one held retry due at `due_ms` (epoch milliseconds)."""
        first = math.ceil((due_ms + self.margin_ms) / self.quantum_ms) * self.quantum_ms
        self._plan(first)
        intervals = FOLLOW_UP_INTERVALS
        while follow_ups:
            self._plan(first + intervals * self.interval_ms)
            follow_ups = intervals * self.interval_ms < MAX_CLOCK_SKEW_MS
            intervals *= 2

    def _plan(self, at: int) -> None:
        if at not in self._planned:
            self._planned.add(at)
            heapq.heappush(self._heap, at)

    def next_at(self) -> int | None:
        """The earliest planned wake-up, or None when nothing is held."""
        return self._heap[0] if self._heap else None

    def take_due(self, now_ms: int) -> bool:
        """Remove every wake-up at or before `now_ms`; True when there was one (write one tick)."""
        taken = False
        while self._heap and self._heap[0] <= now_ms:
            self._planned.discard(heapq.heappop(self._heap))
            taken = True
        return taken


def due_ms_of(headers: Iterable[tuple[str, bytes | str | None]] | None) -> int | None:
    """The due time (epoch ms) a retry message's headers give; None for a tick, a message without
    the header or one whose header does not parse (the scheduler dead-letters that one). Never raises."""
    try:
        found = None
        for name, raw in headers or ():
            if name == H_RETRY_TICK:
                return None
            if name == H_RETRY_DUE_AT and raw is not None:
                found = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        if found is None or len(found) > 64:
            return None
        return int(parse_iso(found, naive="error").timestamp() * 1000)
    except Exception:  # noqa: BLE001 - a header this cannot read is the scheduler's to dead-letter
        return None


class RetryWakeUps:
    """The driver thread that writes a tick when a held retry falls due (see the module doc).

    Args:
        consumer: a confluent-kafka Consumer; closed when the thread ends.
        assign: assigns the consumer its partitions (`assign_from_horizon`), in the thread, tried
            again while Kafka cannot answer (a tick is written each time meanwhile, so held
            retries are released as they would be without this thread).
        send_tick: writes one tick record to the first tier.
        is_active: whether the scheduler's query still runs; the thread ends when it does not.
        interval_ms: the scheduler's trigger interval.
        longest_wait_ms: the longest wait a stage asks for (RetryPolicy.longest_wait_seconds); a
            due time further ahead is not planned (the scheduler dead-letters that message).
    """

    def __init__(
        self,
        consumer,
        assign: Callable[[], object],
        send_tick: Callable[[], None],
        is_active: Callable[[], bool],
        interval_ms: int,
        longest_wait_ms: int,
        clock: Callable[[], float] = time.time,
        follow_new: Callable[[], object] | None = None,
        close: Callable[[], object] | None = None,
    ) -> None:
        self.consumer, self.assign, self.send_tick, self.follow_new = consumer, assign, send_tick, follow_new
        self.is_active, self.clock, self.close = is_active, clock, close
        self.longest_wait_ms = longest_wait_ms
        self.plan = WakeUpPlan(interval_ms)
        self.ticks = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._said: str | None = None

    def start(self, name: str = "retry-wake-ups") -> RetryWakeUps:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def step(self, poll_seconds: float) -> None:
        """Read what the tiers have (waiting at most `poll_seconds`), plan it, tick if one is due."""
        for msg in self.consumer.consume(500, timeout=poll_seconds):
            if msg.error():
                continue
            due = due_ms_of(msg.headers())
            # Later than any stage asks for: the scheduler dead-letters it, so it is never held.
            if due is not None and due <= self.clock() * 1000 + self.longest_wait_ms:
                self.plan.add(due)
        now_ms = int(self.clock() * 1000)
        next_at = self.plan.next_at()
        if next_at is not None and next_at <= now_ms:
            self.send_tick()  # before taking them off the plan: a tick that failed is tried again
            self.plan.take_due(now_ms)
            self.ticks += 1

    def _active(self) -> bool:
        try:
            return bool(self.is_active())
        except Exception:  # noqa: BLE001 - the session or its gateway is gone: so is the query
            return False

    def _trouble(self, exc: BaseException) -> None:
        """Say a Kafka problem once (then at debug until it clears): the query reports it too."""
        text = f"{type(exc).__name__}: {str(exc)[:200]}"
        level = logging.DEBUG if text == self._said else logging.WARNING
        log.log(level, "[retry-scheduler] wake-ups: %s (held retries are released by a tick every trigger)", text)
        self._said = text

    def _run(self) -> None:
        alive_at = 0.0
        refresh_at = self.clock() + NEW_PARTITIONS_SECONDS
        assigned = False
        # Whatever the start tick could not fire (it is best effort) is fired by this one.
        self.plan.add(int(self.clock() * 1000), follow_ups=False)
        try:
            while not self._stop.is_set():
                now = self.clock()
                if now >= alive_at:
                    if not self._active():
                        return
                    alive_at = now + ALIVE_CHECK_SECONDS
                next_at = self.plan.next_at()
                wait = (
                    ALIVE_CHECK_SECONDS if next_at is None else min(ALIVE_CHECK_SECONDS, max(0.0, next_at / 1000 - now))
                )
                try:
                    if not assigned:
                        self.assign()
                        assigned, self._said = True, None
                    elif self.follow_new is not None and now >= refresh_at:
                        refresh_at = now + NEW_PARTITIONS_SECONDS
                        self.follow_new()
                    self.step(wait)
                except Exception as exc:  # noqa: BLE001 - Kafka trouble: the query reports it; try again
                    self._trouble(exc)
                    if not assigned:  # following nothing: tick every interval, as no-data batches would
                        with suppress(Exception):
                            self.send_tick()
                            self.ticks += 1
                    self._stop.wait(max(FALLBACK_WAIT_SECONDS, self.plan.interval_ms / 1000))
        finally:
            for end in (self.consumer.close, self.close):
                with suppress(Exception):  # closing a client of a gone broker
                    if end is not None:
                        end()


class IncompleteAssignment(Exception):
    """A tier, or a partition's start, could not be read: the thread tries again (ticking meanwhile)."""


def _tier_partitions(consumer, topics: Iterable[str], timeout: float) -> list[tuple[str, int]]:
    found = []
    for topic in topics:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            error = getattr(metadata, "error", None)
            raise IncompleteAssignment(f"retry tier {topic} has no readable partitions ({error or 'not found'})")
        found += [(topic, p) for p in sorted(metadata.partitions)]
    return found


def assign_from_horizon(
    consumer, topics: Iterable[str], horizon_ms: int, timeout: float = 10.0
) -> set[tuple[str, int]]:
    """Assign every partition of `topics`, each from its first record at or after `horizon_ms`, or
    from the end it had before the lookup when there is none (so a record written meanwhile is
    read). Raises IncompleteAssignment unless every partition could be placed."""
    from confluent_kafka import TopicPartition

    from pipeline_lib.kafka_client import watermarks

    partitions = _tier_partitions(consumer, topics, timeout)
    ends = {(t, p): watermarks(consumer, t, p, timeout)[1] for t, p in partitions}
    starts = consumer.offsets_for_times([TopicPartition(t, p, horizon_ms) for t, p in partitions], timeout=timeout)
    assignment = []
    for tp in starts:
        if tp.error is not None:
            raise IncompleteAssignment(f"{tp.topic}[{tp.partition}]: {tp.error}")
        offset = tp.offset if 0 <= tp.offset <= ends[(tp.topic, tp.partition)] else ends[(tp.topic, tp.partition)]
        assignment.append(TopicPartition(tp.topic, tp.partition, offset))
    if len(assignment) != len(partitions):
        raise IncompleteAssignment(f"{len(assignment)} of {len(partitions)} retry tier partitions found a start")
    consumer.assign(assignment)
    return set(partitions)


def follow_new_partitions(consumer, topics: Iterable[str], known: set[tuple[str, int]], timeout: float = 10.0) -> None:
    """Add partitions created on a tier since the assignment, from their beginning; `known` grows."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    new = [tp for tp in _tier_partitions(consumer, topics, timeout) if tp not in known]
    if new:
        consumer.incremental_assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in new])
        known.update(new)
        log.info("[retry-scheduler] wake-ups: following %d new retry tier partition(s)", len(new))


def wake_up_group() -> str:
    """A group id for the wake-up consumer: assigned, never subscribed, nothing committed."""
    return f"xact-wake-ups-{uuid.uuid4().hex[:8]}"


def start_wake_ups(settings: Settings, is_active: Callable[[], bool]) -> RetryWakeUps:
    """Start the wake-up thread of the scheduler whose query `is_active` reports on."""
    from pipeline_lib.kafka_client import assigned_consumer, make_producer, produce

    consumer = assigned_consumer(settings, wake_up_group())
    longest_wait_ms = int(RetryPolicy.from_settings(settings).longest_wait_seconds * 1000)
    horizon_ms = int(time.time() * 1000) - longest_wait_ms - 60_000
    producer = make_producer(settings, **{"message.timeout.ms": 10_000})
    first_tier = settings.retry_topics[0]

    def send_tick() -> None:
        tick = (None, b"tick", {H_RETRY_TICK: iso_utc(datetime.now(UTC))})
        produce(settings, first_tier, [tick], producer=producer, timeout=15)

    interval_ms = max(1, round(settings.trigger_seconds(Stage.RETRY_SCHEDULER.value) * 1000))
    known: set[tuple[str, int]] = set()

    def assign() -> None:
        known.update(assign_from_horizon(consumer, settings.retry_topics, horizon_ms))

    return RetryWakeUps(
        consumer,
        assign,
        send_tick,
        is_active,
        interval_ms,
        longest_wait_ms,
        follow_new=lambda: follow_new_partitions(consumer, settings.retry_topics, known),
        close=lambda: producer.flush(5),
    ).start()
