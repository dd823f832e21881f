"""The I/O stages' Python side (pipeline_lib/spark/stage_io.py): what a worker holds at once."""

from __future__ import annotations

import pyarrow as pa

from pipeline_lib.spark.stage_io import RECORDS_PER_SLICE, _slices


def test_each_arrow_batch_is_handled_in_bounded_slices_in_order():
    batches = [pa.RecordBatch.from_pydict({"offset": list(range(n))}) for n in (1203, 0, 7, RECORDS_PER_SLICE)]
    slices = list(_slices(batches))
    assert [s.num_rows for s in slices] == [500, 500, 203, 7, RECORDS_PER_SLICE]
    assert max(s.num_rows for s in slices) <= RECORDS_PER_SLICE
    offsets = [o for s in slices for o in s.column("offset").to_pylist()]
    assert offsets == list(range(1203)) + list(range(7)) + list(range(RECORDS_PER_SLICE))
