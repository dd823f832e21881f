"""The Delta writer for the pipeline's Delta sinks: explicit table creation (never a replace) and
writes that are idempotent per micro-batch from foreachBatch."""

from __future__ import annotations

from dataclasses import dataclass

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from pipeline_lib.logs import get_logger

log = get_logger("delta")


@dataclass(frozen=True)
class TableSpec:
    name: str
    path: str
    schema: StructType
    keys: tuple[str, ...]
    partition_by: tuple[str, ...] = ()


def create_table(spark: SparkSession, spec: TableSpec) -> None:
    """Create the table if it does not exist. Never replaces or alters an existing one."""
    if DeltaTable.isDeltaTable(spark, spec.path):
        return
    builder = DeltaTable.createIfNotExists(spark).location(spec.path).addColumns(spec.schema)
    if spec.partition_by:
        builder = builder.partitionedBy(*spec.partition_by)
    builder.execute()
    log.info("created Delta table %s at %s", spec.name, spec.path)


def require_table(spark: SparkSession, spec: TableSpec) -> DeltaTable:
    if not DeltaTable.isDeltaTable(spark, spec.path):
        # A write must never create (or, worse, overwrite) a table as a side effect of a failure.
        raise RuntimeError(
            f"Delta table {spec.name} does not exist at {spec.path}; create it with `xact-pipeline tables create`"
        )
    return DeltaTable.forPath(spark, spec.path)


def drop_duplicate_keys(df: DataFrame, keys: list[str]) -> DataFrame:
    """One row per key, at the cost of a hash count of the keys when there are no duplicates.

    `dropDuplicates` shuffles and sorts whole rows (wide JSON payloads here); duplicates within a
    micro-batch are rare, so find the duplicated keys first and dedupe only their rows.
    """
    dup_keys = df.groupBy(*keys).count().filter(F.col("count") > 1).select(*keys)
    if dup_keys.isEmpty():
        return df
    first = Window.partitionBy(*keys).orderBy(*keys)
    dup_rows = (
        df.join(dup_keys, keys, "left_semi")
        .withColumn("_n", F.row_number().over(first))
        .filter(F.col("_n") == 1)
        .drop("_n")
    )
    return df.join(dup_keys, keys, "left_anti").unionByName(dup_rows)


def append_once(df: DataFrame, spec: TableSpec, app_id: str, batch_id: int) -> None:
    """Append a micro-batch exactly once: Delta skips a (txnAppId, txnVersion) it has already committed.

    `app_id` must be unique per streaming checkpoint: a new checkpoint restarts batch ids at 0.
    """
    require_table(df.sparkSession, spec)
    (df.write.format("delta").mode("append").option("txnAppId", app_id).option("txnVersion", batch_id).save(spec.path))


def checkpoint_query_id(spark: SparkSession, checkpoint: str) -> str:
    """The streaming query id recorded in a checkpoint: stable across restarts, new with a new checkpoint."""
    metadata = spark.read.json(f"{checkpoint.rstrip('/')}/metadata").first()
    if metadata is None or not metadata["id"]:
        raise RuntimeError(
            f"checkpoint {checkpoint} has no query id in its metadata file; is it a streaming checkpoint?"
        )
    return str(metadata["id"])


def existing_keys(spark: SparkSession, spec: TableSpec, dates: list[str], date_column: str) -> DataFrame:
    """Keys already in the table, read only from the partitions named by `dates`."""
    table = require_table(spark, spec).toDF()
    return table.filter(table[date_column].isin(dates)).select(*spec.keys)
