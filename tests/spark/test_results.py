"""The results job's transforms and Delta writes (chispa, real Spark and Delta)."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from delta.tables import DeltaTable
from hypothesis import HealthCheck, Phase, assume, example, given, settings
from hypothesis import strategies as st
from pyspark.sql import Row

from pipeline_lib.contracts import AttachmentResult
from pipeline_lib.spark.results import parse_results
from pipeline_lib.spark.sinks import batch_facts, latest_per_task, merge_results, result_rows
from pipeline_lib.spark.tables import ATTACHMENTS_SCHEMA, TableMissing, attachments_table, create_table

pytestmark = pytest.mark.integration


T1, T2 = "1" * 32, "2" * 32


def result(task=T1, attempt=0, status="retrying", at="2026-11-27T10:00:00Z", **kw) -> str:
    fields = dict(
        task_id=task,
        trace_id="T1",
        attempt=attempt,
        stage="download",
        status=status,
        occurred_at=at,
        event_date="2026-11-20",
        attachment_url="https://h/c/a.PDF?X-Amz-Signature=SECRET",
        blob_path="documentsReceived/A1/T1/A1_a_0123456789.PDF",
        created_at="2026-11-27T09:59:00Z",
    )
    fields.update(kw)
    return AttachmentResult(**fields).encode()


def kafka_df(spark, values):
    rows = [
        Row(key=b"T1", value=v.encode(), topic="results", partition=0, offset=i, timestamp=datetime(2026, 11, 27, 12))
        for i, v in enumerate(values)
    ]
    schema = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"
    return spark.createDataFrame(rows, schema)


def good_rows(spark, values):
    return result_rows(parse_results(kafka_df(spark, values), "dlq"))


def table_rows(spark, spec):
    return spark.read.format("delta").load(spec.path)


@pytest.fixture
def spec(spark, make_settings):
    spec = attachments_table(make_settings())
    create_table(spark, spec)
    return spec


def test_parse_dead_letters_unreadable_results_with_a_reason_and_provenance(spark):
    parsed = parse_results(
        kafka_df(
            spark,
            [
                result(),
                "not json",
                '{"schema": "download_task", "version": 1}',
                '{"schema": "attachment_result", "version": 1, "trace_id": "T"}',
                result().replace("2026-11-27T10:00:00Z", "yesterday"),
                result().replace("2026-11-20", "someday"),
                result().replace('"attempt":0', '"attempt":"0"'),
                result().replace('"attempt":0', '"attempt":9223372036854775807'),
            ],
        ),
        "dlq",
    ).collect()
    assert [r.kind for r in parsed] == ["result"] + ["dlq"] * 7
    dead = [json.loads(r.value) for r in parsed[1:]]
    assert all(d["category"] == "malformed" and d["stage"] == "results" for d in dead)
    assert [d["source"]["offset"] for d in dead] == list(range(1, 8)) and {r.topic for r in parsed[1:]} == {"dlq"}
    reasons = [d["reason"] for d in dead]
    for reason, expected in zip(
        reasons,
        [
            "body is not JSON",
            "expected a attachment_result message, got schema 'download_task'",
            "missing required field(s)",
            "field occurred_at must be an ISO 8601 time",
            "field event_date must be a date",
            "field attempt must be int, got str",
            "field attempt is 9223372036854775807",
        ],
        strict=True,
    ):
        assert expected in reason, reason
    row = result_rows(parse_results(kafka_df(spark, [result()]), "dlq")).first()
    assert row.file_type == "pdf" and row.attempts == 1 and "SECRET" not in row.attachment_url


DONE = "2026-11-27T10:09:00Z"


def test_latest_outcome_wins_within_a_batch_and_first_seen_is_the_earliest(spark):
    rows = good_rows(
        spark,
        [
            result(attempt=1, status="completed", stage="upload", at=DONE, bytes=10, uploaded_at=DONE),
            result(attempt=0, status="retrying", at="2026-11-27T10:00:00Z", http_status=503),
            result(attempt=1, status="downloaded", at="2026-11-27T10:08:00Z"),
            result(attempt=1, status="completed", stage="upload", at=DONE, bytes=10, uploaded_at=DONE),
        ],
    )
    (row,) = latest_per_task(rows).collect()
    assert (row.status, row.attempt, row.attempts, row.bytes) == ("completed", 1, 2, 10)
    assert row.first_seen_at == datetime(2026, 11, 27, 10, 0) and row.updated_at == datetime(2026, 11, 27, 10, 9)


def test_a_late_older_outcome_never_overwrites_a_newer_one(spark, spec):
    merge_results(
        latest_per_task(good_rows(spark, [result(attempt=2, status="completed", at="2026-11-27T11:00:00Z")])), spec
    )
    merge_results(
        latest_per_task(
            good_rows(
                spark,
                [
                    result(attempt=1, status="retrying", at="2026-11-27T10:30:00Z", http_status=429),
                    result(task=T2, attempt=0, status="dead", at="2026-11-27T10:31:00Z", error_category="permanent"),
                ],
            )
        ),
        spec,
    )
    rows = {r.task_id: r for r in table_rows(spark, spec).collect()}
    assert set(rows) == {T1, T2}
    assert rows[T1].status == "completed" and rows[T1].attempt == 2 and rows[T1].http_status is None
    assert rows[T1].first_seen_at == datetime(2026, 11, 27, 10, 30)  # moved earlier by the late message
    assert rows[T2].status == "dead" and rows[T2].error_category == "permanent"


def test_replaying_a_whole_batch_changes_nothing(spark, spec):
    batch = latest_per_task(good_rows(spark, [result(), result(task=T2, status="completed", attempt=0)]))
    merge_results(batch, spec)
    before = table_rows(spark, spec).collect()
    merge_results(batch, spec)
    assert_df_equality(
        table_rows(spark, spec), spark.createDataFrame(before, table_rows(spark, spec).schema), ignore_row_order=True
    )
    assert table_rows(spark, spec).count() == 2


def test_rerunning_a_committed_batch_id_is_skipped_by_delta(spark, spec):
    # A crash after the Delta commit but before the checkpoint: Spark re-runs the same batch id.
    merge_results(latest_per_task(good_rows(spark, [result()])), spec, app_id="results-q1", batch_id=7)
    version = DeltaTable.forPath(spark, spec.path).history(1).first().version
    merge_results(latest_per_task(good_rows(spark, [result(attempt=3, status="completed")])), spec, "results-q1", 7)
    assert DeltaTable.forPath(spark, spec.path).history(1).first().version == version
    assert table_rows(spark, spec).first().status == "retrying"
    # The next batch id is applied.
    merge_results(latest_per_task(good_rows(spark, [result(attempt=3, status="completed")])), spec, "results-q1", 8)
    assert table_rows(spark, spec).first().status == "completed"
    assert spark.conf.get("spark.databricks.delta.write.txnAppId", None) is None  # session left clean


def test_table_schema_and_partitioning(spark, spec):
    table = table_rows(spark, spec)
    assert [(f.name, f.dataType) for f in table.schema] == [(f.name, f.dataType) for f in ATTACHMENTS_SCHEMA]
    detail = DeltaTable.forPath(spark, spec.path).detail().first()
    assert detail.partitionColumns == ["event_date"]


def test_no_table_is_created_or_overwritten_on_failure(spark, spec, tmp_path):
    missing = replace(spec, path=str(tmp_path / "nowhere" / "xact_attachments"))
    with pytest.raises(TableMissing, match=r"does not exist at .*; create it with `xact-pipeline tables create`"):
        merge_results(latest_per_task(good_rows(spark, [result()])), missing)
    assert not DeltaTable.isDeltaTable(spark, missing.path)

    merge_results(latest_per_task(good_rows(spark, [result()])), spec)
    version = DeltaTable.forPath(spark, spec.path).history(1).first().version
    broken = latest_per_task(good_rows(spark, [result(task="9" * 32)])).withColumn("trace_id", spark_null())
    with pytest.raises(Exception):  # noqa: B017 - Delta's NOT NULL violation
        merge_results(broken, spec)
    assert DeltaTable.forPath(spark, spec.path).history(1).first().version == version
    assert [r.task_id for r in table_rows(spark, spec).collect()] == [T1]
    create_table(spark, spec)  # creating again is a no-op, never a replace
    assert table_rows(spark, spec).count() == 1


def spark_null():
    from pyspark.sql import functions as F

    return F.lit(None).cast("string")


def test_completed_is_final_over_any_later_outcome_of_the_same_task(spark, spec):
    """A redelivered cached message after a verified upload must never turn completed into dead."""
    merge_results(latest_per_task(good_rows(spark, [result(attempt=1, status="completed", at=DONE)])), spec)
    later = [result(attempt=4, status="dead", at="2026-11-27T12:00:00Z", error_category="exhausted")]
    merge_results(latest_per_task(good_rows(spark, later)), spec)
    (row,) = table_rows(spark, spec).collect()
    assert (row.status, row.attempt) == ("completed", 1)
    both = [result(attempt=4, status="dead", at="2026-11-27T12:00:00Z"), result(attempt=1, status="completed", at=DONE)]
    (winner,) = latest_per_task(good_rows(spark, both)).collect()  # the same inside one batch
    assert winner.status == "completed"


def test_of_two_completions_the_later_in_lineage_is_kept_whichever_batches_they_arrive_in(spark, spec):
    first = result(attempt=0, status="completed", stage="upload", at=DONE)
    again = result(attempt=1, status="completed", stage="upload", at="2026-11-27T09:00:00Z")  # a clock behind
    (winner,) = latest_per_task(good_rows(spark, [first, again])).collect()  # one batch
    merge_results(latest_per_task(good_rows(spark, [first])), spec)  # two batches, in either order
    merge_results(latest_per_task(good_rows(spark, [again])), spec)
    merge_results(latest_per_task(good_rows(spark, [first])), spec)
    (row,) = table_rows(spark, spec).collect()
    assert (winner.status, winner.attempt) == (row.status, row.attempt) == ("completed", 1)


def test_a_replayed_task_that_completes_replaces_its_dead_row(spark, spec):
    """Replay restarts at attempt 0: the lineage (generation) ranks before the attempt."""
    merge_results(
        latest_per_task(good_rows(spark, [result(attempt=4, status="dead", at="2026-11-27T11:00:00Z")])), spec
    )
    replayed = [
        result(attempt=0, status="downloaded", at="2026-11-27T12:00:00Z", replay_id="replay-1", replay_generation=1)
    ]
    merge_results(latest_per_task(good_rows(spark, replayed)), spec)
    (row,) = table_rows(spark, spec).collect()
    assert (row.status, row.attempt, row.replay_generation, row.replay_id) == ("downloaded", 0, 1, "replay-1")
    stale = [result(attempt=3, status="retrying", at="2026-11-27T12:30:00Z")]  # the first life, late
    merge_results(latest_per_task(good_rows(spark, stale)), spec)
    assert table_rows(spark, spec).first().replay_generation == 1


def test_tables_create_adds_new_columns_to_a_table_of_an_earlier_version(spark, make_settings):
    from pyspark.sql.types import StructType

    spec = attachments_table(make_settings())
    old = replace(spec, schema=StructType([f for f in ATTACHMENTS_SCHEMA if f.name not in ("replay_id", "event_time")]))
    create_table(spark, old)
    create_table(spark, spec)
    assert {"replay_id", "event_time"} <= set(table_rows(spark, spec).columns)
    merge_results(latest_per_task(good_rows(spark, [result()])), spec)
    assert table_rows(spark, spec).count() == 1


def test_a_merge_reads_only_the_partitions_of_its_batch_dates(spark, spec):
    merge_results(latest_per_task(good_rows(spark, [result(event_date="2026-11-01")])), spec)
    merge_results(latest_per_task(good_rows(spark, [result(task=T2)])), spec)  # 2026-11-20
    # Remove the other date's data file behind Delta's back: reading it would now fail.
    (old_partition,) = [p for p in Path(spec.path).iterdir() if p.name == "event_date=2026-11-01"]
    for data in old_partition.glob("*.parquet"):
        data.unlink()
    merge_results(latest_per_task(good_rows(spark, [result(task=T2, attempt=1, status="completed")])), spec)
    today = table_rows(spark, spec).filter("event_date = DATE'2026-11-20'").collect()
    assert [(r.task_id, r.status) for r in today] == [(T2, "completed")]


def test_batch_facts_count_dead_letters_and_gather_every_result_date_in_one_pass(spark):
    parsed = parse_results(
        kafka_df(
            spark,
            [
                result(event_date="2026-11-01"),
                "not json",
                result(task=T2),
                result(task=T2, attempt=1),
                "{}",
            ],
        ),
        "dlq",
    )
    assert batch_facts(parsed) == (2, [date(2026, 11, 1), date(2026, 11, 20)])
    assert batch_facts(parse_results(kafka_df(spark, ["not json"]), "dlq")) == (1, [])
    assert batch_facts(parse_results(kafka_df(spark, [result()]), "dlq")) == (0, [date(2026, 11, 20)])


def test_a_merge_given_its_dates_reads_only_those_partitions_and_a_superset_changes_nothing(spark, spec):
    merge_results(latest_per_task(good_rows(spark, [result(event_date="2026-11-01")])), spec)
    (old_partition,) = [p for p in Path(spec.path).iterdir() if p.name == "event_date=2026-11-01"]
    for data in old_partition.glob("*.parquet"):
        data.unlink()
    merge_results(latest_per_task(good_rows(spark, [result(task=T2)])), spec, dates=[date(2026, 11, 20)])
    completed = good_rows(spark, [result(task=T2, attempt=1, status="completed")])
    merge_results(latest_per_task(completed), spec, dates=[date(2026, 11, 20), date(2026, 11, 21)])
    today = table_rows(spark, spec).filter("event_date = DATE'2026-11-20'").collect()
    assert [(r.task_id, r.status) for r in today] == [(T2, "completed")]
    merge_results(latest_per_task(completed), spec, dates=[])  # no dates: nothing to write
    assert table_rows(spark, spec).filter("event_date = DATE'2026-11-20'").count() == 1


# Clock skew between hosts: the upload host's clock may be behind (or ahead of) the download host's,
# so the upload's outcome of an attempt can carry an earlier occurred_at than the download's
# `downloaded` of the same attempt. Stage order decides, never the clocks (invariant 9).
DOWNLOADED_AT = "2026-11-27T10:00:00.500Z"


def _skewed_pair(upload_status: str, skew_ms: int) -> list[str]:
    upload_at = (datetime(2026, 11, 27, 10, 0, 0, 500_000) + timedelta(milliseconds=skew_ms)).isoformat() + "Z"
    facts = {"error_category": "permanent", "http_status": 403} if upload_status == "dead" else {}
    return [
        result(attempt=1, status="downloaded", at=DOWNLOADED_AT, bytes=10),
        result(attempt=1, status=upload_status, stage="upload", at=upload_at, **facts),
    ]


@pytest.mark.parametrize("skew_ms", [-200, 200])
@pytest.mark.parametrize("upload_status", ["dead", "retrying"])
def test_an_upload_outcome_beats_the_downloaded_of_its_attempt_whatever_the_clocks_in_one_batch(
    spark, upload_status, skew_ms
):
    (row,) = latest_per_task(good_rows(spark, _skewed_pair(upload_status, skew_ms))).collect()
    assert (row.status, row.stage, row.attempt) == (upload_status, "upload", 1)


@pytest.mark.parametrize("order", ["download_first", "upload_first"])
@pytest.mark.parametrize("skew_ms", [-200, 200])
def test_an_upload_outcome_beats_the_downloaded_of_its_attempt_whatever_the_clocks_across_batches(
    spark, spec, skew_ms, order
):
    downloaded, uploaded = _skewed_pair("dead", skew_ms)
    batches = [downloaded, uploaded] if order == "download_first" else [uploaded, downloaded]
    for value in batches:
        merge_results(latest_per_task(good_rows(spark, [value])), spec)
    (row,) = table_rows(spark, spec).collect()
    assert (row.status, row.stage, row.error_category) == ("dead", "upload", "permanent")


def test_generation_then_attempt_outrank_stage_and_time(spark, spec):
    # A newer attempt's download beats an older attempt's upload even with a much earlier clock.
    merge_results(
        latest_per_task(
            good_rows(
                spark,
                [
                    result(attempt=0, status="retrying", stage="upload", at="2026-11-27T12:00:00Z"),
                ],
            )
        ),
        spec,
    )
    merge_results(
        latest_per_task(
            good_rows(
                spark,
                [
                    result(attempt=1, status="downloaded", at="2026-11-27T09:00:00Z"),
                ],
            )
        ),
        spec,
    )
    assert table_rows(spark, spec).first().attempt == 1
    # A replay (generation 1) beats any outcome of generation 0 that is not completed.
    merge_results(
        latest_per_task(
            good_rows(
                spark,
                [
                    result(attempt=0, status="retrying", at="2026-11-27T08:00:00Z", replay_generation=1),
                ],
            )
        ),
        spec,
    )
    row = table_rows(spark, spec).first()
    assert (row.replay_generation, row.attempt, row.status) == (1, 0, "retrying")


def _expected_winner(outcomes: list[dict]) -> tuple:
    """The fold's rule, written out: completed first, then generation, attempt, stage, time."""
    stage_rank = {"download": 1, "upload": 2}

    def key(o: dict) -> tuple:
        return (
            o["status"] == "completed",
            o["gen"],
            o["status"] == "dead",
            o["attempt"],
            stage_rank[o["stage"]],
            o["at"],
        )

    best = max(outcomes, key=key)
    return best["status"], best["gen"], best["attempt"], best["stage"]


