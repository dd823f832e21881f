"""Scaling: the download stage on a Spark standalone cluster of 1 worker, then of 2 workers, each
worker pinned to 1 core, on the same set of files.

    .venv/bin/python benchmarks/scaling.py                 # 6,000 x 64 KiB, 3 runs per size (2-4 min)
    .venv/bin/python benchmarks/scaling.py --quick         # 800 x 64 KiB, 1 run per size (~1 min)
    .venv/bin/python benchmarks/scaling.py --no-pin        # Spark's 1 core only, no CPU affinity

The cluster is pipeline_lib.local.cluster.LocalSparkCluster: a master and N workers from the
installed pyspark on loopback, each worker a process with its own directories; the driver is this
process. "1 core" means both: the worker offers Spark 1 core (one executor, one task at a time),
and worker i's JVM is pinned to CPU i (sched_setaffinity), so its executor and that executor's
Python worker run on that CPU only. Without the affinity a 1-task executor still spreads over
every CPU (its Python worker's download threads, the JVM's Kafka reads), so "1 worker" would use
the whole machine. The driver, the broker and the file server are not pinned.

The broker (LocalKafka) and the sample file server (its own process) serve both cluster sizes;
each size gets its own topics, storage root and checkpoint, and a warm-up set that is not counted.
The pending topic has 4 partitions (two per executor with 2 workers) and `kafka.min_partitions` is
null, so each micro-batch runs one Spark task per partition, each with `download.concurrency`
downloads in flight. The stage runs as a long-running query (0.5 s trigger); a set's time runs from
producing its tasks to the end of the micro-batch that routed the last one (that batch's own end,
from its progress), as in benchmarks/download_throughput.py. The metrics table is off (its Delta
commits would run on the same executors).

Rows: files/s on 1 worker (no reference), and on 2 workers with the 1-worker rate as reference,
so the ratio is the speed-up (no target). Per-core rates are in the notes and in `extra`, with
what explains them: the tasks each executor ran and the share of the time it was running one (the
driver's REST API; the UI is on for it), and the cores used during the sets (from /proc) by the
executors with their Python workers, the file server, the broker, the driver with the cluster's
daemons, and everything else on the machine (other work, which a quiet machine keeps near 0).

What this measures, plainly: this machine has 2 cores, shared by the driver, the broker, the file
server and the executors. Two 1-core executors get less than 2 free cores, so the speed-up shows
contention for those cores as much as it shows how the stage scales. It is one measured point,
not a scaling curve; docs/performance.md says how each stage scales on paper.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import MiB, Row, median, notes_lines, table_lines
from pipeline_lib.config import Settings, load_settings
from pipeline_lib.kafka_client import create_topics, make_producer, produce
from pipeline_lib.local.broker import LocalKafka, free_port
from pipeline_lib.local.cluster import LocalSparkCluster
from pipeline_lib.local.samples import sample_task
from pipeline_lib.logs import setup_logging

KiB = 1024
SIZE = 64 * KiB
COUNT = 6000  # full run: both sizes x (start-up, warm-up, 3 runs) in 2 to 4 minutes on 2 cores
QUICK_COUNT = 800
WARMUP_COUNT = 200  # Python workers, Kafka consumers and producers, HTTP sessions on every executor
PARTITIONS = 4  # pending partitions: one Spark task each per micro-batch (min_partitions null)
CONCURRENCY = 8  # download.concurrency: downloads in flight per Spark task
SIZES = (1, 2)  # workers, 1 core each
POLL_SECONDS = 0.25
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
GROUPS = ("executors", "server", "broker", "driver", "other")  # where the cores went
CONTENTION = (
    "this machine's 2 cores are shared by the driver, the broker, the file server and the executors, "
    "so this shows contention as much as scaling"
)


def urls(base: str, label: str, count: int) -> list[str]:
    return [f"{base}/files/{label}-{i}.bin.pdf?size={SIZE}" for i in range(count)]


class RunningStage:
    """The download job as it runs in production: one long-running query, warm between sets
    (copied from benchmarks/download_throughput.py)."""

    def __init__(self, spark, settings: Settings) -> None:
        from pipeline_lib.spark.download import run_download

        self.settings = settings
        self.producer = make_producer(settings)
        self.query = run_download(spark, settings)
        self.seen: set[int] = set()
        self.totals = {"cached": 0, "retry": 0, "dead": 0, "malformed": 0, "busy_ms": 0, "peak": 0}
        self.last_end = 0.0  # epoch seconds at which the last batch with input ended

    def _poll(self) -> None:
        for p in self.query.recentProgress:
            if p["batchId"] in self.seen or not p["numInputRows"]:
                continue
            self.seen.add(p["batchId"])
            m = p["observedMetrics"]["download"]
            for name in ("cached", "retry", "dead", "malformed"):
                self.totals[name] += int(m[name] or 0)
            self.totals["busy_ms"] += p["durationMs"]["triggerExecution"]
            self.totals["peak"] = max(self.totals["peak"], int(m["worker_peak_rss_bytes"] or 0))
            # The batch's own end (trigger start + its duration): exact whatever the poll interval.
            end = datetime.fromisoformat(p["timestamp"]).timestamp() + p["durationMs"]["triggerExecution"] / 1000
            self.last_end = max(self.last_end, end)

    def run(self, file_urls: list[str], label: str, timeout: float = 600) -> tuple[float, float, int]:
        """(seconds from the first produce to the batch that routed the last task, seconds inside
        those batches, Python worker peak RSS so far) for one set; every task must be cached."""
        self._poll()
        before = dict(self.totals)
        tasks = [
            sample_task(u, u.rsplit("/", 1)[1].split("?")[0], trace_id=f"{label}-{i}") for i, u in enumerate(file_urls)
        ]
        start = time.time()  # the wall clock, as the progress timestamps
        produce(
            self.settings, self.settings.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks], self.producer
        )
        while True:
            self._poll()
            done = sum(self.totals[k] - before[k] for k in ("cached", "retry", "dead", "malformed"))
            if done >= len(tasks):
                break
            if self.query.exception() is not None or time.time() - start > timeout:
                raise RuntimeError(f"set {label}: {done} of {len(tasks)} routed; query: {self.query.exception()}")
            time.sleep(POLL_SECONDS)  # each poll converts up to 100 progress objects on the driver: not too often
        wall = self.last_end - start
        cached = self.totals["cached"] - before["cached"]
        if cached != len(tasks):
            raise RuntimeError(f"set {label}: only {cached} of {len(tasks)} cached; see the logs")
        shutil.rmtree(self.settings.cache_dir, ignore_errors=True)
        return wall, (self.totals["busy_ms"] - before["busy_ms"]) / 1000, self.totals["peak"]

    def stop(self) -> None:
        self.query.stop()


def _settings(tmp: Path, bootstrap: str, cluster: LocalSparkCluster, workers: int) -> Settings:
    prefix = f"scaling{workers}"  # own topics per cluster size: a new checkpoint reads from earliest
    topics = {name: {"name": f"{prefix}.{name}"} for name in ("events_raw", "cached", "results", "dlq")}
    topics["pending"] = {"name": f"{prefix}.pending", "partitions": PARTITIONS}
    return load_settings(
        "local",
        overrides={
            "kafka": {"bootstrap_servers": bootstrap, "min_partitions": None},
            "topics": topics,
            "storage": {"root": str(tmp / f"var-{workers}")},  # the cache under it: one disk for every worker
            "streaming": {"trigger_interval_seconds": 0.5},
            # The UI for its REST API only (task time per executor); port 0: any free port.
            "spark": {
                "master": cluster.master_url,
                "extra_conf": {**cluster.session_conf(), "spark.ui.enabled": "true", "spark.ui.port": "0"},
            },
            "download": {"concurrency": CONCURRENCY},
            "upload": {"mode": "decoupled"},  # the download alone: every file to xact.downloads.cached
            "metrics": {"enabled": False},
            "logging": {"level": "WARNING"},
        },
    )


def _executors(spark) -> int:
    """Executors registered with the driver (the driver itself not counted)."""
    return len(spark.sparkContext._jsc.sc().statusTracker().getExecutorInfos()) - 1


def _wait_for_executors(spark, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while _executors(spark) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{_executors(spark)} of {count} executors registered within {timeout:.0f}s")
        time.sleep(0.5)


def _processes(match) -> list[int]:
    """Pids of this machine's processes for which match(cmdline arguments, cwd) is true."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args, cwd = (proc / "cmdline").read_bytes().split(b"\0"), str((proc / "cwd").readlink())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        if match(args, cwd):
            pids.append(int(proc.name))
    return sorted(pids)


