"""Download throughput: the download stage end to end (Kafka in, cached messages out) against
`curl --parallel` on the same files from the same local server, in the same run.

    .venv/bin/python benchmarks/download_throughput.py --quick         # about 1 min, under 1 GiB of /tmp
    .venv/bin/python benchmarks/download_throughput.py                 # every set, 3 runs: 5-7 min, 4 GiB of /tmp
    .venv/bin/python benchmarks/download_throughput.py --sets medium,small --repeat 1

The sample server runs in its own process. curl gets the same total concurrency as the stage
(Spark task slots x download.concurrency). The stage runs as in production: one long-running
query (0.5 s trigger), warmed up once; "stage" is the time from producing a set's tasks to the end
of the micro-batch that routed its last one (Kafka in, cached messages out); ratios use it. The
notes say where that time went: the micro-batches (count and time inside them) and the hashing.

Two references explain the ratios: the micro-batch floor (16 files of 1 KiB through the same
query: Kafka in, one batch, cached out, no bandwidth to speak of) and SHA-256 on one core (the
stage hashes every byte; curl does not).

Worker memory: the peak RSS of the Spark Python workers (VmHWM, read from /proc, the figure the
stage's own `worker_peak_rss_bytes` metric reports as ru_maxrss). The workers live through the
whole benchmark, so their peak is reset (/proc/<pid>/clear_refs) before each set: a set's
column is its own peak, and the last row is the peak over everything the benchmark ran. The
pipeline keeps that peak below 200 MiB itself (500-record slices, MALLOC_ARENA_MAX=2 in local
sessions); `--conf KEY=VALUE` tries a Spark conf on top. The `combined` set (issue #24) sends the
2 GiB file through the combined pass (upload.mode combined) to the DFS test server, in a session
of its own after the other sets: its row is the workers' peak anonymous RSS (RssAnon sampled
every 10 ms: heap and buffers), with VmHWM (mapped libraries included) in the RSS column.

Files: every download (curl's and the stage's) creates one file. On an ext4 without a journal
(this VM's /tmp), creating a file soon after many were deleted costs 0.4-0.8 ms of kernel time
(ext4 skips inodes deleted in the last minute or more, one by one), for curl as for the stage;
`--tmp /dev/shm` takes the file system out of the comparison.

Targets (issue #17): >= 0.4x curl files/s on 10,000 x 64 KiB, >= 0.7x curl MiB/s on 2,000 x 1 MiB,
>= 0.8x curl MiB/s on 16 x 256 MiB, >= 0.9x the concurrency bound (concurrency / latency) with
100 ms latency, and a Python worker peak RSS below 200 MiB across the whole benchmark (the 2 GiB
file included).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import MiB, Row, median, notes_lines, table_lines
from benchmarks.upload_throughput import DfsProcess, onelake_lake
from pipeline_lib.config import Settings, load_settings
from pipeline_lib.kafka_client import create_topics, make_producer, produce
from pipeline_lib.local.broker import LocalKafka, free_port
from pipeline_lib.local.samples import sample_task
from pipeline_lib.logs import setup_logging

BENCH = "download"
SLOTS = 2  # local[2]: Spark task slots on this 2-core machine
CONCURRENCY = 8  # download.concurrency per task
LATENCY_S = 0.1
RSS_LIMIT_MIB = 200.0
# What the download query's metrics count a task as (its observed metrics "download").
OUTCOMES = ("completed", "cached", "retry", "dead", "malformed", "internal")

# Spark confs the benchmark adds to the session (spark.extra_conf; --conf KEY=VALUE adds one). The
# pipeline itself keeps the worker's memory bounded: it slices each Arrow batch into 500 records
# (pipeline_lib/spark/stage_io.py) and local sessions set MALLOC_ARENA_MAX=2 for Python workers.
EXTRA_CONF: dict[str, str] = {}


@dataclass(frozen=True)
class FileSet:
    name: str
    count: int
    size: int
    params: str = ""  # extra query parameters (latency)

    @property
    def label(self) -> str:
        size = f"{self.size // MiB} MiB" if self.size >= MiB else f"{self.size // 1024} KiB"
        if self.size >= 1024 * MiB:
            size = f"{self.size // (1024 * MiB)} GiB"
        extra = f", +{LATENCY_S * 1000:.0f} ms" if self.params else ""
        if self.name == "combined":
            extra = ", combined pass to the DFS test server"
        return f"{self.count:,} x {size}{extra}"

    @property
    def mib(self) -> float:
        return self.count * self.size / MiB


SETS = {
    "small": FileSet("small", 10_000, 64 * 1024),
    "medium": FileSet("medium", 2_000, MiB),
    "large": FileSet("large", 16, 256 * MiB),
    # Long enough (about 30 s at the bound) to measure the steady rate the bound describes.
    "latency": FileSet("latency", 4_800, 64 * 1024, f"&latency_ms={LATENCY_S * 1000:.0f}"),
    "huge": FileSet("huge", 1, 2048 * MiB),  # the memory check
    # The same file through the combined pass (upload.mode combined, the default): downloaded, then
    # uploaded by the same worker to the DFS test server; the memory check of issue #24.
    "combined": FileSet("combined", 1, 2048 * MiB),
}
QUICK_SETS = {
    # 2,000 small files: enough records in one micro-batch to show the worker's memory per record.
    "small": FileSet("small", 2_000, 64 * 1024),
    "medium": FileSet("medium", 200, MiB),
    "large": FileSet("large", 2, 256 * MiB),
    "latency": FileSet("latency", 800, 64 * 1024, SETS["latency"].params),
}
TARGETS = {"small": 0.4, "medium": 0.7, "large": 0.8, "latency": 0.9}


def urls(base: str, fs: FileSet, run: int) -> list[str]:
    return [f"{base}/files/{fs.name}-{run}-{i}.bin.pdf?size={fs.size}{fs.params}" for i in range(fs.count)]


def run_curl(file_urls: list[str], out_dir: Path) -> float:
    """Seconds curl --parallel takes for these URLs at the stage's total concurrency."""
    out_dir.mkdir(parents=True)
    config = out_dir / "curl.cfg"
    config.write_text("".join(f'url = "{u}"\noutput = "{out_dir}/{i}"\n' for i, u in enumerate(file_urls)))
    start = time.perf_counter()
    subprocess.run(
        # --no-progress-meter: curl 7.88 draws its --parallel meter despite --silent.
        [
            "curl",
            "--silent",
            "--no-progress-meter",
            "--show-error",
            "--fail",
            "--parallel",
            "--parallel-max",
            str(SLOTS * CONCURRENCY),
            "--config",
            str(config),
        ],
        check=True,
    )
    elapsed = time.perf_counter() - start
    shutil.rmtree(out_dir)
    return elapsed


