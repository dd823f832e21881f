"""Download throughput: the download stage end to end (Kafka in, cached messages out) against
`curl --parallel` on the same files from the same local server, in the same run.

    .venv/bin/python benchmarks/download_throughput.py            # all sets (~3 min, ~5 GB of /tmp)
    .venv/bin/python benchmarks/download_throughput.py --sets small,latency --repeat 3

The sample server runs in its own process. curl gets the same total concurrency as the stage
(Spark task slots x download.concurrency). The stage runs as in production: one long-running
query (0.5 s trigger), warmed up once; "stage" is the time from producing a set's tasks to the end
of the micro-batch that routed its last one (Kafka in, cached messages out), "in batches" the time
inside those micro-batches. Ratios use "stage".

Two references explain the ratios: the micro-batch floor (16 files of 1 KiB through the same
query: Kafka in, one batch, cached out, no bandwidth to speak of) and SHA-256 on one core (the
stage hashes every byte; curl does not).

Targets (issue #4): >= 0.9x curl MiB/s on 256 MiB files, >= 0.7x on 1 MiB files, >= 0.25x curl
files/s on 64 KiB files, >= 0.9x the concurrency bound (concurrency / latency) with 100 ms latency,
and a Python worker peak RSS below 200 MiB while it downloads a 2 GiB file.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline_lib.config import Settings, load_settings
from pipeline_lib.kafka_client import create_topics, make_producer, produce
from pipeline_lib.local.broker import LocalKafka, free_port
from pipeline_lib.local.samples import sample_task
from pipeline_lib.logs import setup_logging

MiB = 1024 * 1024
SLOTS = 2  # local[2]: Spark task slots on this 2-core machine
CONCURRENCY = 8  # download.concurrency per task


@dataclass(frozen=True)
class FileSet:
    name: str
    count: int
    size: int
    params: str = ""  # extra query parameters (latency)


SETS = {
    "small": FileSet("small", 2000, 64 * 1024),
    "medium": FileSet("medium", 200, MiB),
    "large": FileSet("large", 4, 256 * MiB),
    # Long enough (about 30 s at the bound) to measure the steady rate the bound describes.
    "latency": FileSet("latency", 4800, 64 * 1024, "&latency_ms=100"),
    "huge": FileSet("huge", 1, 2048 * MiB),  # the memory check
}


def urls(base: str, fs: FileSet, run: int) -> list[str]:
    return [f"{base}/files/{fs.name}-{run}-{i}.bin.pdf?size={fs.size}{fs.params}" for i in range(fs.count)]


def run_curl(file_urls: list[str], out_dir: Path) -> float:
    out_dir.mkdir(parents=True)
    config = out_dir / "curl.cfg"
    config.write_text("".join(f'url = "{u}"\noutput = "{out_dir}/{i}"\n' for i, u in enumerate(file_urls)))
    start = time.perf_counter()
    subprocess.run(
        ["curl", "--silent", "--show-error", "--fail", "--parallel", "--parallel-max", str(SLOTS * CONCURRENCY),
         "--config", str(config)],
        check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    shutil.rmtree(out_dir)
    return elapsed


class RunningStage:
    """The download job as it runs in production: one long-running query, warm between sets."""

    def __init__(self, spark, settings: Settings) -> None:
        from pipeline_lib.spark.download import run_download

        self.settings = settings
        self.producer = make_producer(settings)  # long-lived, like a real upstream producer
        self.query = run_download(spark, settings)
        self.seen: set[int] = set()
        self.totals = {"cached": 0, "retry": 0, "dead": 0, "malformed": 0, "bytes": 0, "busy_ms": 0, "peak": 0}

    def _poll(self) -> None:
        for p in self.query.recentProgress:
            if p["batchId"] in self.seen or not p["numInputRows"]:
                continue
            self.seen.add(p["batchId"])
            m = p["observedMetrics"]["download"]
            for name in ("cached", "retry", "dead", "malformed", "bytes"):
                self.totals[name] += int(m[name] or 0)
            self.totals["busy_ms"] += p["durationMs"]["triggerExecution"]
            self.totals["peak"] = max(self.totals["peak"], int(m["worker_peak_rss_bytes"] or 0))

    def run(self, file_urls: list[str], run: int, timeout: float = 1800) -> tuple[float, float, int]:
        """(seconds from the first produce to the batch that routed the last task, seconds inside
        those batches, worker peak RSS) for one set."""
        self._poll()
        before = dict(self.totals)
        tasks = [
            sample_task(u, u.rsplit("/", 1)[1].split("?")[0], trace_id=f"bench-{run}-{i}")
            for i, u in enumerate(file_urls)
        ]
        start = time.perf_counter()
        produce(
            self.settings, self.settings.topics.pending.name, [(t.trace_id, t.encode()) for t in tasks], self.producer
        )
        while True:
            self._poll()
            done = sum(self.totals[k] - before[k] for k in ("cached", "retry", "dead", "malformed"))
            if done >= len(tasks):
                break
            if self.query.exception() is not None or time.perf_counter() - start > timeout:
                raise SystemExit(f"set {run}: {done} of {len(tasks)} routed; query: {self.query.exception()}")
            time.sleep(0.05)
        wall = time.perf_counter() - start
        cached = self.totals["cached"] - before["cached"]
        if cached != len(tasks):
            raise SystemExit(f"set {run}: only {cached} of {len(tasks)} cached; see the logs")
        shutil.rmtree(self.settings.cache_dir, ignore_errors=True)
        return wall, (self.totals["busy_ms"] - before["busy_ms"]) / 1000, self.totals["peak"]

    def stop(self) -> None:
        self.query.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default="small,medium,large,latency,huge", help=f"comma list of {', '.join(SETS)}")
    parser.add_argument("--repeat", type=int, default=1, help="runs per set; medians are reported")
    args = parser.parse_args()
    setup_logging("WARNING")
    chosen = [SETS[name] for name in args.sets.split(",")]

    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline_lib.local.sample_server"], stdout=subprocess.PIPE, text=True
    )
    base = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory(prefix="xact-bench-") as tmp:
        broker = LocalKafka(Path(tmp) / "broker", free_port(), free_port(), heap="512m")
        broker.start()
        try:
            settings = load_settings("local", overrides={
                # One pending partition per task slot: one wave of Spark tasks per micro-batch.
                "kafka": {"bootstrap_servers": broker.bootstrap, "min_partitions": None},
                "topics": {"pending": {"name": "xact.downloads.pending", "partitions": SLOTS}},
                "storage": {"root": f"{tmp}/var"},
                "streaming": {"trigger_interval_seconds": 0.5},
                "spark": {"master": f"local[{SLOTS}]"},
                "download": {"concurrency": CONCURRENCY, "max_bytes": 3 * 1024 * MiB},
            })  # fmt: skip
            create_topics(broker.bootstrap, settings.topic_partitions())
            from pipeline_lib.spark.session import session_for

            spark = session_for(settings)
            stage = RunningStage(spark, settings)
            stage.run(urls(base, FileSet("warmup", 64, 64 * 1024), 0), 0)  # Python workers, consumers, producer
            floor = statistics.median(
                stage.run(urls(base, FileSet("floor", 16, 1024), run), run)[0] for run in (9001, 9002, 9003)
            )
            rows = []
            run = 0
            for fs in chosen:
                curl_s, stage_s, busy_s, peaks = [], [], [], []
                for _ in range(args.repeat):
                    run += 1
                    file_urls = urls(base, fs, run)
                    if fs.name != "huge":
                        curl_s.append(run_curl(file_urls, Path(tmp) / f"curl-{run}"))
                    wall, busy, peak = stage.run(file_urls, run)
                    stage_s.append(wall)
                    busy_s.append(busy)
                    peaks.append(peak)
                    print(
                        f"  {fs.name} run {run}: curl {curl_s[-1] if curl_s else 0:.2f}s stage {wall:.2f}s", flush=True
                    )
                rows.append(
                    (
                        fs,
                        curl_s and statistics.median(curl_s),
                        statistics.median(stage_s),
                        statistics.median(busy_s),
                        max(peaks),
                    )
                )
            stage.stop()
            spark.stop()
        finally:
            broker.stop()
            server.terminate()
    report(rows)
    print(f"\nmicro-batch floor (16 x 1 KiB, median of 3): {floor:.2f} s")
    print(f"SHA-256 on one core: {sha256_rate():,.0f} MiB/s")


def sha256_rate(mib: int = 512) -> float:
    block, digest = b"\0" * MiB, hashlib.sha256()
    start = time.perf_counter()
    for _ in range(mib):
        digest.update(block)
    return mib / (time.perf_counter() - start)


def report(rows) -> None:
    print(f"\n{'set':<26} {'curl':>14} {'stage':>14} {'in batches':>14} {'ratio':>7} {'target':>8}  worker peak RSS")
    for fs, curl, stage, busy, peak in rows:
        label = f"{fs.name} {fs.count} x {fs.size // 1024} KiB"
        rss = f"{peak / MiB:.0f} MiB"
        if fs.name == "huge":
            mib = fs.size / MiB
            line = f"{label:<26} {'-':>14} {mib / stage:>8.0f} MiB/s {mib / busy:>8.0f} MiB/s"
            print(f"{line} {'-':>7} {'<200MiB':>8}  {rss}")
            continue
        if fs.name == "latency":
            bound = SLOTS * CONCURRENCY / 0.1
            rate, target = fs.count / stage, 0.9
            print(f"{label + ' +100ms':<26} {fs.count / curl:>9.0f} f/s {rate:>9.0f} f/s {fs.count / busy:>9.0f} f/s "
                  f"{rate / bound:>6.2f}x {target:>7}x  {rss}  (bound {bound:.0f} files/s)")  # fmt: skip
            continue
        if fs.name == "small":
            unit, curl_rate, rate, busy_rate, target = "f/s", fs.count / curl, fs.count / stage, fs.count / busy, 0.25
        else:
            mib = fs.count * fs.size / MiB
            unit, curl_rate, rate, busy_rate = "MiB/s", mib / curl, mib / stage, mib / busy
            target = 0.7 if fs.name == "medium" else 0.9
        print(f"{label:<26} {curl_rate:>8.0f} {unit:<5} {rate:>8.0f} {unit:<5} {busy_rate:>8.0f} {unit:<5} "
              f"{rate / curl_rate:>6.2f}x {target:>7}x  {rss}")  # fmt: skip


if __name__ == "__main__":
    main()
