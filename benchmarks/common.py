"""What every benchmark reports: rows of one table, each a median of repeated runs beside a
reference measured in the same run on the same files and server.

A benchmark module exposes `measure(quick: bool, repeat: int) -> list[Row]` and keeps its own
`main()` for running it alone; `benchmarks/bench.py` (make bench) runs them all into one table.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    """One line of the report.

    `reference` and `figure` are medians over `runs` runs, in `unit`. `higher_is_better` says which
    way the ratio (figure / reference) should go; `target` is that ratio's goal (e.g. 0.7 for
    ">= 0.7x") or, with `target_absolute`, a bound on the figure itself (e.g. p95 <= 5 s).
    """

    bench: str  # download, upload, latency, idle, burst, backlog, scaling
    name: str  # what was measured, e.g. "10,000 x 64 KiB"
    unit: str  # files/s, MiB/s, s
    reference_label: str  # what the reference is, e.g. "curl --parallel 16"
    reference: float | None
    figure: float
    runs: int
    target: float | None = None
    target_absolute: bool = False
    higher_is_better: bool = True
    peak_rss_mib: float | None = None  # peak Python worker RSS over the runs (max, not median)
    notes: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.reference:
            return None
        return self.figure / self.reference

    @property
    def met(self) -> bool | None:
        if self.target is None:
            return None
        value = self.figure if self.target_absolute else self.ratio
        if value is None:
            return None
        return self._meets(value)

    def _meets(self, value: float) -> bool:
        assert self.target is not None
        return value >= self.target if self.higher_is_better else value <= self.target

    def ratio_text(self) -> str:
        """The ratio to 2 decimals, or 3 where 2 would round it onto its target and contradict the
        met column (0.3954 against >= 0.4 shows as 0.395x, not 0.40x)."""
        if self.ratio is None:
            return "-"
        text = f"{self.ratio:.2f}"
        if self.target is not None and not self.target_absolute and self._meets(float(text)) != self.met:
            text = f"{self.ratio:.3f}"
        return f"{text}x"

    def target_text(self) -> str:
        if self.target is None:
            return "-"
        sign = ">=" if self.higher_is_better else "<="
        return f"{sign} {self.target:g} {self.unit}" if self.target_absolute else f"{sign} {self.target:g}x"


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


HEADER = (
    "benchmark",
    "measured",
    "reference",
    "ref.",
    "pipeline",
    "unit",
    "ratio",
    "target",
    "met",
    "runs",
    "worker RSS",
)


def table_lines(rows: Sequence[Row], markdown: bool = False) -> list[str]:
    """The report as aligned text, or as a Markdown table."""
    cells = [HEADER]
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r.met]
        rss = f"{r.peak_rss_mib:.0f} MiB" if r.peak_rss_mib is not None else "-"
        cells.append(
            (
                r.bench,
                r.name,
                r.reference_label,
                _num(r.reference),
                _num(r.figure),
                r.unit,
                r.ratio_text(),
                r.target_text(),
                met,
                str(r.runs),
                rss,
            )
        )
    if markdown:
        out = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells[1:]]
        return out
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADER))]
    right = {3, 4, 6, 9, 10}
    return [
        "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(row)).rstrip()
        for row in cells
    ]


def notes_lines(rows: Sequence[Row]) -> list[str]:
    return [f"- {r.bench}, {r.name}: {r.notes}" for r in rows if r.notes]


def _session_stats(session: int):
    """(pid, the fields of /proc/<pid>/stat from field 3 on) of every process of session `session`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while being read
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on; the name may hold spaces
        if int(fields[3]) == session:  # field 6, the session id
            yield int(entry.name), fields


def session_cpu_seconds(session: int) -> float:
    """CPU seconds (user + system) spent so far by every process of session `session` (a process
    started with `start_new_session=True` leads one: its JVM, Python workers and their children),
    read from /proc. Each process counts its own time and that of the children it has reaped, so a
    worker that exited between two readings still counts once in its parent's."""
    tick = os.sysconf("SC_CLK_TCK")
    return sum(sum(int(v) for v in fields[11:15]) for _, fields in _session_stats(session)) / tick  # utime..cstime


class SessionCpu:
    """CPU seconds of every process of session `session`, sampled every `every` seconds from a
    thread, each process's own utime + stime kept at its last value after it exits.

    session_cpu_seconds reads a process's reaped children from its cutime/cstime, which misses a
    child reaped by a process outside the session or by the kernel (a parent that ignores
    SIGCHLD): two idle runs lost about 4 CPU-s that way and read below zero. Here an exited
    process keeps what it was last seen with, so a window undercounts by at most `every` seconds
    of each process that ends in it."""

    def __init__(self, session: int, every: float = 0.1) -> None:
        import threading

        self.session, self.every = session, every
        self._seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> own CPU seconds
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._thread = threading.Thread(target=self._run, name="session-cpu", daemon=True)

    def __enter__(self) -> SessionCpu:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def sample(self) -> None:
        found = {
            (pid, int(fields[19])): (int(fields[11]) + int(fields[12])) / self._tick  # (pid, start time): utime + stime
            for pid, fields in _session_stats(self.session)
        }
        with self._lock:
            self._seen.update(found)

    def seconds(self) -> float:
        """CPU seconds of the session so far (sampled now)."""
        self.sample()
        with self._lock:
            return sum(self._seen.values())
