"""The pinned stack: one place for every version the project depends on at run time.

pyspark and delta-spark are pinned in pyproject.toml; the JVM artifacts below must match them.
Delta's Maven artifact carries the Spark minor version (delta-spark_<spark>_<scala>).

Why Spark 4.2.0 (checked against Maven Central on 2026-11-27):
- 4.1.1's Kafka source throws a NullPointerException while reporting progress metrics under
  Trigger.AvailableNow (SPARK-55271 / SPARK-57438); the fix is in 4.1.3 and 4.2.0;
- 4.1.2 and 4.1.3 cannot be resolved: their spark-token-provider-kafka-0-10 dependency is not
  published on Maven Central;
- delta-spark 4.4.x supports Spark 4.0.1-4.2 (its pip package needs pyspark <= 4.2.0) and Maven
  Central serves io.delta:delta-spark_4.2_2.13:4.4.0 (4.4.1 is on PyPI only), so both use 4.4.0.
The job code uses only APIs that exist on Spark 3.5 and 4.x, so it runs in the Fabric and
Databricks runtimes' own sessions; this pin is the local/CI stack.
"""

from pipeline_lib.errors import PipelineError

SPARK_VERSION = "4.2.0"
SCALA_BINARY = "2.13"
DELTA_VERSION = "4.4.0"
KAFKA_VERSION = "4.1.1"

SPARK_KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{SPARK_VERSION}"
DELTA_PACKAGE = f"io.delta:delta-spark_{SPARK_VERSION.rsplit('.', 1)[0]}_{SCALA_BINARY}:{DELTA_VERSION}"
KAFKA_BROKER_ARTIFACT = ("org.apache.kafka", f"kafka_{SCALA_BINARY}", KAFKA_VERSION)

MIN_JAVA_MAJOR = 17


# The runtimes the users have, and the open-source jars that stand in for each locally and in CI
# (make test-compat): Spark minor -> (Scala binary, Delta version, Delta's Maven artifact).
# - 3.5: Fabric Runtime 1.3 (Delta 3.2), Databricks 15.4 and 16.4 LTS. Connector = pyspark's
#   version; 3.5.7 is the newest whose connector resolves on Maven Central.
# - 4.0: Databricks 17.3 LTS (its own Delta) and Fabric Runtime 2.0. Only 4.0.0's connector resolves
#   (spark-token-provider-kafka-0-10 4.0.1+ is not on Maven Central); Delta 4.0.0 pairs with it.
# - 4.2: the pinned local stack above.
RUNTIMES = {
    "3.5": ("2.12", "3.2.1", "io.delta:delta-spark_2.12:3.2.1"),
    "4.0": ("2.13", "4.0.0", "io.delta:delta-spark_2.13:4.0.0"),
    "4.2": (SCALA_BINARY, DELTA_VERSION, DELTA_PACKAGE),
}


class UnsupportedSpark(PipelineError, ValueError):
    """The installed pyspark is not one of the runtimes this project builds local sessions for."""


def packages_for(spark_version: str) -> tuple[str, str]:
    """(Kafka connector, Delta) Maven packages for a local session on this pyspark version."""
    minor = ".".join(spark_version.split(".")[:2])
    if minor not in RUNTIMES:
        raise UnsupportedSpark(
            f"pyspark {spark_version} is installed; local sessions support Spark {', '.join(RUNTIMES)} "
            f"(pyproject's [local] extra installs {SPARK_VERSION})"
        )
    scala, _, delta = RUNTIMES[minor]
    return f"org.apache.spark:spark-sql-kafka-0-10_{scala}:{spark_version}", delta
