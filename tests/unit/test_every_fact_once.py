"""Every fact once: table columns are declared once (table_rows.py) and the Delta schemas derive
from them, the way xact_events derives from events.EVENT_FIELDS; stage names are listed once
(config.Stage), and so are the topics each stage reads (Settings.stage_inputs)."""

from __future__ import annotations

from pipeline_lib.config import STAGES, Stage
from pipeline_lib.spark.tables import ATTACHMENTS_SCHEMA, DLQ_SCHEMA
from pipeline_lib.table_rows import (
    ATTACHMENT_COLUMNS,
    DLQ_COLUMNS,
    DLQ_TABLE_COLUMNS,
    DLQ_TIMESTAMPS,
    RESULT_COLUMNS,
    RESULT_TIMESTAMPS,
)


def test_the_table_schemas_are_the_declared_columns_in_order():
    for schema, columns in ((ATTACHMENTS_SCHEMA, ATTACHMENT_COLUMNS), (DLQ_SCHEMA, DLQ_TABLE_COLUMNS)):
        assert [(f.name, f.nullable) for f in schema] == [(c.name, not c.required) for c in columns]
        assert len({c.name for c in columns}) == len(columns)


def test_the_per_record_rows_are_the_table_columns_spark_does_not_stamp():
    assert RESULT_COLUMNS == tuple(f.name for f in ATTACHMENTS_SCHEMA if f.name != "recorded_at")
    assert set(RESULT_TIMESTAMPS) <= set(RESULT_COLUMNS) and "created_at" in RESULT_TIMESTAMPS
    stamped = {
        "status",
        "note",
        "replay_id",
        "replayed_at",
        "replay_selection",
        "replay_count",
        "resolved_at",
        "first_seen_at",
        "updated_at",
    }
    assert DLQ_COLUMNS == tuple(f.name for f in DLQ_SCHEMA if f.name not in stamped)
    assert DLQ_TIMESTAMPS == ("failed_at", "source_timestamp")


def test_stage_names_are_one_list():
    assert STAGES == tuple(stage.value for stage in Stage)
    assert Stage.RETRY_SCHEDULER == "retry-scheduler" and f"{Stage.DLQ_TABLE}" == "dlq-table"


def test_each_stage_reads_its_inputs_from_one_place_and_they_are_among_its_topics():
    from pipeline_lib.config import load_settings

    settings = load_settings("local")
    read = {stage: settings.stage_inputs(stage) for stage in STAGES}
    assert read[Stage.RETRY_SCHEDULER] == list(settings.retry_topics)
    assert read[Stage.DOWNLOAD] == [settings.topics.pending.name]
    for stage, topics in read.items():
        assert topics and set(topics) <= set(settings.stage_topics(stage)), stage
    assert set(settings.stage_topics("anything else")) == set(settings.topic_partitions())
