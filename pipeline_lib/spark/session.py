"""Composable SparkSession builder steps, each taking and returning a `SparkSession.Builder`.

    builder = with_local_defaults(SparkSession.builder.master("local[2]"))
    spark = with_delta(with_kafka(builder)).getOrCreate()

On Fabric or Databricks the platform's session (which already has Delta and Kafka) is used as is:
`session_for(settings)` only builds a session when `spark.master` is set (the local overlay).
"""

from __future__ import annotations

import os
import sys
import threading

import pyspark
from pyspark.sql import SparkSession

from pipeline_lib.config import Settings
from pipeline_lib.logs import StopNoiseFilter, get_logger
from pipeline_lib.spark.jvm import cache_root, check_java, spark_package_jars
from pipeline_lib.versions import packages_for

log = get_logger("session")


def _add_jars(builder: SparkSession.Builder, packages: list[str]) -> SparkSession.Builder:
    """Add Maven packages as local jars: resolved once into the cache, then read from disk.

    Equivalent to `spark.jars.packages`, without Spark resolving (and printing a report) at every
    session start; `spark.jars` is one comma-separated conf, so the steps merge and compose.
    """
    jars = [str(j) for j in spark_package_jars(packages)]
    current = builder._options.get("spark.jars", "")  # the builder has no public getter
    merged = [j for j in current.split(",") if j]
    merged += [j for j in jars if j not in merged]
    return builder.config("spark.jars", ",".join(merged))


def with_kafka(builder: SparkSession.Builder) -> SparkSession.Builder:
    """Add the Kafka source/sink connector matching the installed pyspark (versions.RUNTIMES)."""
    return _add_jars(builder, [packages_for(pyspark.__version__)[0]])


def with_delta(builder: SparkSession.Builder) -> SparkSession.Builder:
    """Add Delta Lake matching the installed pyspark: its jars, SQL extensions and catalog."""
    return (
        _add_jars(builder, [packages_for(pyspark.__version__)[1]])
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
    )


def _merge_java_options(builder: SparkSession.Builder, key: str, option: str) -> SparkSession.Builder:
    current = builder._options.get(key, "")  # the builder has no public getter
    return builder if option in current else builder.config(key, f"{current} {option}".strip())


def with_spark_log_level(builder: SparkSession.Builder, level: str = "ERROR") -> SparkSession.Builder:
    """Spark's JVM logs at `level` from its first line on (log4j2), so a person sees the pipeline's lines.

    `setLogLevel` alone comes too late: the JVM prints its start-up warnings (a loopback host
    name, the default log4j profile) before a session exists. The config goes to the driver and
    to executors (a standalone cluster's workers are JVMs of their own).
    """
    config = cache_root() / f"spark-log4j2-{level.lower()}.properties"
    text = (
        "status = error\n"
        "appender.console.type = Console\n"
        "appender.console.name = console\n"
        "appender.console.target = SYSTEM_ERR\n"
        "appender.console.layout.type = PatternLayout\n"
        "appender.console.layout.pattern = %d{HH:mm:ss} %-5p %c{1}: %m%n\n"
        f"rootLogger.level = {level.lower()}\n"
        "rootLogger.appenderRef.console.ref = console\n"
    )
    if level == "ERROR":
        # A failed query's JVM stack trace: the supervisor reports the failure in one line and
        # restarts the query; --verbose (WARN) shows the stack again.
        text += "logger.streaming.name = org.apache.spark.sql.execution.streaming\nlogger.streaming.level = fatal\n"
    if not config.is_file() or config.read_text() != text:
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(text)
    option = f"-Dlog4j2.configurationFile=file:{config}"
    for key in ("spark.driver.extraJavaOptions", "spark.executor.extraJavaOptions"):
        builder = _merge_java_options(builder, key, option)
    return builder


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
        # The Python workers' glibc malloc arenas (default 8 per core) keep freed 1 MiB read
        # buffers per download thread: 2 arenas hold 7-9 MiB less (benchmarks/download_throughput.py).
        .config("spark.executorEnv.MALLOC_ARENA_MAX", "2")
        # One application may run every stage's query (xact-pipeline run): FAIR pools, one per
        # query (spark.supervisor), so a long download batch cannot starve the others.
        .config("spark.scheduler.mode", "FAIR")
    )


