"""The one stage skeleton: every streaming query of the pipeline is a `StageQuery` started here.

    read_topics(topics) -> mapInArrow(record_loop(the stage's per-record function))
        -> [one optional step] -> observe(the stage's metrics) -> the stage's sink
        (checkpoint, trigger, progress listener and metrics recorder: the same for every stage)

A stage module declares only what is its own: its name (config.Stage, which also gives the
topics it reads: Settings.stage_inputs), its per-record function (and the schema of the rows it
emits), its sink (spark/sinks.py) and the table it writes, its metrics and what else it does at start.
`start_stage` does the rest, the same way for all of them.

The per-record function runs in the Python workers, one stream per partition: Kafka records in
(records.InputRecord), row tuples out. `record_loop` is the one Arrow loop: it turns zero-copy
slices of Spark's Arrow batches into records lazily and gathers rows into output batches of
ROWS_PER_OUTPUT_BATCH, so a partition is one stream and the worker holds a bounded window.
`per_record` is the one guard of a per-record function: whatever it raises for one record
becomes that record's `failed` rows (a dead letter with its provenance), never a failed batch.
The I/O stages run their records concurrently, so their engine (record_stage.RecordStage) keeps
the same guard inside its pool, with the same dead-letter factory (dead_letters.py).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery
from pyspark.sql.types import StructType

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.progress import drained
from pipeline_lib.records import InputRecord, input_records
from pipeline_lib.spark.kafka_io import arrow_batch, arrow_schema, read_topics, record_columns
from pipeline_lib.spark.progress import guard_stopped_batches, install_progress_listener
from pipeline_lib.spark.tables import TableSpec, create_table

if TYPE_CHECKING:
    import pyarrow as pa

    from pipeline_lib.spark.sinks import Sink

Row = tuple
# A stage's per-record function: one partition's records in, row tuples (in `schema` order) out.
RecordFunction = Callable[[Iterator[InputRecord]], Iterator[Row]]

# Output rows per Arrow batch, and input records turned into Python objects at once (Spark's own
# batches hold up to 10,000 records; the stage bounds what it holds beyond that).
ROWS_PER_OUTPUT_BATCH = 500

log = get_logger("stage")


@dataclass(frozen=True)
class StageQuery:
    """What one stage declares: everything `start_stage` needs to run it.

    Attributes:
        name: the stage's name (config.Stage): query name, checkpoint, trigger, metrics, and
            the topics it reads (Settings.stage_inputs).
        records: builds the per-record function from the settings (on the driver; it runs in
            the workers, so it must pickle).
        schema: the rows the per-record function emits.
        sink: where the rows go (spark/sinks.py: Kafka rows, a Delta foreachBatch, or both).
        metrics: the columns observed per micro-batch (observedMetrics.<name>), of the rows
            after `step`.
        step: one optional step between the per-record function and the sink: the retry
            scheduler's applyInPandasWithState (stateful), the DLQ table's projection to rows.
        table: the Delta table the sink writes, created (or given its new columns) at start.
        prepare: anything else to do before the query starts (a start tick, the cache janitor).
        headers: the records carry their Kafka headers.
        timers: the query holds processing-time state timeouts (see start_query).
    """

    name: str
    records: Callable[[Settings], RecordFunction]
    schema: StructType
    sink: Sink
    metrics: Callable[[Settings], list[Column]] = field(default=lambda settings: [])
    step: Callable[[DataFrame, Settings], DataFrame] | None = None
    table: Callable[[Settings], TableSpec] | None = None
    prepare: Callable[[SparkSession, Settings], None] | None = None
    headers: bool = False
    timers: bool = False


def stage_rows(raw: DataFrame, settings: Settings, stage: StageQuery) -> DataFrame:
    """Kafka source rows -> the stage's rows (its per-record function, through the one Arrow loop)."""
    loop = record_loop(stage.records(settings), stage.schema)
    return record_columns(raw, headers=stage.headers).mapInArrow(loop, stage.schema)


def start_stage(
    spark: SparkSession, settings: Settings, stage: StageQuery, *, available_now: bool = False
) -> StreamingQuery:
    """Start `stage`'s query; with `available_now`, it processes what is there and stops."""
    if stage.table is not None:
        create_table(spark, stage.table(settings))
    if stage.prepare is not None:
        stage.prepare(spark, settings)
    install_progress_listener(spark, settings)
    rows = stage_rows(read_topics(spark, settings, settings.stage_inputs(stage.name)), settings, stage)
    if stage.step is not None:
        rows = stage.step(rows, settings)
    observed = stage.metrics(settings)
    if observed:
        rows = rows.observe(stage.name, *observed)
    writer = stage.sink.writer(rows, settings).queryName(stage.name)
    writer = writer.option("checkpointLocation", settings.checkpoint(stage.name))
    return start_query(writer, settings, stage.name, available_now, timers=stage.timers)


