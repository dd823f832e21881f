"""The benchmark report (benchmarks/common.py, benchmarks/bench.py): ratios, targets, the table and
its recording into docs/performance.md. The benchmarks themselves are never part of `make test`."""

from __future__ import annotations

import time

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


def test_the_process_tree_cpu_counts_a_session_and_the_children_it_reaped():
    import subprocess
    import sys

    from benchmarks.common import session_cpu_seconds

    # The session leader spins 0.3 s of CPU itself, then in a child it waits for (reaped).
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\n"
    script = f"import subprocess, sys\n{burn}subprocess.run([sys.executable, '-c', {burn!r}])\nsys.stdin.read()\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while session_cpu_seconds(proc.pid) < 0.6 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.6 <= session_cpu_seconds(proc.pid) < 5
        assert session_cpu_seconds(-1) == 0  # no such session
    finally:
        proc.communicate(b"", timeout=30)


def test_a_burst_has_one_large_event_and_small_ones_with_the_task_count():
    import json
    import random

    from benchmarks.pipeline_runs import burst_events

    records, tasks = burst_events(7, "http://127.0.0.1:1", big=50, small=20, rng=random.Random(1))
    counts = sorted(len(json.loads(value)["data"]["attachments"]) for _key, value in records)
    assert len(records) == 21 and counts[-1] == 50 and set(counts[:-1]) <= {1, 2, 3}
    assert tasks == sum(counts)
    assert len({key for key, _ in records}) == 21  # one trace id each