def sha256_rate(mib: int = 256) -> float:
    """MiB/s of hashlib.sha256 on one core, in 1 MiB updates (the stage's chunk size)."""
    block, digest = os.urandom(MiB), hashlib.sha256()
    start = time.perf_counter()
    for _ in range(mib):
        digest.update(block)
    return mib / (time.perf_counter() - start)


class Workers:
    """The Spark Python workers under this process (pyspark.daemon's forks), seen through /proc."""

    def pids(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
        found, todo = [], [os.getpid()]
        while todo:
            pid = todo.pop()
            for child in children.get(pid, []):
                todo.append(child)
                try:
                    cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
                except OSError:
                    continue
                if b"pyspark.daemon" in cmdline or b"pyspark.worker" in cmdline:
                    found.append(child)
        return found

    def reset_peaks(self) -> None:
        """Start every worker's peak RSS (VmHWM, and so ru_maxrss) again from its current RSS."""
        for pid in self.pids():
            try:
                Path(f"/proc/{pid}/clear_refs").write_text("5")
            except OSError:
                pass

    @staticmethod
    def highest_mib(pids: Sequence[int], field: str) -> float:
        """The highest value of a /proc/<pid>/status field (kB) among `pids`, in MiB."""
        peak = 0
        for pid in pids:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith(f"{field}:"):
                        peak = max(peak, int(line.split()[1]))
            except OSError:
                continue
        return peak / 1024

    def peak_mib(self) -> float:
        """The highest VmHWM among the workers, in MiB."""
        return self.highest_mib(self.pids(), "VmHWM")


@dataclass(frozen=True)
class SetRun:
    wall: float  # first produce -> end of the batch that routed the last task
    busy: float  # seconds inside the micro-batches that had input
    batches: int
    peak_mib: float  # worker peak RSS during this run (max of /proc and the stage's own metric)
    anon_mib: float | None = None  # worker peak anonymous RSS (sampled), when asked for


class AnonPeak:
    """The peak anonymous RSS of the workers, sampled every 10 ms on a thread while it runs (the
    worker list is re-read every second): heap and buffers, without the mapped libraries and
    files that VmHWM also counts."""

    def __init__(self, workers: Workers) -> None:
        self.workers = workers
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="anon-rss", daemon=True)

    def _sample(self) -> None:
        pids: list[int] = []
        listed = 0.0
        while not self._stop.wait(0.01):
            if time.monotonic() - listed > 1:
                pids, listed = self.workers.pids(), time.monotonic()
            self.peak = max(self.peak, self.workers.highest_mib(pids, "RssAnon"))  # no kernel peak of it

    def __enter__(self) -> AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class RunningStage:
    """The download job as it runs in production: one long-running query, warm between sets."""

    def __init__(self, spark: Any, settings: Settings) -> None:
        from pipeline_lib.spark.download import run_download

        self.settings = settings
        self.producer = make_producer(settings)  # long-lived, like a real upstream producer
        self.query = run_download(spark, settings)
        self.workers = Workers()
        self.seen: set[int] = set()
        # What a task ends as when all goes well: in the lake (combined pass) or in the cache.
        self.outcome = "completed" if settings.upload.mode == "combined" else "cached"
        self.totals = dict.fromkeys((*OUTCOMES, "busy_ms", "batches"), 0)
        self.metric_peak = 0  # the stage's own worker_peak_rss_bytes since the last reset

    def _poll(self) -> None:
        for p in self.query.recentProgress:
            if p["batchId"] in self.seen or not p["numInputRows"]:
                continue
            self.seen.add(p["batchId"])
            m = p["observedMetrics"]["download"]
            for name in OUTCOMES:
                self.totals[name] += int(m[name] or 0)
            self.totals["busy_ms"] += p["durationMs"]["triggerExecution"]
            self.totals["batches"] += 1
            self.metric_peak = max(self.metric_peak, int(m["worker_peak_rss_bytes"] or 0))

    def run(self, file_urls: list[str], run: int, timeout: float = 1800, anon: bool = False) -> SetRun:
        """Produce one task per URL and wait until the query has routed all of them; `anon` samples
        the workers' anonymous RSS meanwhile."""
        with AnonPeak(self.workers) if anon else nullcontext() as sampler:
            result = self._run(file_urls, run, timeout)
        return replace(result, anon_mib=sampler.peak) if sampler is not None else result

    def _run(self, file_urls: list[str], run: int, timeout: float) -> SetRun:
        self._poll()
        before = dict(self.totals)
        self.workers.reset_peaks()
        self.metric_peak = 0
        tasks = [
            sample_task(u, u.rsplit("/", 1)[1].split("?")[0], trace_id=f"bench-{run}-{i}")
            for i, u in enumerate(file_urls)
        ]
        start = time.perf_counter()
        produce(
            self.settings, self.settings.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks], self.producer
        )
        del tasks
        while True:
            self._poll()
            done = sum(self.totals[k] - before[k] for k in OUTCOMES)
            if done >= len(file_urls):
                break
            if self.query.exception() is not None or time.perf_counter() - start > timeout:
                raise SystemExit(f"set {run}: {done} of {len(file_urls)} routed; query: {self.query.exception()}")
            time.sleep(0.05)
        wall = time.perf_counter() - start
        ok = self.totals[self.outcome] - before[self.outcome]
        peak = max(self.workers.peak_mib(), self.metric_peak / MiB)
        shutil.rmtree(self.settings.cache_dir, ignore_errors=True)
        if ok != len(file_urls):
            raise SystemExit(f"set {run}: only {ok} of {len(file_urls)} {self.outcome}; see the logs")
        busy = (self.totals["busy_ms"] - before["busy_ms"]) / 1000
        return SetRun(wall, busy, self.totals["batches"] - before["batches"], peak)

    def stop(self) -> None:
        self.query.stop()


