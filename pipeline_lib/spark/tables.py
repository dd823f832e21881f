"""Every Delta table of the pipeline in one place: schema, spec, creation, reading, upkeep (the
writes of the stages are in spark/sinks.py).

| table            | one row per                        | partitioned by | written by                          |
| ---------------- | ---------------------------------- | -------------- | ----------------------------------- |
| xact_events      | claim event delivery (revision)    | event_date     | ingest (append once)                |
| xact_attachments | download task (its latest outcome) | event_date     | results (MERGE)                     |
| xact_dlq         | dead letter                        | failed_date    | dlq-table (insert-only MERGE);      |
|                  |                                    |                | replay and resolve update status    |
| xact_pipeline_metrics | micro-batch of a query        | batch_date     | every job (buffered appends)        |

Tables are created explicitly (`xact-pipeline tables create`, or by a job at start), never as a
side effect of a write: a write to a missing table raises TableMissing, which names the command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import (
    ArrayType,
    DataType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from pipeline_lib.config import Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.events import DERIVED_COLUMNS, EVENT_FIELDS
from pipeline_lib.logs import get_logger
from pipeline_lib.table_rows import ATTACHMENT_COLUMNS, DLQ_TABLE_COLUMNS, TableColumn

log = get_logger("tables")

# Delta's optimistic-concurrency failures: the commit lost to another writer and may be tried
# again. Matched by class name along the MRO: delta-spark raises its `captured` classes, which do
# not derive from the ones `delta.exceptions` exports under the same names.
COMMIT_CONFLICTS = frozenset(
    {
        "ConcurrentAppendException",
        "ConcurrentDeleteReadException",
        "ConcurrentDeleteDeleteException",
        "ConcurrentWriteException",
        "ConcurrentTransactionException",
        "MetadataChangedException",
        "ProtocolChangedException",
    }
)


def is_commit_conflict(exc: BaseException) -> bool:
    return any(cls.__name__ in COMMIT_CONFLICTS for cls in type(exc).__mro__)


def retry_on_conflict(commit, what: str, attempts: int = 5) -> None:
    """Run `commit()` (one idempotent Delta write whose conditions are re-checked each time) and
    try it again, with a growing pause, when it lost to a concurrent writer."""
    for attempt in range(attempts):
        try:
            commit()
            return
        except Exception as exc:
            if not is_commit_conflict(exc) or attempt + 1 == attempts:
                raise
            log.info("%s: commit conflicted with another writer (%s); trying again", what, type(exc).__name__)
            time.sleep(0.5 * (attempt + 1))


class TableMissing(PipelineError):
    """A job or a command needs a Delta table that has not been created."""


_TYPES: dict[str, DataType] = {
    "string": StringType(),
    "timestamp": TimestampType(),
    "date": DateType(),
    "int": IntegerType(),
    "long": LongType(),
    "array<string>": ArrayType(StringType()),
}

# xact_events: the flattened event fields (events.EVENT_FIELDS, the one schema definition), then
# the columns ingest derives.
EVENTS_SCHEMA = StructType(
    [StructField(f.column, _TYPES[f.type], nullable=not f.required) for f in EVENT_FIELDS]
    + [
        StructField(name, _TYPES[kind], nullable=name not in ("event_id", "event_date"))
        for name, kind in DERIVED_COLUMNS
    ]
)


def _schema(columns: tuple[TableColumn, ...]) -> StructType:
    return StructType([StructField(c.name, _TYPES[c.type], nullable=not c.required) for c in columns])


# xact_attachments and xact_dlq: their columns are declared once, in table_rows.py, beside the
# per-record functions that fill them.
ATTACHMENTS_SCHEMA = _schema(ATTACHMENT_COLUMNS)
DLQ_SCHEMA = _schema(DLQ_TABLE_COLUMNS)


# xact_pipeline_metrics: one row per micro-batch of every query (pipeline_lib.metrics).
METRICS_SCHEMA = StructType(
    [
        StructField("stage", StringType(), False),
        StructField("query_id", StringType()),
        StructField("run_id", StringType()),
        StructField("batch_id", LongType()),
        StructField("batch_time", TimestampType()),
        StructField("batch_date", StringType()),  # partition: YYYY-MM-DD of batch_time
        StructField("input_rows", LongType()),
        StructField("input_rows_per_second", DoubleType()),
        StructField("processed_rows_per_second", DoubleType()),
        StructField("duration_ms", LongType()),  # the whole trigger
        StructField("durations_ms", MapType(StringType(), LongType())),  # Spark's breakdown (addBatch, ...)
        StructField("lag_max", LongType()),  # offsets behind the latest, over the source's partitions
        StructField("lag_avg", DoubleType()),
        StructField("outcomes", MapType(StringType(), LongType())),  # the stage's counts: cached, retry, dead, ...
        StructField("bytes", LongType()),
        StructField("breaker_openings", LongType()),
        StructField("refetches", LongType()),
        StructField("worker_peak_rss_bytes", LongType()),
        StructField("max_lateness_ms", LongType()),  # retry scheduler: forwarded at - due
        StructField("recorded_at", TimestampType()),
    ]
)


@dataclass(frozen=True)
class TableSpec:
    name: str
    path: str
    schema: StructType
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()


def events_table(settings: Settings) -> TableSpec:
    return TableSpec(
        "xact_events", settings.table_path("events"), EVENTS_SCHEMA, ("event_id", "revision"), ("event_date",)
    )


def attachments_table(settings: Settings) -> TableSpec:
    return TableSpec(
        "xact_attachments", settings.table_path("attachments"), ATTACHMENTS_SCHEMA, ("task_id",), ("event_date",)
    )


def dlq_table(settings: Settings) -> TableSpec:
    return TableSpec("xact_dlq", settings.table_path("dlq"), DLQ_SCHEMA, ("dlq_id",), ("failed_date",))


def metrics_table(settings: Settings) -> TableSpec:
    return TableSpec(
        "xact_pipeline_metrics",
        settings.table_path("metrics"),
        METRICS_SCHEMA,
        ("stage", "run_id", "batch_id"),
        ("batch_date",),
    )


def all_tables(settings: Settings) -> list[TableSpec]:
    return [events_table(settings), attachments_table(settings), dlq_table(settings), metrics_table(settings)]


# --- creation and upkeep ------------------------------------------------------------------------


def create_table(spark: SparkSession, spec: TableSpec) -> None:
    """Create the table if it does not exist; add the columns a newer version of the schema has.

    Never replaces a table, drops or changes a column: an upgrade only adds nullable columns
    (rows written before the upgrade read them as null).
    """
    if DeltaTable.isDeltaTable(spark, spec.path):
        _add_missing_columns(spark, spec)
        return
    _clear_interrupted_create(spark, spec)
    builder = DeltaTable.createIfNotExists(spark).location(spec.path).addColumns(spec.schema)
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    builder.execute()
    log.info("created Delta table %s at %s", spec.name, spec.path)


# A create killed after Delta made `_delta_log/` (with `_staged_commits/`) and before it wrote
# commit 0 leaves a log with no commit in it, and Delta then refuses to create the table there
# ("DELTA_TABLE_NOT_FOUND") for ever: a job killed at its start could never start again. Such a
# log holds no commit, no checkpoint and no staged commit, only directories and hidden temporary
# or checksum files, so removing it loses nothing. It is removed only once nothing in it changed
# for this long, so a create another job is running at this moment is left alone.
INTERRUPTED_CREATE_AGE_SECONDS = 30.0


def _clear_interrupted_create(spark: SparkSession, spec: TableSpec) -> None:
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    log_dir = jvm.org.apache.hadoop.fs.Path(spec.path.rstrip("/") + "/_delta_log")
    fs = log_dir.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    if not fs.exists(log_dir):
        return
    newest, pending = 0, [fs.getFileStatus(log_dir)]
    while pending:
        status = pending.pop()
        newest = max(newest, status.getModificationTime())
        if status.isDirectory():
            pending.extend(fs.listStatus(status.getPath()))
        elif not status.getPath().getName().startswith("."):
            return  # a commit, checkpoint or staged commit: a table (or its start) lives here
    age = time.time() - newest / 1000
    if age < INTERRUPTED_CREATE_AGE_SECONDS:
        raise PipelineError(
            f"Delta table {spec.name} at {spec.path}: its _delta_log holds no commit yet (a create "
            f"is running, or one was interrupted {age:.0f}s ago); an interrupted create is cleared "
            f"once it is {INTERRUPTED_CREATE_AGE_SECONDS:.0f}s old, so try again then"
        )
    fs.delete(log_dir, True)
    log.warning(
        "%s: removed the _delta_log an interrupted create left at %s (no commit in it, unchanged for %.0fs)",
        spec.name,
        spec.path,
        age,
    )


def _add_missing_columns(spark: SparkSession, spec: TableSpec) -> None:
    existing = {f.name for f in DeltaTable.forPath(spark, spec.path).toDF().schema}
    missing = [f for f in spec.schema if f.name not in existing]
    if not missing:
        return
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
    spark.sql(f"ALTER TABLE delta.`{spec.path}` ADD COLUMNS ({columns})")
    log.info("%s: added column(s) %s (rows written before read them as null)", spec.name, columns)


def create_tables(spark: SparkSession, settings: Settings) -> None:
    """Create every pipeline table that does not exist yet."""
    for spec in all_tables(settings):
        create_table(spark, spec)
        log.info("table %s ready at %s", spec.name, spec.path)


def read_table(spark: SparkSession, settings: Settings, name: str) -> DataFrame:
    """The one way to read a pipeline table: by its name (`xact_dlq` or `dlq`, `attachments`,
    `events`, `metrics`, or the full name of each). A table not created yet is TableMissing."""
    wanted = name if name.startswith("xact_") else f"xact_{name}"
    for spec in all_tables(settings):
        if spec.name in (name, wanted, wanted.replace("xact_", "xact_pipeline_", 1)):
            return require_table(spark, spec).toDF()
    names = ", ".join(spec.name for spec in all_tables(settings))
    raise PipelineError(f"no table named {name!r}; choose from {names}")


def table_or_none(spark: SparkSession, settings: Settings, name: str) -> DataFrame | None:
    """read_table, or None where the table has not been created (a notebook shows what there is)."""
    try:
        return read_table(spark, settings, name)
    except TableMissing:
        return None


def require_table(spark: SparkSession, spec: TableSpec) -> DeltaTable:
    if not DeltaTable.isDeltaTable(spark, spec.path):
        # A write must never create (or, worse, overwrite) a table as a side effect of a failure.
        raise TableMissing(
            f"Delta table {spec.name} does not exist at {spec.path}; create it with `xact-pipeline tables create`"
        )
    return DeltaTable.forPath(spark, spec.path)


def maintain_tables(spark: SparkSession, specs: list[TableSpec], retain_hours: int) -> None:
    """OPTIMIZE (compaction) then VACUUM each existing table; missing tables are skipped with a note."""
    for spec in specs:
        if not DeltaTable.isDeltaTable(spark, spec.path):
            log.info("%s: no table at %s, skipped", spec.name, spec.path)
            continue
        table = DeltaTable.forPath(spark, spec.path)
        metrics = table.optimize().executeCompaction().first()
        table.vacuum(retain_hours)
        log.info(
            "%s: optimized (%s) and vacuumed (retain %d h)", spec.name, metrics and metrics["metrics"], retain_hours
        )
