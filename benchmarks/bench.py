"""Every benchmark, one table: `make bench` (about 60 min), `make bench-quick` (about 15 min),
`make bench-record` (the full run, its table written into docs/performance.md).

    .venv/bin/python benchmarks/bench.py                      # every benchmark, medians of 3 runs
    .venv/bin/python benchmarks/bench.py --quick              # small sets, one run each
    .venv/bin/python benchmarks/bench.py --only download,latency
    .venv/bin/python benchmarks/bench.py --record docs/performance.md

Each row holds a reference measured in the same run on the same files and server, the pipeline's
figure, their ratio, the target, the number of runs (figures are medians) and the peak Python
worker RSS. A plain run prints and writes nothing else, so the tree stays clean; `--record`
replaces the part of the file between its `bench:begin` and `bench:end` markers, with the machine
described. Benchmarks are never part of `make test`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import re
import subprocess
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import Row, notes_lines, table_lines
from pipeline_lib.logs import setup_logging

# name -> (module, what it needs in minutes: full, quick)
BENCHMARKS = {
    "download": ("benchmarks.download_throughput", (12, 2)),
    "upload": ("benchmarks.upload_throughput", (3, 1)),
    "latency": ("benchmarks.pipeline_runs", (10, 2)),  # with CPU per event
    "idle": ("benchmarks.pipeline_runs", (8, 2)),
    "burst": ("benchmarks.pipeline_runs", (10, 3)),
    "backlog": ("benchmarks.pipeline_runs", (6, 3)),  # per run: see --backlog-runs
    "scaling": ("benchmarks.scaling", (5, 2)),
}
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def run_one(name: str, quick: bool, repeat: int) -> list[Row]:
    module = importlib.import_module(BENCHMARKS[name][0])
    if module.__name__ == "benchmarks.pipeline_runs":
        return module.measure(quick, repeat, (name,))
    return module.measure(quick, repeat)


def machine() -> list[str]:
    import pyspark

    from pipeline_lib import versions

    memory = "?"
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        match = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read_text())
        memory = f"{int(match.group(1)) / 1024 / 1024:.0f} GiB" if match else "?"
    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()
    cpu = "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = match.group(1).strip() if match else "?"
    return [
        f"- machine: {os.cpu_count()} cores ({cpu}), {memory} memory, {platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, pyspark {pyspark.__version__}, delta-spark "
        f"{versions.DELTA_VERSION}, Kafka broker {versions.KAFKA_VERSION} (local, single node), "
        f"{java[0] if java else 'java ?'}",
        "- every process on the same 2 cores: the Spark driver and its Python workers, the broker, the sample "
        "file server (its own process), the DFS test server and curl",
    ]


def record(path: Path, rows: list[Row], command: str, minutes: float) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = [
        BEGIN,
        f"Recorded {stamp} by `{command}` in {minutes:.0f} min.",
        "",
        *machine(),
        "",
        *table_lines(rows, markdown=True),
        "",
        *notes_lines(rows),
        END,
    ]
    text = path.read_text() if path.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: no {BEGIN} ... {END} markers to write the table between")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(head + "\n".join(block) + tail)
    print(f"recorded the table in {path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sets, one run each (development)")
    parser.add_argument("--repeat", type=int, default=None, help="runs per row (default 3; --quick 1)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--backlog-runs",
        type=int,
        default=None,
        help="runs of the 100,000-task backlog (about 6 min each: download alone, then the pipeline); default --repeat",
    )
    parser.add_argument("--record", type=Path, default=None, help="write the table into this Markdown file")
    args = parser.parse_args()
    setup_logging("WARNING")
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: choose from {', '.join(BENCHMARKS)}")
    repeat = args.repeat or (1 if args.quick else 3)
    backlog_runs = args.backlog_runs or repeat
    expected = sum(
        BENCHMARKS[n][1][1 if args.quick else 0] * (backlog_runs if n == "backlog" and not args.quick else 1)
        for n in names
    )
    print(f"benchmarks: {', '.join(names)}; {repeat} run(s) each; about {expected} min", flush=True)
    rows: list[Row] = []
    failed: list[str] = []
    start = time.monotonic()
    for name in names:
        began = time.monotonic()
        print(f"[{name}] running ({(began - start) / 60:.0f} min so far)", flush=True)
        try:
            rows += run_one(name, args.quick, backlog_runs if name == "backlog" and not args.quick else repeat)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed.append(name)
            print(f"[{name}] FAILED: {exc}", flush=True)
            traceback.print_exc()
        print(f"[{name}] done in {(time.monotonic() - began) / 60:.1f} min", flush=True)
    minutes = (time.monotonic() - start) / 60
    print("\n".join(["", *table_lines(rows), "", *notes_lines(rows)]))
    print(f"\n{len(rows)} rows in {minutes:.0f} min" + (f"; failed: {', '.join(failed)}" if failed else ""))
    if args.record is not None:
        if failed:
            print(f"not recorded: {', '.join(failed)} failed", file=sys.stderr)
            return 1
        command = " ".join(["benchmarks/bench.py", *sys.argv[1:]])
        record(args.record, rows, command, minutes)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