def _pin_workers(cluster: LocalSparkCluster) -> None:
    """Pin worker i's JVM (every thread) to CPU i. The executor it launches later, and that
    executor's Python workers, inherit the mask (fork and exec keep it)."""
    master = cluster.master_url.encode()
    pids = _processes(lambda args, _: b"org.apache.spark.deploy.worker.Worker" in args and master in args)
    if len(pids) != cluster.workers:
        raise RuntimeError(f"found {len(pids)} worker JVMs of {cluster.master_url}, expected {cluster.workers}")
    cpus = sorted(os.sched_getaffinity(0))
    for index, pid in enumerate(pids):
        for thread in Path(f"/proc/{pid}/task").iterdir():
            os.sched_setaffinity(int(thread.name), {cpus[index % len(cpus)]})


def _check_executors_pinned(cluster: LocalSparkCluster) -> None:
    """Each executor JVM (its cwd is in its worker's work dir) runs on one CPU, each on another."""
    home = str(cluster.home.resolve())
    pids = _processes(
        lambda args, cwd: b"org.apache.spark.executor.CoarseGrainedExecutorBackend" in args and cwd.startswith(home)
    )
    masks = [frozenset(os.sched_getaffinity(pid)) for pid in pids]
    distinct = len(set(masks)) == len(masks) or len(os.sched_getaffinity(0)) < len(masks)
    if len(pids) != cluster.workers or any(len(m) != 1 for m in masks) or not distinct:
        raise RuntimeError(f"executors not pinned one CPU each: {dict(zip(pids, masks, strict=True))}")