@contextmanager
def running_stage(
    tmp: Path, extra_conf: dict[str, str], dfs: DfsProcess | None = None
) -> Iterator[tuple[RunningStage, str]]:
    """A sample server, a broker, a local session and the download query; (stage, server URL).

    Decoupled (every file to xact.downloads.cached) unless `dfs` is given: then the combined pass,
    uploading to that DFS test server."""
    mode: dict[str, Any] = {"upload": {"mode": "decoupled"}}
    if dfs is not None:
        mode = {"upload": {"mode": "combined"}, "storage": {"lake": onelake_lake(dfs)}}
        extra_conf = {**extra_conf, "spark.executorEnv.REQUESTS_CA_BUNDLE": dfs.ca_file}
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline_lib.local.sample_server"], stdout=subprocess.PIPE, text=True
    )
    broker = None
    try:
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        broker = LocalKafka(tmp / "broker", free_port(), free_port(), heap="512m")
        broker.start()
        settings = load_settings(
            "local",
            overrides={
                # One pending partition per task slot: one wave of Spark tasks per micro-batch.
                "kafka": {"bootstrap_servers": broker.bootstrap, "min_partitions": None},
                "topics": {"pending": {"name": "xact.downloads.pending", "partitions": SLOTS}},
                "storage": {"root": f"{tmp}/var", **mode.get("storage", {})},
                "streaming": {"trigger_interval_seconds": 0.5},
                "spark": {"master": f"local[{SLOTS}]", "extra_conf": extra_conf},
                "download": {"concurrency": CONCURRENCY, "max_bytes": 3 * 1024 * MiB},
                "upload": mode["upload"],
            },
        )
        create_topics(broker.bootstrap, settings.topic_partitions())
        from pipeline_lib.spark.session import session_for

        spark = session_for(settings)
        stage = RunningStage(spark, settings)
        try:
            yield stage, base
        finally:
            stage.stop()
            spark.stop()  # before the broker: its cached producers would keep reconnecting
    finally:
        if broker is not None:
            broker.stop()
        server.terminate()
        server.wait(30)


