"""The record-stage engine of the I/O stages (download, upload): decode -> work -> route, total per
record, on a thread pool with a bounded in-flight window.

A stage subclasses `RecordStage` with its work (the I/O of one record) and its routing (routing.py:
which messages an outcome sends); the engine decodes, runs the work `concurrency` at a time, and
turns anything that goes wrong with one record into that record's own dead letter (dead_letters.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Generic, Self, TypeVar

from pipeline_lib.config import Settings
from pipeline_lib.contracts import ContractError, DownloadTask, Message, SourceRef
from pipeline_lib.dead_letters import internal_dead_letter, internal_failure, malformed_input
from pipeline_lib.logs import get_logger
from pipeline_lib.records import InputRecord
from pipeline_lib.retry_policy import RetryPolicy
from pipeline_lib.routing import Outcome, OutMessage, Routed, Topics, route_failure
from pipeline_lib.worker_state import per_worker

log = get_logger("routing")  # the logger name the stages' record warnings have always had

M = TypeVar("M", bound=Message)
R = TypeVar("R", bound=Outcome)  # a stage's outcome


# Records an I/O stage holds at once (decoded, in its pool or waiting to be yielded in order). Spark
# hands mapInArrow up to 10,000 records per Arrow batch; holding a whole batch (about 15 KiB a
# record: tasks, outcomes, routed rows) took a download worker from 165 MiB idle to 258 MiB on
# 10,000 x 64 KiB. A sliding window of 500 keeps it near 185 MiB and keeps the pool busy across
# Arrow batches (benchmarks/download_throughput.py).
IN_FLIGHT_WINDOW = 500


class RecordStage(ABC, Generic[M, R]):
    """The decode -> work -> route loop of the I/O stages (download, upload), total per record.

    Whatever a record holds, handling it ends in that record's own messages: its routed outcome,
    or a dead letter. An unreadable record is `malformed`; an exception anywhere else (the work,
    the routing, the encoding of a message) is `internal`, with the exception type and place, the
    record's provenance and, when the record held a task, a `dead` result for it. The other
    records of the batch are unaffected and nothing escapes to fail the Spark task, so no input
    can stop a query. Subclasses supply `work`, `route` and `task_of`.
    """

    name: str
    message_cls: type[M]

    def __init__(self, settings: Settings, concurrency: int) -> None:
        self.retry_policy = RetryPolicy.from_settings(settings)
        self.topics = Topics.from_settings(settings)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix=self.name)

    @classmethod
    def for_settings(cls, settings: Settings) -> Self:
        """The stage of this worker process for these settings (worker_state.per_worker)."""
        return per_worker(cls, settings)

    @abstractmethod
    def work(self, message: M) -> R:
        """The I/O of one record; expected failures are part of the outcome, not exceptions."""

    @abstractmethod
    def route(self, outcome: R, source: SourceRef | None) -> Routed:
        """The messages an outcome sends."""

    @abstractmethod
    def task_of(self, message: M) -> DownloadTask:
        """The task a decoded message carries (for the dead letter of an internal failure)."""

    def process(self, records: Iterable[InputRecord], window: int = IN_FLIGHT_WINDOW) -> Iterator[Routed]:
        """Route every record, working on up to `concurrency` at once; yields in input order.

        Records are read lazily and at most `window` of them are decoded, in the pool or waiting
        to be yielded at a time: a worker's memory is bounded by the window, not by the batch,
        and the pool never drains between batches or slices (only at the end of the input).
        """
        pending: deque[tuple[InputRecord, M | Routed, Future[tuple[R | None, BaseException | None]] | None]] = deque()
        for record in records:
            item = self._decode(record, datetime.now(UTC))
            run = None if isinstance(item, Routed) else self._pool.submit(self._work, item)
            pending.append((record, item, run))
            while len(pending) >= max(1, window):
                yield self._finish(*pending.popleft())
        while pending:
            yield self._finish(*pending.popleft())

    def _finish(
        self, record: InputRecord, item: M | Routed, run: Future[tuple[R | None, BaseException | None]] | None
    ) -> Routed:
        if isinstance(item, Routed) or run is None:
            return item  # type: ignore[return-value]
        outcome, error = run.result()
        try:
            if error is not None:
                raise error
            return _encoded(self.route(outcome, record.source))  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - one record's failure must not fail the batch
            return self._internal(record, exc, item)

    def _decode(self, record: InputRecord, now: datetime) -> M | Routed:
        raw = record.value if record.value is not None else b""
        try:
            return self.message_cls.decode(raw)
        except ContractError as exc:
            reason = f"not a readable {self.message_cls.KIND.replace('_', ' ')}: {exc}"
            dead = malformed_input(self.name, reason, record, now)
            return _encoded(Routed([OutMessage("malformed", self.topics.dlq, record.key, dead)]))
        except Exception as exc:  # noqa: BLE001 - decode is total by contract; this guards a bug in it
            return self._internal(record, exc, None)

    def _work(self, message: M) -> tuple[R | None, BaseException | None]:
        try:
            return self.work(message), None
        except Exception as exc:  # noqa: BLE001 - handed to the record's routing, never lost
            return None, exc

    def _internal(self, record: InputRecord, exc: BaseException, message: M | None) -> Routed:
        """The dead letter (and `dead` result, when there is a task) of a record whose handling raised."""
        at = datetime.now(UTC)
        log.warning(
            "[%s] record %s/%s/%s: %s: %s",
            self.name,
            record.source.topic,
            record.source.partition,
            record.source.offset,
            type(exc).__name__,
            exc,
        )
        if message is not None:
            try:
                task = self.task_of(message)
                dead, result = route_failure(
                    task,
                    internal_failure(exc, self.name),
                    stage=self.name,
                    source=record.source,
                    at=at,
                    policy=self.retry_policy,
                    topics=self.topics,
                    return_topic=self.topics.pending,
                )
                return _encoded(Routed([replace(dead, outcome="internal"), result]))
            except Exception:  # noqa: BLE001 - the task itself is broken: fall back to the bare record
                pass
        dead_letter = internal_dead_letter(self.name, exc, record, at)
        return _encoded(Routed([OutMessage("internal", self.topics.dlq, record.key, dead_letter)]))


def _encoded(routed: Routed) -> Routed:
    """`routed` with its messages encoded for Kafka (Routed.rows)."""
    return replace(routed, rows=[m.row() for m in routed.messages])