def record_loop(process: RecordFunction, schema: StructType) -> Callable[[Iterator[pa.RecordBatch]], Iterator]:
    """The mapInArrow function of every stage: Arrow batches of Kafka records in, `schema` rows out."""
    out_schema = arrow_schema(schema)

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        rows: list[Row] = []
        for row in process(_records(batches)):  # one stream: a stage's pool never drains mid-partition
            rows.append(row)
            if len(rows) >= ROWS_PER_OUTPUT_BATCH:
                yield arrow_batch(rows, out_schema)
                rows = []
        if rows:
            yield arrow_batch(rows, out_schema)

    return run


def _records(batches: Iterable[pa.RecordBatch], slice_rows: int = ROWS_PER_OUTPUT_BATCH) -> Iterator[InputRecord]:
    """Every Kafka record of the input as one lazy stream, a zero-copy slice of a batch at a time."""
    for batch in batches:
        for start in range(0, batch.num_rows, slice_rows):
            yield from input_records(batch.slice(start, slice_rows).to_pydict())


def per_record(
    rows_of: Callable[[InputRecord, datetime], Iterable[Row]],
    failed: Callable[[InputRecord, BaseException, datetime], Iterable[Row]],
) -> RecordFunction:
    """A per-record function made total: `rows_of(record, now)` for each record; whatever it raises
    becomes `failed(record, exc, now)`, that record's dead letter, and the stream goes on."""

    def process(records: Iterator[InputRecord]) -> Iterator[Row]:
        for record in records:
            now = datetime.now(UTC)
            try:
                out = list(rows_of(record, now))
            except Exception as exc:  # noqa: BLE001 - one bad record must never fail the batch
                try:
                    out = list(failed(record, exc, now))
                except Exception as again:  # noqa: BLE001 - nor may its dead letter
                    # No row can be built for it: say where it sits, so it can be read again.
                    source = record.source
                    log.error(
                        "record %s/%s/%s dropped: handling it raised %s, and so did its dead letter (%s)",
                        source.topic,
                        source.partition,
                        source.offset,
                        type(exc).__name__,
                        type(again).__name__,
                    )
                    out = []
            yield from out

    return process


def start_query(
    writer: DataStreamWriter, settings: Settings, stage: str, available_now: bool, *, timers: bool = False
) -> StreamingQuery:
    """Start `stage`'s query: drain what is there and stop (`available_now`), or every trigger
    interval (Settings.trigger_seconds(stage)).

    `timers`: the query holds processing-time state timeouts, so Trigger.AvailableNow would never
    end (progress.drained) and stopping it means interrupting a batch (its no-data batches run back
    to back). Such a query drains on its processing-time trigger instead and is stopped between
    batches after the first batch that finds the input drained.
    """
    guard_stopped_batches()  # before the first batch: a stop may come at any time
    trigger = f"{round(settings.trigger_seconds(stage) * 1000)} milliseconds"  # never 1e-05 seconds
    if not available_now:
        return writer.trigger(processingTime=trigger).start()
    if not timers:
        return writer.trigger(availableNow=True).start()
    query = writer.trigger(processingTime=trigger).start()
    threading.Thread(target=_stop_when_drained, args=(query,), name=f"drain-{query.name}", daemon=True).start()
    return query


def _stop_when_drained(query: StreamingQuery, poll: float = 0.05, grace: float = 60.0) -> None:
    seen = None
    while query.isActive:
        progress = query.lastProgress  # a dict (3.5), a dict-like StreamingQueryProgress (4.x)
        if progress is not None and not isinstance(progress, dict):
            progress = json.loads(progress.json)
        if progress and progress.get("batchId") != seen:
            seen = progress.get("batchId")
            if drained(progress):
                until = time.monotonic() + grace
                with suppress(Exception):  # it may have ended by itself meanwhile
                    while query.isActive and query.status.get("isTriggerActive") and time.monotonic() < until:
                        time.sleep(0.01)
                    query.stop()
                return
        time.sleep(poll)