def session_for(settings: Settings) -> SparkSession:
    """The session a job runs in: the platform's when `spark.master` is unset, else a local one."""
    spark_conf = settings.spark
    if spark_conf.master is None:
        active = SparkSession.getActiveSession()
        spark = active if active is not None else SparkSession.builder.appName(spark_conf.app_name).getOrCreate()
        return with_option_redaction(spark)
    check_java()
    # Python workers must run the interpreter that has this package and its dependencies;
    # pyspark reads this variable (not a conf) when it starts the context.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")  # the driver binds to loopback (with_local_defaults)
    builder = SparkSession.builder.master(spark_conf.master).appName(spark_conf.app_name)
    builder = with_local_defaults(builder, spark_conf.shuffle_partitions)
    builder = with_delta(with_kafka(with_spark_log_level(builder, settings.logging.spark_level)))
    for key, value in spark_conf.extra_conf.items():
        builder = builder.config(key, value)
    spark = start_filtering_jvm_stderr(builder) if settings.logging.spark_level == "ERROR" else builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.logging.spark_level)
    return with_option_redaction(spark)


# Spark masks data source options whose names match this in plans, the UI and event logs (its
# default is `(?i)url`): the Kafka JAAS config carries the Event Hubs connection string or client secret.
OPTION_REDACTION = "(?i)url|jaas|password|secret|token"


def with_option_redaction(spark: SparkSession) -> SparkSession:
    """Make sure no Kafka secret shows in a plan, the Spark UI or an event log (a runtime SQL conf).

    Some platform sessions refuse to set confs (serverless, shared access): the Kafka client still
    hides sasl.jaas.config in its own logs, so a refusal is logged, not raised."""
    try:
        spark.conf.set("spark.sql.redaction.options.regex", OPTION_REDACTION)
    except Exception as exc:  # noqa: BLE001 - a refused conf must not stop a job or a notebook
        log.warning(
            "could not set spark.sql.redaction.options.regex (%s): plans may show Kafka options", type(exc).__name__
        )
    return spark


# Lines the JVM prints to stderr itself (System.err, not a logger), so no log level turns them off.
JVM_NOISE = (
    "WARNING: Using incubator modules:",  # the JDK, for Spark 4's --add-modules jdk.incubator.vector
    'Setting default log level to "',  # Spark treats a PySpark session like a REPL
    "To adjust logging level use sc.setLogLevel(",
)


def start_filtering_jvm_stderr(builder: SparkSession.Builder, noise: tuple[str, ...] = JVM_NOISE) -> SparkSession:
    """getOrCreate, with the JVM's stderr passed through a filter that drops `noise` lines.

    The JVM (and the Python workers it starts) inherit stderr when the session starts the
    gateway, so for that moment fd 2 is a pipe whose reader forwards every other line to the
    real stderr (logs.StopNoiseFilter, which also drops the trace pyspark's worker daemon prints
    when a stop closes a task's socket). A session whose JVM already runs is returned as is.
    """
    from pyspark import SparkContext

    if SparkContext._gateway is not None:  # the JVM already runs: nothing to start
        return builder.getOrCreate()
    read_fd, write_fd = os.pipe()
    real_stderr = os.dup(2)
    threading.Thread(target=_forward_lines, args=(read_fd, real_stderr, noise), name="jvm-stderr", daemon=True).start()
    sys.stderr.flush()
    os.dup2(write_fd, 2)
    try:
        return builder.getOrCreate()
    finally:
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        os.close(write_fd)


def _forward_lines(read_fd: int, out_fd: int, noise: tuple[str, ...]) -> None:
    lines = StopNoiseFilter(noise)
    with os.fdopen(read_fd, "rb", buffering=0) as source, os.fdopen(out_fd, "wb", buffering=0) as out:
        for line in iter(source.readline, b""):
            for kept in lines.feed(line.decode("utf-8", "replace")):
                out.write(kept.encode("utf-8"))
        for kept in lines.flush():
            out.write(kept.encode("utf-8"))
