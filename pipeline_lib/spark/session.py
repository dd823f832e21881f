"""Composable SparkSession builder steps, each taking and returning a `SparkSession.Builder`.

    builder = with_local_defaults(SparkSession.builder.master("local[2]"))
    spark = with_delta(with_kafka(builder)).getOrCreate()

On Fabric or Databricks the platform's session (which already has Delta and Kafka) is used as is:
`session_for(settings)` only builds a session when `spark.master` is set (the local overlay).
"""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from pipeline_lib.config import Settings
from pipeline_lib.jvm import check_java, spark_package_jars
from pipeline_lib.versions import DELTA_PACKAGE, SPARK_KAFKA_PACKAGE


def _add_jars(builder: SparkSession.Builder, packages: list[str]) -> SparkSession.Builder:
    """Add Maven packages as local jars: resolved once into the cache, then read from disk.

    Equivalent to `spark.jars.packages`, without Spark resolving (and printing a report) at every
    session start; `spark.jars` is one comma-separated conf, so the steps merge and compose.
    """
    jars = [str(j) for j in spark_package_jars(packages)]
    current = builder._options.get("spark.jars", "")  # noqa: SLF001 - the builder has no public getter
    merged = [j for j in current.split(",") if j]
    merged += [j for j in jars if j not in merged]
    return builder.config("spark.jars", ",".join(merged))


def with_kafka(builder: SparkSession.Builder) -> SparkSession.Builder:
    """Add the Kafka source/sink connector."""
    return _add_jars(builder, [SPARK_KAFKA_PACKAGE])


def with_delta(builder: SparkSession.Builder) -> SparkSession.Builder:
    """Add Delta Lake: its jars, SQL extensions and catalog."""
    return (
        _add_jars(builder, [DELTA_PACKAGE])
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    )


def with_local_defaults(builder: SparkSession.Builder, shuffle_partitions: int = 4) -> SparkSession.Builder:
    """Laptop/CI settings: UI off, few shuffle partitions, loopback only, UTC, small memory."""
    return (
        builder.config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(shuffle_partitions))
        .config("spark.default.parallelism", str(shuffle_partitions))
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.streaming.forceDeleteTempCheckpointLocation", "true")
        .config("spark.databricks.delta.snapshotPartitions", "2")
        .config("spark.python.worker.reuse", "true")
    )


def session_for(settings: Settings) -> SparkSession:
    """The session a job runs in: the platform's when `spark.master` is unset, else a local one."""
    spark_conf = settings.spark
    if spark_conf.master is None:
        active = SparkSession.getActiveSession()
        return active if active is not None else SparkSession.builder.appName(spark_conf.app_name).getOrCreate()
    check_java()
    # Python workers must run the interpreter that has this package and its dependencies;
    # pyspark reads this variable (not a conf) when it starts the context.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = SparkSession.builder.master(spark_conf.master).appName(spark_conf.app_name)
    builder = with_delta(with_kafka(with_local_defaults(builder, spark_conf.shuffle_partitions)))
    for key, value in spark_conf.extra_conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark
