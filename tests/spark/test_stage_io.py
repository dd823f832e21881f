"""The I/O stages' Python side (pipeline_lib/spark/stage_io.py): one lazy stream of records."""

from __future__ import annotations

import pyarrow as pa

from pipeline_lib.spark.stage_query import _records


def _batch(offsets: list[int]) -> pa.RecordBatch:
    n = len(offsets)
    return pa.RecordBatch.from_pydict(
        {
            "key": [b"k"] * n,
            "value": [b"v"] * n,
            "topic": ["t"] * n,
            "partition": [0] * n,
            "offset": offsets,
            "timestamp_ms": [1_764_000_000_000] * n,
        }
    )


def test_the_records_of_every_arrow_batch_come_as_one_stream_in_order_one_batch_at_a_time():
    converted = []

    def batches():
        for offsets in ([0, 1, 2], [], [3], list(range(4, 1204))):
            converted.append(len(offsets))
            yield _batch(offsets)

    stream = _records(batches())
    first = next(stream)
    assert first.source.offset == 0 and converted == [3]  # lazily: the later batches are not read yet
    rest = [r.source.offset for r in stream]
    assert [first.source.offset, *rest] == list(range(1204)) and converted == [3, 0, 1, 1200]
