"""The benchmark report (benchmarks/common.py, benchmarks/bench.py): ratios, targets, the table and
its recording into docs/performance.md. The benchmarks themselves are never part of `make test`."""

from __future__ import annotations

import pytest

from benchmarks import bench
from benchmarks.common import Row, table_lines


def test_a_ratio_target_and_an_absolute_bound_are_judged_the_way_they_point():
    faster = Row("download", "small", "files/s", "curl", reference=1000, figure=450, runs=3, target=0.4)
    assert faster.ratio == pytest.approx(0.45) and faster.met is True and faster.target_text() == ">= 0.4x"
    slow = Row(
        "latency",
        "p95",
        "s",
        "floor",
        reference=1.0,
        figure=7.5,
        runs=3,
        target=5.0,
        target_absolute=True,
        higher_is_better=False,
    )
    assert slow.met is False and slow.target_text() == "<= 5 s"
    assert Row("scaling", "1 worker", "files/s", "-", reference=None, figure=10, runs=1).met is None


def test_a_ratio_is_never_rounded_onto_its_target():
    missed = Row("download", "small", "files/s", "curl", reference=3366, figure=1331, runs=3, target=0.4)
    assert missed.met is False and missed.ratio_text() == "0.395x"
    assert Row("download", "x", "files/s", "curl", reference=100, figure=40, runs=3, target=0.4).ratio_text() == "0.40x"
    assert Row("download", "x", "files/s", "curl", reference=100, figure=62, runs=3, target=0.7).ratio_text() == "0.62x"
    assert Row("scaling", "x", "files/s", "-", reference=None, figure=10, runs=1).ratio_text() == "-"


def test_the_table_has_one_line_per_row_and_escapes_markdown():
    rows = [Row("upload", "a | b", "MiB/s", "sdk", reference=100, figure=90, runs=3, target=0.8, peak_rss_mib=150)]
    text = table_lines(rows)
    assert len(text) == 2 and "0.90x" in text[1] and "150 MiB" in text[1] and "yes" in text[1]
    markdown = table_lines(rows, markdown=True)
    assert markdown[0].startswith("| benchmark") and "a \\| b" in markdown[2]


def test_recording_replaces_only_the_marked_block(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "machine", lambda: ["- machine: test"])
    doc = tmp_path / "performance.md"
    doc.write_text(f"# Performance\n\nintro\n\n{bench.BEGIN}\nold table\n{bench.END}\n\n## Where the time goes\n")
    row = Row("download", "small", "files/s", "curl", reference=10, figure=5, runs=3, target=0.4)
    bench.record(doc, [row], "make bench-record", 42)
    text = doc.read_text()
    assert "old table" not in text and "intro" in text and "## Where the time goes" in text
    assert "- machine: test" in text and "| download | small |" in text and "in 42 min" in text
    doc.write_text("no markers")
    with pytest.raises(SystemExit, match="markers"):
        bench.record(doc, [row], "make bench-record", 1)