def _sets(quick: bool, names: Sequence[str] | None) -> list[FileSet]:
    table = QUICK_SETS if quick else SETS
    names = list(names) if names is not None else list(table)
    unknown = [n for n in names if n not in SETS]
    if unknown:
        raise SystemExit(f"unknown set(s) {', '.join(unknown)}; choose from {', '.join(SETS)}")
    return [table[n] for n in names if n in table]


def measure(
    quick: bool,
    repeat: int,
    sets: Sequence[str] | None = None,
    extra_conf: dict[str, str] | None = None,
    tmp_root: str | None = None,
) -> list[Row]:
    """Run the chosen sets (all by default; quick: smaller ones and no 2 GiB file) `repeat` times
    each and return the report's rows: one per set, the micro-batch floor, SHA-256 on one core and
    the worker peak RSS over the whole benchmark. The `combined` set runs last, in a session of
    its own (the combined pass, to the DFS test server in its own process).

    Args:
        extra_conf: Spark confs for the session (default EXTRA_CONF).
        tmp_root: where the broker, the stage's cache and curl's files go (default: the system's
            temporary directory).
    """
    chosen = [fs for fs in _sets(quick, sets) if fs.name != "combined"]
    combined = [fs for fs in _sets(quick, sets) if fs.name == "combined"]
    extra_conf = dict(EXTRA_CONF if extra_conf is None else extra_conf)
    sha = sha256_rate(128 if quick else 512)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="xact-bench-download-", dir=tmp_root) as name:
        tmp = Path(name)
        with running_stage(tmp, extra_conf) as (stage, base):
            warm = stage.run(urls(base, FileSet("warmup", 64, 64 * 1024), 0), 0)  # workers, consumers, producer
            floor_runs = [stage.run(urls(base, FileSet("floor", 16, 1024), run), run) for run in (9001, 9002, 9003)]
            floor = median([r.wall for r in floor_runs])
            overall = max([warm.peak_mib, *(r.peak_mib for r in floor_runs)])
            run = 0
            for fs in chosen:
                curl_s: list[float] = []
                runs: list[SetRun] = []
                for _ in range(repeat):
                    run += 1
                    file_urls = urls(base, fs, run)
                    if fs.name != "huge":
                        curl_s.append(run_curl(file_urls, tmp / f"curl-{run}"))
                    runs.append(stage.run(file_urls, run))
                    r = runs[-1]
                    curl_text = f"curl {curl_s[-1]:.2f} s, " if curl_s else ""
                    line = (
                        f"  {fs.name} run {run}: {curl_text}stage {r.wall:.2f} s ({r.batches} batches, "
                        f"{r.busy:.2f} s in them), worker peak {r.peak_mib:.0f} MiB"
                    )
                    print(line, file=sys.stderr, flush=True)
                overall = max(overall, *(r.peak_mib for r in runs))
                rows.append(_set_row(fs, curl_s, runs, floor, sha))
            floor_note = (
                "Kafka in, one micro-batch, cached out, no bandwidth to speak of: every set pays it "
                "at least once, a set split into n batches about n times"
            )
            rows.append(
                Row(
                    BENCH,
                    "micro-batch floor, 16 x 1 KiB",
                    "s",
                    "-",
                    None,
                    floor,
                    len(floor_runs),
                    higher_is_better=False,
                    notes=floor_note,
                )
            )
            rows.append(
                Row(
                    BENCH,
                    "SHA-256, one core",
                    "MiB/s",
                    "-",
                    None,
                    sha,
                    1,
                    notes="the stage hashes every byte it downloads; curl does not",
                )
            )
            rss_note = "the highest Python worker RSS over every set, warm-up and floor runs included"
            rows.append(
                Row(
                    BENCH,
                    "worker peak RSS, whole benchmark",
                    "MiB",
                    "-",
                    None,
                    overall,
                    repeat,
                    target=RSS_LIMIT_MIB,
                    target_absolute=True,
                    higher_is_better=False,
                    peak_rss_mib=overall,
                    notes=rss_note,
                )
            )
        for fs in combined:
            rows.append(_combined_row(fs, tmp, extra_conf, repeat))
    return rows


