"""The notebooks' helpers on small static DataFrames (real Spark, no broker)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pyspark.sql import Row

from pipeline_lib.spark.dlq_report import dead_by, dead_per_hour, error_history, last_dead_task
from pipeline_lib.spark.health_report import (
    breaker_openings,
    health_now,
    latency_percentiles,
    outcome_over_time,
    over_time,
    retries_per_tier,
)

pytestmark = pytest.mark.integration


def ts(text):
    return datetime.fromisoformat(text)


@pytest.fixture
def dlq(spark):
    entry = {"stage": "download", "category": "http_transient", "http_status": 503, "message": "HTTP 503"}
    history = json.dumps(
        [{**entry, "at": "2026-11-27T10:00:00Z", "attempt": 0}, {**entry, "at": "2026-11-27T10:00:05Z", "attempt": 1}]
    )
    rows = [
        Row(
            dlq_id="d1",
            task_id="t1",
            category="exhausted",
            stage="download",
            host="a.example",
            http_status=503,
            attempts=2,
            failed_at=ts("2026-11-27 10:00:06"),
            status="open",
            error_history_json=history,
            source_topic="pending",
            source_partition=1,
            source_offset=9,
        ),
        Row(
            dlq_id="d2",
            task_id="t2",
            category="http_permanent",
            stage="download",
            host="a.example",
            http_status=404,
            attempts=1,
            failed_at=ts("2026-11-27 11:30:00"),
            status="open",
            error_history_json=None,
            source_topic="pending",
            source_partition=0,
            source_offset=3,
        ),
        Row(
            dlq_id="d3",
            task_id=None,
            category="malformed",
            stage="ingest",
            host=None,
            http_status=None,
            attempts=0,
            failed_at=ts("2026-11-27 11:45:00"),
            status="open",
            error_history_json=None,
            source_topic="raw",
            source_partition=0,
            source_offset=1,
        ),
    ]
    return spark.createDataFrame(rows)


def test_dead_letters_per_column_per_hour_and_the_last_dead_task(dlq):
    assert dead_by(dlq, "category")["count"].to_dict() == {"exhausted": 1, "http_permanent": 1, "malformed": 1}
    assert dead_by(dlq, "host", top=1)["count"].to_dict() == {"a.example": 2}
    assert dead_by(dlq, "host")["count"].to_dict() == {"a.example": 2, "(none)": 1}  # an ingest one has no host
    statuses = dead_by(dlq, "http_status")
    assert str(statuses.index.dtype) == "Int64" and 404 in statuses.index.dropna().tolist()  # 404, not 404.0
    hourly = dead_per_hour(dlq)
    assert list(hourly.columns) == ["exhausted", "http_permanent", "malformed"] and len(hourly) == 2
    assert hourly["malformed"].sum() == 1 and last_dead_task(dlq) == "t2"


def test_a_task_s_error_history_lists_each_attempt_and_where_its_source_sits(dlq):
    history = error_history(dlq, "t1")
    assert list(history["attempt"]) == [0, 1] and set(history["source"]) == {"pending/1/9"}


@pytest.fixture
def metrics(spark):
    def row(stage, at, lag, rate, outcomes, openings=0):
        return Row(
            stage=stage,
            batch_id=1,
            batch_time=ts(at),
            lag_max=lag,
            processed_rows_per_second=rate,
            input_rows_per_second=rate,
            duration_ms=500,
            outcomes=outcomes,
            breaker_openings=openings,
        )

    return spark.createDataFrame(
        [
            row("download", "2026-11-27 10:00:10", 5, 10.0, {"cached": 4, "retry": 2, "retry_5m": 2, "dead": 1}, 1),
            row("download", "2026-11-27 10:01:10", 0, 30.0, {"cached": 6, "retry": 1, "retry_10m": 1, "dead": 0}),
            row("results", "2026-11-27 10:00:40", 2, 50.0, {"results": 9}),
        ]
    )


def test_health_now_gives_each_stage_s_last_batch_age_and_lag(metrics):
    now = health_now(metrics, datetime(2026, 11, 27, 10, 2, 10, tzinfo=UTC))
    assert now.loc["download", "lag"] == 0 and now.loc["download", "age_seconds"] == 60
    assert now.loc["results", "age_seconds"] == 90


def test_rates_retries_per_tier_dead_letters_and_openings_over_time(metrics):
    assert over_time(metrics, "lag_max")["download"].tolist() == [5, 0]
    tiers = retries_per_tier(metrics)
    assert tiers.loc["download", "retry_5m"] == 2 and tiers.loc["download", "retry_10m"] == 1
    assert outcome_over_time(metrics, "dead")["download"].sum() == 1
    assert breaker_openings(metrics)["download"].sum() == 1


def test_latency_percentiles_from_the_event_s_produce_time_to_the_row_s_visibility(spark):
    rows = [
        Row(
            status="completed", event_produced_at=ts("2026-11-27 10:00:00"), recorded_at=ts(f"2026-11-27 10:00:{s:02d}")
        )
        for s in (2, 4, 6, 8, 40)
    ]
    rows.append(Row(status="dead", event_produced_at=ts("2026-11-27 10:00:00"), recorded_at=ts("2026-11-27 10:09:00")))
    latency = latency_percentiles(spark.createDataFrame(rows))
    (bucket,) = latency.itertuples()
    assert (bucket.p50, bucket.p99, bucket.tasks) == (6.0, 40.0, 5)


def test_events_per_hour_by_subtype_and_what_became_of_their_attachments(spark):
    from pipeline_lib.spark.ingest_report import attachment_outcomes, events_arrived

    def event(at, subtype, listed, tasks):
        return Row(kafka_timestamp=ts(at), ingested_at=ts(at), status_subtype=subtype,
                   attachment_count=listed, task_ids=[f"t{i}" for i in range(tasks)])  # fmt: skip

    events = spark.createDataFrame(
        [
            event("2026-11-27 10:05:00", "documentsReceived", 2, 2),
            event("2026-11-27 10:55:00", "documentsReceived", 3, 1),  # 2 refused by the URL policy
            event("2026-11-27 12:10:00", None, 0, 0),
        ]
    )
    hourly = events_arrived(events, "1 hour")
    assert list(hourly.columns) == ["(none)", "documentsReceived"] and len(hourly) == 2
    assert hourly["documentsReceived"].sum() == 2 and hourly["(none)"].sum() == 1
    assert len(events_arrived(events, "10 minutes")) == 3
    assert attachment_outcomes(events).to_dict() == {"listed": 5, "became tasks": 3, "refused": 2}
    assert attachment_outcomes(events.limit(0)).to_dict() == {"listed": 0, "became tasks": 0, "refused": 0}
