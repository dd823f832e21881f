"""The stage skeleton's per-record loop, without a session: `per_record` makes any per-record
function total (a raising record becomes its `failed` rows, and one whose dead letter raises too is
logged with its provenance and dropped), and `record_loop` streams Arrow slices in and bounded
Arrow batches out, in order."""

from __future__ import annotations

import logging
from datetime import datetime

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st
from pyspark.sql.types import LongType, StringType, StructField, StructType

from pipeline_lib.contracts import SourceRef
from pipeline_lib.records import InputRecord
from pipeline_lib.spark.stage_query import ROWS_PER_OUTPUT_BATCH, per_record, record_loop

SCHEMA = StructType([StructField("kind", StringType(), False), StructField("offset", LongType(), False)])


def record(offset: int, value: str) -> InputRecord:
    return InputRecord("k", value.encode(), SourceRef("t", 0, offset, "2026-12-04T00:00:00.000Z"))


def rows_of(rec: InputRecord, now: datetime) -> list[tuple]:
    text = rec.text
    if text == "boom":
        raise ValueError("a bug")
    if text == "worse":
        raise RuntimeError("another bug")
    return [("ok", rec.source.offset)] * int(text or 0)


def failed(rec: InputRecord, exc: BaseException, now: datetime) -> list[tuple]:
    if rec.text == "worse":
        raise TypeError("its dead letter cannot be built either")
    return [("dead", rec.source.offset)]


VALUES = st.lists(st.sampled_from(["0", "1", "2", "3", "boom", "worse"]), max_size=60)


@settings(max_examples=100, deadline=None)
@given(VALUES)
def test_any_mix_of_good_and_raising_records_gives_each_its_rows_in_order(values):
    out = list(per_record(rows_of, failed)(iter([record(i, v) for i, v in enumerate(values)])))
    expected = []
    for i, v in enumerate(values):
        expected += [("dead", i)] if v == "boom" else [] if v == "worse" else [("ok", i)] * int(v)
    assert out == expected


def test_a_record_whose_dead_letter_raises_too_is_logged_with_its_provenance(caplog):
    with caplog.at_level(logging.ERROR, logger="xact.stage"):
        out = list(per_record(rows_of, failed)(iter([record(7, "worse"), record(8, "1")])))
    assert out == [("ok", 8)]
    assert "t/0/7 dropped" in caplog.text and "RuntimeError" in caplog.text and "TypeError" in caplog.text


def arrow_input(values: list[str], per_batch: int) -> list[pa.RecordBatch]:
    columns = {
        "key": [b"k"] * len(values),
        "value": [v.encode() for v in values],
        "topic": ["t"] * len(values),
        "partition": [0] * len(values),
        "offset": list(range(len(values))),
        "timestamp_ms": [0] * len(values),
    }
    table = pa.table(columns)
    return table.to_batches(max_chunksize=per_batch) if values else []


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 1300), st.integers(1, 700))
def test_the_arrow_loop_streams_every_row_in_order_in_bounded_batches(count, per_batch):
    loop = record_loop(per_record(rows_of, failed), SCHEMA)
    batches = list(loop(iter(arrow_input(["1"] * count, per_batch))))
    assert all(b.num_rows <= ROWS_PER_OUTPUT_BATCH for b in batches)
    offsets = [o for b in batches for o in b.column("offset").to_pylist()]
    assert offsets == list(range(count))