def _combined_row(fs: FileSet, tmp: Path, extra_conf: dict[str, str], repeat: int) -> Row:
    """The worker's memory while the combined pass downloads `fs` and uploads it to the DFS test
    server: the peak anonymous RSS (the target) and the peak RSS (VmHWM) beside it."""
    dfs = DfsProcess(tmp / "dfs")
    try:
        with running_stage(tmp / "combined", extra_conf, dfs) as (stage, base):
            stage.run(urls(base, FileSet("warmup", 16, 64 * 1024), 0), 0)  # workers, consumers, producer
            dfs.reset()
            runs: list[SetRun] = []
            for run in range(1, repeat + 1):
                runs.append(stage.run(urls(base, fs, run), run, anon=True))
                ops, _ = dfs.reset()  # the server holds its files in memory: drop each run's
                r = runs[-1]
                print(
                    f"  {fs.name} run {run}: stage {r.wall:.2f} s ({r.batches} batches), worker peak anonymous "
                    f"{r.anon_mib:.0f} MiB, RSS {r.peak_mib:.0f} MiB; DFS requests {dict(ops)}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        dfs.close()
    anon = max(r.anon_mib or 0.0 for r in runs)
    peak = max(r.peak_mib for r in runs)
    wall = median([r.wall for r in runs])
    return Row(
        BENCH,
        f"{fs.label}: worker peak anonymous RSS",
        "MiB",
        "-",
        None,
        anon,
        len(runs),
        target=RSS_LIMIT_MIB,
        target_absolute=True,
        higher_is_better=False,
        peak_rss_mib=peak,
        notes=(
            f"downloaded and uploaded by one worker at {fs.mib / wall:.0f} MiB/s end to end; anonymous RSS "
            f"sampled every 10 ms (heap and buffers); the worker RSS column is VmHWM, mapped libraries included"
        ),
        extra={"MiB/s": fs.mib / wall, "RSS MiB": peak},
    )


def _set_row(fs: FileSet, curl_s: list[float], runs: list[SetRun], floor: float, sha: float) -> Row:
    wall = median([r.wall for r in runs])
    busy = median([r.busy for r in runs])
    batches = median([r.batches for r in runs])
    peak = max(r.peak_mib for r in runs)
    where = (
        f"median {batches:g} micro-batches, {busy:.1f} s of the {wall:.1f} s inside them "
        f"(the floor, {floor:.2f} s a batch, is {floor * batches / wall:.0%} of it)"
    )
    if fs.name == "huge":
        rate = fs.mib / wall
        return Row(
            BENCH,
            f"{fs.label}: worker peak RSS",
            "MiB",
            "-",
            None,
            peak,
            len(runs),
            target=RSS_LIMIT_MIB,
            target_absolute=True,
            higher_is_better=False,
            peak_rss_mib=peak,
            notes=f"the memory check: streamed at {rate:.0f} MiB/s; {where}",
            extra={"MiB/s": rate},
        )
    curl = median(curl_s)
    if fs.name == "latency":
        bound = SLOTS * CONCURRENCY / LATENCY_S
        notes = f"bound = {SLOTS * CONCURRENCY} in flight / {LATENCY_S:g} s; curl {fs.count / curl:.0f} files/s; "
        notes += where
        return Row(
            BENCH,
            fs.label,
            "files/s",
            f"bound {SLOTS * CONCURRENCY}/{LATENCY_S:g}s",
            bound,
            fs.count / wall,
            len(runs),
            target=TARGETS["latency"],
            peak_rss_mib=peak,
            notes=notes,
            extra={"curl files/s": fs.count / curl},
        )
    label = f"curl --parallel {SLOTS * CONCURRENCY}"
    if fs.name == "small":
        per_file_ms = busy / fs.count * 1000 * SLOTS  # task-slot milliseconds per file
        notes = f"{where}; {per_file_ms:.2f} ms of a task slot per file"
        return Row(
            BENCH,
            fs.label,
            "files/s",
            label,
            fs.count / curl,
            fs.count / wall,
            len(runs),
            target=TARGETS["small"],
            peak_rss_mib=peak,
            notes=notes,
        )
    hashing = fs.mib / sha
    notes = f"{where}; SHA-256 alone: {hashing:.1f} s of one core ({hashing / SLOTS:.1f} s on {SLOTS})"
    return Row(
        BENCH,
        fs.label,
        "MiB/s",
        label,
        fs.mib / curl,
        fs.mib / wall,
        len(runs),
        target=TARGETS.get(fs.name),
        peak_rss_mib=peak,
        notes=notes,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sets, no 2 GiB file")
    parser.add_argument("--repeat", type=int, default=None, help="runs per set, medians reported (3; 1 with --quick)")
    parser.add_argument("--sets", default=None, help=f"comma list of {', '.join(SETS)} (default: all)")
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="a Spark conf for the session (repeatable)"
    )
    parser.add_argument(
        "--tmp",
        default=None,
        metavar="DIR",
        help="where the broker, the cache and curl's files go (default: system temp)",
    )
    args = parser.parse_args()
    setup_logging("WARNING")
    extra_conf = dict(EXTRA_CONF)
    for item in args.conf:
        key, _, value = item.partition("=")
        if value:
            extra_conf[key] = value
        else:
            extra_conf.pop(key, None)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    rows = measure(args.quick, repeat, args.sets.split(",") if args.sets else None, extra_conf, args.tmp)
    if extra_conf:
        print("spark confs: " + ", ".join(f"{k}={v}" for k, v in extra_conf.items()))
    print("\n".join(table_lines(rows)))
    print("\n".join(["", *notes_lines(rows)]))


if __name__ == "__main__":
    main()