@dataclass(frozen=True)
class CpuSnapshot:
    machine: float  # busy CPU-seconds of the whole machine since boot
    procs: dict[int, tuple[int, float, str]]  # pid -> (parent pid, CPU-seconds used, cwd)


def _cpu_snapshot() -> CpuSnapshot:
    first = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = sum(first) - first[3] - first[4]  # user nice system idle iowait irq softirq steal: not idle, iowait
    procs = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat, cwd = (proc / "stat").read_text(), str((proc / "cwd").readlink())
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # from field 3 (state) on: ppid, ..., utime, stime
        procs[int(proc.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, cwd)
    return CpuSnapshot(busy / CLOCK_TICKS, procs)


def _cores(
    before: CpuSnapshot, after: CpuSnapshot, seconds: float, home: str, pids: dict[str, int]
) -> dict[str, float]:
    """Cores used between two snapshots: the executors (and their Python workers: processes whose
    cwd is in a worker's directory), the file server, the broker, the driver (this process, its JVM,
    the cluster's master and worker daemons) and everything else on the machine ("other")."""
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in after.procs.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = set(), [os.getpid()]
    while todo:
        pid = todo.pop()
        tree.add(pid)
        todo.extend(children.get(pid, []))
    used = dict.fromkeys(GROUPS, 0.0)
    by_pid = {pid: name for name, pid in pids.items()}
    for pid in tree & after.procs.keys():
        _, cpu, cwd = after.procs[pid]
        name = by_pid.get(pid) or ("executors" if cwd.startswith(home) else "driver")
        used[name] += cpu - (before.procs[pid][1] if pid in before.procs else 0.0)
    used["other"] = max(0.0, after.machine - before.machine - sum(used.values()))
    return {name: value / seconds for name, value in used.items()}


def _executor_totals(spark) -> dict[str, tuple[int, float]]:
    """Tasks run and task seconds so far per executor id, from the driver's REST API."""
    sc = spark.sparkContext
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/executors"
    with urllib.request.urlopen(url, timeout=10) as answer:
        return {e["id"]: (e["totalTasks"], e["totalDuration"] / 1000) for e in json.load(answer) if e["id"] != "driver"}


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _measure_size(
    tmp: Path, bootstrap: str, base: str, workers: int, count: int, repeat: int, pin: bool, pids: dict[str, int]
) -> dict:
    """Start a cluster of `workers` x 1 core, run the warm-up and `repeat` sets, stop it all."""
    from pipeline_lib.spark.session import session_for

    cluster = LocalSparkCluster(tmp / f"cluster-{workers}", workers=workers, cores_per_worker=1)
    spark = stage = None
    try:
        cluster.start()
        if pin:
            _pin_workers(cluster)
        settings = _settings(tmp, bootstrap, cluster, workers)
        create_topics(bootstrap, settings.topic_partitions())
        spark = session_for(settings)
        _wait_for_executors(spark, workers)
        stage = RunningStage(spark, settings)
        stage.run(urls(base, f"w{workers}-warmup", WARMUP_COUNT), f"w{workers}-warmup")
        if pin:
            _check_executors_pinned(cluster)
        home = str(cluster.home.resolve())
        walls, busies, peak, cores, first = [], [], 0, [], _executor_totals(spark)
        for run in range(1, repeat + 1):
            label = f"w{workers}-run{run}"
            before = _cpu_snapshot()
            wall, busy, peak = stage.run(urls(base, label, count), label)
            cores.append(_cores(before, _cpu_snapshot(), wall, home, pids))
            walls.append(wall)
            busies.append(busy)
            used = ", ".join(f"{name} {cores[-1][name]:.2f}" for name in GROUPS)
            _say(
                f"  {workers} worker(s) run {run}: {wall:.2f} s ({count / wall:,.0f} files/s), "
                f"{busy:.2f} s in batches; cores used: {used}"
            )
        last = _executor_totals(spark)
        if len(last) != workers:
            raise RuntimeError(f"{len(last)} executors at the end, expected {workers}")
        # Per executor over the measured sets: tasks run, and the share of the time it ran tasks.
        ran = sorted(
            (last[e][0] - first.get(e, (0, 0.0))[0], (last[e][1] - first.get(e, (0, 0.0))[1]) / sum(walls))
            for e in last
        )
        return {
            "wall": median(walls),
            "busy": median(busies),
            "peak": peak,
            "executors": ran,
            **{f"cores_{name}": median([c[name] for c in cores]) for name in GROUPS},
        }
    finally:
        if stage is not None:
            stage.stop()
        if spark is not None:
            spark.stop()  # before the broker goes: Spark's cached producers would reconnect
        cluster.stop()


def measure(quick: bool, repeat: int, *, pin: bool = True) -> list[Row]:
    """files/s of the download stage on 1 worker and on 2 workers (1 core each), medians of
    `repeat` runs (quick: a smaller set, 1 run). `pin`: each worker also on a CPU of its own."""
    count = QUICK_COUNT if quick else COUNT
    repeat = 1 if quick else max(1, repeat)
    tmp = Path(tempfile.mkdtemp(prefix="xact-scaling-"))
    server = broker = None
    try:
        server = subprocess.Popen(
            [sys.executable, "-m", "pipeline_lib.local.sample_server"], stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        base = server.stdout.readline().strip()
        broker = LocalKafka(tmp / "broker", free_port(), free_port(), heap="512m")
        pids = {"server": server.pid, "broker": broker.start().pid or 0}
        results = {w: _measure_size(tmp, broker.bootstrap, base, w, count, repeat, pin, pids) for w in SIZES}
    finally:
        if broker is not None:
            broker.stop()
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    name = f"download {count:,} x {SIZE // KiB} KiB"
    one = count / results[1]["wall"]
    rows = []
    for workers, r in results.items():
        rate = count / r["wall"]
        tasks = "/".join(str(n) for n, _ in r["executors"])
        busy = "/".join(f"{b:.0%}" for _, b in r["executors"])
        used = ", ".join(f"{g} {r[f'cores_{g}']:.2f}" for g in GROUPS)
        notes = f"per core {rate / workers:,.0f} files/s"
        if workers > 1:
            notes += f" ({rate / workers / one:.0%} of the 1-core rate), speed-up {rate / one:.2f}x"
        notes += (
            f"; tasks per executor {tasks}, running {busy} of the time; cores used (of {os.cpu_count()}): {used}; "
            + ("each worker pinned to a CPU of its own" if pin else "no CPU affinity (Spark's 1 core only)")
        )
        if workers > 1:
            notes += f"; {CONTENTION}"
        rows.append(
            Row(
                bench="scaling",
                name=f"{name}, {workers} worker{'s' if workers > 1 else ''} x 1 core",
                unit="files/s",
                reference_label="1 worker x 1 core" if workers > 1 else "-",
                reference=one if workers > 1 else None,
                figure=rate,
                runs=repeat,
                peak_rss_mib=r["peak"] / MiB,
                notes=notes,
                extra={
                    "cores": workers,
                    "per_core_files_per_s": rate / workers,
                    "pinned": float(pin),
                    "in_batches_files_per_s": count / r["busy"],
                    "executor_busy_min": min(b for _, b in r["executors"]),
                    **{f"cores_used_{g}": r[f"cores_{g}"] for g in GROUPS},
                },
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNT:,} files, 1 run per cluster size")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cluster size; medians are reported")
    parser.add_argument("--no-pin", action="store_true", help="no CPU affinity: 1 core is Spark's task slots only")
    args = parser.parse_args()
    setup_logging("WARNING")
    started = time.perf_counter()
    rows = measure(args.quick, args.repeat, pin=not args.no_pin)
    print("\n".join(table_lines(rows)))
    print("\n".join(["", *notes_lines(rows)]))
    print(f"\n({time.perf_counter() - started:.0f} s in all)")


if __name__ == "__main__":
    main()