_outcome = st.fixed_dictionaries(
    {
        "gen": st.integers(0, 1),
        "attempt": st.integers(0, 2),
        "stage": st.sampled_from(["download", "upload"]),
        "status": st.sampled_from(["downloaded", "retrying", "dead", "completed"]),
        "skew_ms": st.integers(-5_000, 5_000),  # each outcome's host clock, off by up to 5 s
    }
)


# Each example takes a few Spark jobs and two MERGEs: few examples, and no shrinking (a failure
# prints its example as generated).
@settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(outcomes=st.lists(_outcome, min_size=2, max_size=5), split=st.integers(1, 4))
@example(  # two completions in two batches: the table kept the first, the window the later (found in CI)
    outcomes=[
        {"status": "completed", "gen": 1, "skew_ms": 189, "attempt": 0, "stage": "upload"},
        {"status": "downloaded", "gen": 1, "stage": "upload", "attempt": 2, "skew_ms": -50},
        {"status": "retrying", "gen": 1, "stage": "download", "attempt": 0, "skew_ms": -4294},
        {"status": "dead", "gen": 1, "stage": "download", "attempt": 1, "skew_ms": -247},
        {"status": "completed", "gen": 1, "stage": "upload", "attempt": 1, "skew_ms": -211},
    ],
    split=3,
)
def test_generated_outcomes_with_skewed_clocks_fold_by_lineage_not_by_clocks(spark, spec, outcomes, split):
    base = datetime(2026, 11, 27, 10)
    for n, o in enumerate(outcomes):  # true order: n; each host's clock adds its skew
        o["at"] = (base + timedelta(seconds=n, milliseconds=o["skew_ms"])).isoformat() + "Z"
    if all(o["status"] != "completed" for o in outcomes):
        # Without a completion, ties of (generation, attempt, stage) fall to time: keep those unique.
        keys = [(o["gen"], o["status"] == "dead", o["attempt"], o["stage"]) for o in outcomes]
        assume(len(set(keys)) == len(keys))
    task = uuid.uuid4().hex  # one table for every example: a task of its own each
    values = [
        result(task, o["attempt"], o["status"], o["at"], stage=o["stage"], replay_generation=o["gen"]) for o in outcomes
    ]
    expected = _expected_winner(outcomes)
    (row,) = latest_per_task(good_rows(spark, values)).collect()  # one batch
    assert (row.status, row.replay_generation, row.attempt, row.stage) == expected
    cut = min(split, len(values) - 1)
    for part in (values[:cut], values[cut:]):  # the same outcomes in two batches
        merge_results(latest_per_task(good_rows(spark, part)), spec)
    (row,) = table_rows(spark, spec).filter(f"task_id = '{task}'").collect()
    assert (row.status, row.replay_generation, row.attempt, row.stage) == expected


@pytest.mark.parametrize("skew_ms", [-200, 200])
def test_a_dead_letter_of_the_upload_s_own_re_download_ends_the_task_whatever_the_clocks(spark, spec, skew_ms):
    # The upload host found no cache file and downloaded it again, and that download failed for
    # good: its outcome is the download stage's, at the attempt of the other host's `downloaded`.
    downloaded, dead = _skewed_pair("dead", skew_ms)
    dead = dead.replace('"stage":"upload"', '"stage":"download"')
    (row,) = latest_per_task(good_rows(spark, [downloaded, dead])).collect()
    assert row.status == "dead"
    for value in (dead, downloaded):
        merge_results(latest_per_task(good_rows(spark, [value])), spec)
    assert table_rows(spark, spec).first().status == "dead"
