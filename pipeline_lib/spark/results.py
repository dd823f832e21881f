"""Results: xact.downloads.results -> xact_attachments, exactly one row per task.

    source (Kafka results) -> parse_results -> foreachBatch:
        1. malformed results -> xact.downloads.dlq (stage `results`, with provenance)
        2. latest outcome per task in the batch -> MERGE into xact_attachments

Which outcome wins: the latest by (attempt, occurred_at). A late message of an older attempt never
overwrites a newer outcome; it can only move `first_seen_at` earlier. The MERGE is idempotent by
construction (re-applying a batch changes nothing) and also carries the micro-batch as Delta's
txnAppId/txnVersion, so a batch replayed after a crash between the Delta commit and the
checkpoint commit is skipped without touching the table.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipeline_lib.config import Settings
from pipeline_lib.contracts import AttachmentResult
from pipeline_lib.kafka_options import kafka_sink_options
from pipeline_lib.logs import get_logger
from pipeline_lib.routing import malformed_input, pending_records
from pipeline_lib.spark.kafka_io import (
    KAFKA_ROW_SCHEMA,
    arrow_batch,
    arrow_schema,
    kafka_records,
    kafka_row,
    read_topics,
    record_columns,
)
from pipeline_lib.spark.progress import install_progress_listener, start_query
from pipeline_lib.spark.tables import (
    ATTACHMENTS_SCHEMA,
    TableSpec,
    attachments_table,
    checkpoint_query_id,
    create_table,
    require_table,
)

if TYPE_CHECKING:
    import pyarrow as pa

log = get_logger("results")
JOB_NAME = "results"
STAGE = "results"
OUTCOME_COLUMNS = [f.name for f in ATTACHMENTS_SCHEMA if f.name not in ("task_id", "first_seen_at", "event_date")]


def message_schema(cls: type) -> StructType:
    """The Spark schema of a contracts.Message body, from its dataclass fields (for from_json)."""
    kinds = {"str": StringType(), "int": LongType()}
    out = []
    for f in fields(cls):
        annotation = str(f.type)
        base = annotation.split("|")[0].strip()
        if base not in kinds:
            raise TypeError(f"{cls.__name__}.{f.name}: no Spark type for {annotation!r}")
        out.append(StructField(f.name, kinds[base], nullable="None" in annotation))
    return StructType(out)


def parse_results(raw: DataFrame) -> DataFrame:
    """Kafka rows -> typed result rows plus `_malformed` (a reason, or null) and the source coordinates."""
    body = F.from_json(F.col("value").cast("string"), message_schema(AttachmentResult))
    schema_tag = F.get_json_object(F.col("value").cast("string"), "$.schema")
    parsed = record_columns(raw).select(
        body.alias("r"), schema_tag.alias("_schema"), "key", "value", "topic", "partition", "offset", "timestamp_ms"
    )
    r = F.col("r")
    # try_: Spark 4 runs in ANSI mode, where a bad value would fail the whole query.
    ts = lambda name: F.try_to_timestamp(r[name])  # noqa: E731 - local shorthand
    other_schema = F.concat(
        F.lit("expected schema attachment_result, got "), F.coalesce(F.col("_schema"), F.lit("none"))
    )
    missing_ids = r["task_id"].isNull() | r["trace_id"].isNull()
    missing_outcome = r["status"].isNull() | r["stage"].isNull() | r["attempt"].isNull()
    malformed = (
        F.when(F.col("_schema").isNull(), F.lit("the message is not a JSON object with a schema field"))
        .when(F.col("_schema") != F.lit(AttachmentResult.KIND), other_schema)
        .when(missing_ids, F.lit("required field task_id or trace_id is missing"))
        .when(missing_outcome, F.lit("required field status, stage or attempt is missing"))
        .when(ts("occurred_at").isNull(), F.lit("field occurred_at must be an ISO 8601 date-time"))
        .when(F.to_date(ts("event_date")).isNull(), F.lit("field event_date must be YYYY-MM-DD"))
    )  # fmt: skip
    return parsed.select(
        r["task_id"].alias("task_id"),
        r["trace_id"].alias("trace_id"),
        r["attachment_url"].alias("attachment_url"),
        r["blob_path"].alias("blob_path"),
        F.nullif(F.lower(F.regexp_extract(r["blob_path"], r"\.([A-Za-z0-9]{1,10})$", 1)), F.lit("")).alias("file_type"),
        r["status_subtype"].alias("status_subtype"),
        r["assignment_id"].alias("assignment_id"),
        r["bytes"].alias("bytes"),
        r["sha256"].alias("sha256"),
        r["content_type"].alias("content_type"),
        r["status"].alias("status"),
        r["stage"].alias("stage"),
        r["http_status"].cast("int").alias("http_status"),
        r["attempt"].cast("int").alias("attempt"),
        (r["attempt"] + 1).cast("int").alias("attempts"),
        r["error_category"].alias("error_category"),
        r["error_message"].alias("error_message"),
        ts("created_at").alias("created_at"),
        ts("downloaded_at").alias("downloaded_at"),
        ts("uploaded_at").alias("uploaded_at"),
        ts("occurred_at").alias("first_seen_at"),
        ts("occurred_at").alias("updated_at"),
        F.to_date(ts("event_date")).alias("event_date"),
        malformed.alias("_malformed"),
        "key", "value", "topic", "partition", "offset", "timestamp_ms",
    )  # fmt: skip


def latest_per_task(results: DataFrame) -> DataFrame:
    """One row per task: the latest outcome by (attempt, updated_at), with the earliest first_seen_at."""
    order = Window.partitionBy("task_id").orderBy(F.col("attempt").desc(), F.col("updated_at").desc(), F.col("status"))
    everything = Window.partitionBy("task_id")
    return (
        results.withColumn("_first", F.min("first_seen_at").over(everything))
        .withColumn("_n", F.row_number().over(order))
        .filter(F.col("_n") == 1)
        .withColumn("first_seen_at", F.col("_first"))
        .select(*ATTACHMENTS_SCHEMA.fieldNames())
    )


def merge_results(latest: DataFrame, spec: TableSpec, app_id: str | None = None, batch_id: int | None = None) -> None:
    """MERGE latest outcomes: newer wins, older only moves first_seen_at earlier, new tasks insert."""
    spark = latest.sparkSession
    table = require_table(spark, spec)
    newer = "s.attempt > t.attempt OR (s.attempt = t.attempt AND s.updated_at > t.updated_at)"
    updates: dict[str, str | Column] = {c: f"s.`{c}`" for c in OUTCOME_COLUMNS}
    updates["first_seen_at"] = "least(t.first_seen_at, s.first_seen_at)"
    merge = (
        table.alias("t")
        .merge(latest.alias("s"), "t.event_date = s.event_date AND t.task_id = s.task_id")
        .whenMatchedUpdate(condition=newer, set=updates)
        .whenMatchedUpdate(condition="s.first_seen_at < t.first_seen_at", set={"first_seen_at": "s.first_seen_at"})
        .whenNotMatchedInsertAll()
    )
    if app_id is None or batch_id is None:
        merge.execute()
        return
    # MERGE has no writer options: Delta reads the transaction identity from these session confs.
    conf = spark.conf
    conf.set("spark.databricks.delta.write.txnAppId", app_id)
    conf.set("spark.databricks.delta.write.txnVersion", str(batch_id))
    try:
        merge.execute()
    finally:
        conf.unset("spark.databricks.delta.write.txnAppId")
        conf.unset("spark.databricks.delta.write.txnVersion")


def _dead_letters(dlq_topic: str):
    out_schema = arrow_schema(KAFKA_ROW_SCHEMA)

    def to_dead(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        now = datetime.now(UTC)
        for batch in batches:
            columns = batch.to_pydict()
            rows = [
                kafka_row(malformed_input(STAGE, str(reason), record.value, record.source, None, now, dlq_topic))
                for reason, record in zip(columns["_malformed"], pending_records(columns))  # noqa: B905
            ]
            yield arrow_batch(rows, out_schema)

    return to_dead


class ResultsBatchWriter:
    """foreachBatch handler: dead-letter malformed results, MERGE the rest exactly once per batch."""

    def __init__(self, settings: Settings, app_id: str | None = None) -> None:
        self.table = attachments_table(settings)
        self.kafka_options = kafka_sink_options(settings.kafka)
        self.dlq_topic = settings.topics.dlq.name
        self.checkpoint = settings.checkpoint(JOB_NAME)
        self.app_id = app_id

    def __call__(self, parsed: DataFrame, batch_id: int) -> None:
        if self.app_id is None:
            self.app_id = f"{JOB_NAME}-{checkpoint_query_id(parsed.sparkSession, self.checkpoint)}"
        batch = parsed.persist()
        try:
            bad = batch.filter(F.col("_malformed").isNotNull())
            if not bad.isEmpty():
                dead = bad.select("_malformed", "key", "value", "topic", "partition", "offset", "timestamp_ms")
                routed = dead.mapInArrow(_dead_letters(self.dlq_topic), KAFKA_ROW_SCHEMA)
                kafka_records(routed).write.format("kafka").options(**self.kafka_options).save()
            good = batch.filter(F.col("_malformed").isNull())
            merge_results(latest_per_task(good), self.table, self.app_id, batch_id)
        finally:
            batch.unpersist()


def run_results(spark: SparkSession, settings: Settings, *, available_now: bool = False) -> StreamingQuery:
    """Start the results query; with `available_now`, it processes what is there and stops."""
    create_table(spark, attachments_table(settings))
    install_progress_listener(spark)
    parsed = parse_results(read_topics(spark, settings, [settings.topics.results.name])).observe(
        JOB_NAME,
        F.count(F.when(F.col("_malformed").isNull(), 1)).alias("results"),
        F.count(F.when(F.col("_malformed").isNotNull(), 1)).alias("dead_letters"),
    )
    writer = parsed.writeStream.queryName(JOB_NAME).foreachBatch(ResultsBatchWriter(settings))
    writer = writer.option("checkpointLocation", settings.checkpoint(JOB_NAME))
    return start_query(writer, settings, available_now)


def main(argv: Sequence[str] | None = None) -> int:
    """Console script `xact-results` and jobs/results.py: load settings, get the session, run the results job."""
    from pipeline_lib.spark.runner import job_main

    return job_main(JOB_NAME, argv)
