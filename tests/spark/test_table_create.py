"""Creating a table where a create was killed half-way (real Spark and Delta, real directories).

A clean CI run killed the dlq-table job (kill -9) while it created xact_dlq: `_delta_log/` and its
`_staged_commits/` existed, commit 0 did not, and every restart failed with DELTA_TABLE_NOT_FOUND.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from pipeline_lib.errors import PipelineError
from pipeline_lib.spark.tables import INTERRUPTED_CREATE_AGE_SECONDS, create_table, dlq_table

pytestmark = pytest.mark.integration


def interrupted_create(table: Path, age_seconds: float, files: tuple[str, ...] = ()) -> Path:
    """What a create killed before its first commit leaves: the log's directories, maybe hidden
    temporary files, every mtime `age_seconds` old."""
    log_dir = table / "_delta_log"
    (log_dir / "_staged_commits").mkdir(parents=True)
    for name in files:
        (log_dir / name).write_text("{}")
    then = time.time() - age_seconds
    for path in [*log_dir.rglob("*"), log_dir]:
        os.utime(path, (then, then))
    return log_dir


def test_a_create_interrupted_before_its_first_commit_is_cleared_and_the_table_created(spark, make_settings):
    spec = dlq_table(make_settings())
    interrupted_create(
        Path(spec.path), INTERRUPTED_CREATE_AGE_SECONDS + 5, files=(".00000000000000000000.json.3f2a.tmp",)
    )
    assert not DeltaTable.isDeltaTable(spark, spec.path)

    create_table(spark, spec)

    assert DeltaTable.isDeltaTable(spark, spec.path)
    assert [f.name for f in DeltaTable.forPath(spark, spec.path).toDF().schema] == [f.name for f in spec.schema]


def test_a_fresh_empty_log_is_left_to_the_create_that_may_be_writing_it(spark, make_settings):
    spec = dlq_table(make_settings())
    log_dir = interrupted_create(Path(spec.path), 1)

    with pytest.raises(PipelineError, match=r"xact_dlq .*holds no commit yet.*try again"):
        create_table(spark, spec)
    assert log_dir.is_dir() and (log_dir / "_staged_commits").is_dir()


@pytest.mark.parametrize(
    "name",
    [
        "00000000000000000000.json",  # commit 0 of a table Delta cannot read: never ours to delete
        "00000000000000000010.checkpoint.parquet",
        "_last_checkpoint",
        "_staged_commits/00000000000000000001.5d1e.json",
    ],
)
def test_a_log_holding_any_commit_or_checkpoint_is_never_removed(spark, make_settings, name):
    spec = dlq_table(make_settings())
    log_dir = interrupted_create(Path(spec.path), 3600)
    (log_dir / name).write_text("not a commit Delta can read")

    with pytest.raises(Exception):  # noqa: B017 - Delta's own error for a log it cannot read
        create_table(spark, spec)
    assert (log_dir / name).read_text() == "not a commit Delta can read"
