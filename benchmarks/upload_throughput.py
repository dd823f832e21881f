"""Upload throughput (issue #17 item 3): the upload stage against the same Azure SDK client
uploading the same files with the same concurrency and no pipeline, against the DFS test server;
and the local-lake backend against a plain copy. Every reference is measured in the same run, on
the same files, just before the stage uploads them.

    .venv/bin/python benchmarks/upload_throughput.py                # full sets, 3 runs each
    .venv/bin/python benchmarks/upload_throughput.py --quick        # tiny sets, 1 run

Rows (MiB/s, median of `--repeat` runs; fresh cache files for every run):

- OneLake: `UploadStage.process` over the cached records with storage.lake.backend = onelake,
  pointed at the DFS test server (pipeline_lib/local/dfs_server.py, HTTPS, any bearer token),
  which runs in its own process so its CPU and memory are not the stage's. The reference is
  `DataLakeFileClient.upload_data` of the same files to the same server, through a FileSystemClient
  made by `OneLakeStorage.from_settings` on the same settings (same credential, SDK retries,
  timeouts, CA bundle), with `chunk_size = upload.chunk_bytes` and `max_concurrency = 1`.
  Target >= 0.8x.
- local lake: the same stage with the local backend, against `shutil.copyfile` of the same files
  into a fresh folder, one thread (no target).

Concurrency: in one Spark task the stage uploads `upload.concurrency` files at once (its thread
pool) and each file's appends go one after another (`OneLakeStorage.put` sends the next chunk
when the previous append returned), so the reference runs `upload.concurrency` threads of one
file each, one append in flight per file: `upload.concurrency x 1` requests in flight, as the stage.

What the stage does and the reference does not (the cost the ratio shows):
- re-hashes every cached byte (sha256, checked before the flush), MD5s each append
  (validate_content="md5", checked by the server) and the whole file (Content-MD5 on flush);
- writes to a temporary name, renames it onto the final path and reads the properties back
  (size, sha256 metadata, Content-MD5): two requests per file more than create, appends, flush;
- checks and deletes the cache file, builds and encodes the routed messages of each record.
The reference sends create, appends and flush only, hashing nothing (validate_content off).

`extra` (OneLake rows) explains the ratio in terms this shared 2-core machine does not blur: the
requests per file each side sent (the server's log), and CPU milliseconds per MiB, medians over
the runs, of this process (client: the stage or the SDK, all threads) and of the DFS server.
Where both sides together use the two cores, the ratio is about the inverse ratio of their CPU
per MiB (client + server). The worker RSS column is this process's peak RSS during the stage runs
(Linux: VmHWM after a reset through /proc/self/clear_refs), the DFS server excluded.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: benchmarks/ is sys.path[0], not the repository
    sys.path.insert(0, str(ROOT))

from benchmarks.common import MiB, Row, median, notes_lines, table_lines  # noqa: E402
from pipeline_lib.cache import cache_path  # noqa: E402
from pipeline_lib.config import Settings, load_settings  # noqa: E402
from pipeline_lib.contracts import CachedAttachment, SourceRef  # noqa: E402
from pipeline_lib.local.samples import sample_task  # noqa: E402
from pipeline_lib.logs import setup_logging  # noqa: E402
from pipeline_lib.records import InputRecord  # noqa: E402
from pipeline_lib.upload.stage import UploadStage  # noqa: E402
from pipeline_lib.upload.storage import OneLakeStorage, lake_storage  # noqa: E402
from pipeline_lib.upload.uploader import Uploader  # noqa: E402

BENCH = "upload"
TARGET = 0.8  # issue #17: the stage at >= 0.8x the plain SDK upload
FileSets = Sequence[tuple[int, int]]  # (count, size)
ONELAKE_SETS: dict[bool, FileSets] = {False: [(200, MiB), (4, 64 * MiB)], True: [(50, MiB), (2, 16 * MiB)]}
LOCAL_SETS: dict[bool, FileSets] = {False: [(200, MiB), (4, 256 * MiB)], True: [(50, MiB), (2, 16 * MiB)]}

# The DFS test server in a child process, driven over stdin: each line asks for the requests it
# served since the last one, by operation, and its CPU seconds so far, and drops its files (held in
# memory). It answers after dropping them, so the next run starts on an empty server.
_SERVER = """
import json, sys, time
from collections import Counter
from pathlib import Path
from pipeline_lib.local.dfs_server import DfsServer  # noqa: E402
with DfsServer(Path(sys.argv[1])) as server:
    print(server.url, server.ca_file, flush=True)
    for line in sys.stdin:
        served = Counter(op for op, _, _ in server.log)
        server.files.clear(); server.log.clear(); server.tokens.clear(); server.append_md5s.clear()
        print(json.dumps({"ops": served, "cpu": time.process_time()}), flush=True)
"""


class DfsProcess:
    """The DFS test server (pipeline_lib/local/dfs_server.py) in its own process."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(folder)],
            cwd=ROOT,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._in, self._out = self._proc.stdin, self._proc.stdout
        first = self._out.readline().split()
        if len(first) != 2:
            self.close()
            raise RuntimeError("the DFS test server did not start")
        self.url, self.ca_file = first

    def reset(self) -> tuple[Counter[str], float]:
        """The requests served since the last reset, by operation, and the server's CPU seconds so
        far; the server's files are dropped."""
        self._in.write("reset\n")
        self._in.flush()
        answer = json.loads(self._out.readline())
        return Counter(answer["ops"]), float(answer["cpu"])

    def close(self) -> None:
        self._in.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def onelake_lake(dfs: DfsProcess) -> dict[str, Any]:
    """The `storage.lake` overrides that point the OneLake backend at the DFS test server."""
    return {
        "backend": "onelake",
        "onelake": {
            "account_url": dfs.url,
            "workspace": "ws",
            "lakehouse": "lh",
            "auth": "token_provider",
            "token_provider": "pipeline_lib.local.dfs_server:any_token",
        },
    }


def onelake_settings(root: Path, dfs: DfsProcess) -> Settings:
    return load_settings(
        "local",
        overrides={
            "storage": {"root": str(root / "var"), "lake": onelake_lake(dfs)},
            "download": {"cache_dir": str(root / "cache")},
        },
    )


def local_settings(root: Path) -> Settings:
    return load_settings(
        "local", overrides={"storage": {"root": str(root / "var")}, "download": {"cache_dir": str(root / "cache")}}
    )


def make_cache(cache_dir: Path, name: str, count: int, size: int) -> list[CachedAttachment]:
    """`count` files of `size` random bytes where the download stage leaves them, and their messages."""
    items = []
    for i in range(count):
        task = sample_task(f"https://files.example.com/{name}/{i}.pdf", f"{name}-{i}.pdf", trace_id=f"bench-{name}-{i}")
        path = cache_path(cache_dir, task.task_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for start in range(0, size, MiB):
                chunk = os.urandom(min(MiB, size - start))
                f.write(chunk)
                digest.update(chunk)
        items.append(
            CachedAttachment(
                task=task.to_dict(),
                cache_uri=path.as_uri(),
                bytes=size,
                sha256=digest.hexdigest(),
                content_type="application/pdf",
                downloaded_at="2026-11-27T00:00:00Z",
            )
        )
    os.sync()  # the timed runs do not pay for writing these back
    return items


def source_of(item: CachedAttachment, cache_dir: Path) -> Path:
    return cache_path(cache_dir, item.download_task.task_id)


@contextmanager
def peak_rss() -> Iterator[list[float | None]]:
    """Yields a one-item list that holds, after the block, the process's peak RSS in MiB during it
    (None where the peak cannot be reset: not Linux)."""
    out: list[float | None] = [None]
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        ok = True
    except OSError:
        ok = False
    yield out
    if ok:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    out[0] = int(line.split()[1]) / 1024


def run_stage(stage: UploadStage, items: list[CachedAttachment]) -> tuple[float, float | None]:
    """Seconds for the stage to upload and route `items`, and the peak RSS meanwhile."""
    records = [InputRecord(None, i.encode(), SourceRef("cached", 0, n)) for n, i in enumerate(items)]
    with peak_rss() as rss:
        start = time.perf_counter()
        routed = list(stage.process(records))
        seconds = time.perf_counter() - start
    outcomes = [m.outcome for r in routed for m in r.messages]
    if outcomes != ["completed"] * len(items):
        problems = [m.message for r in routed for m in r.messages if m.outcome != "completed"][:2]
        raise RuntimeError(f"the upload stage did not complete every file: {problems}")
    return seconds, rss[0]


def sdk_upload(fs: Any, items: list[CachedAttachment], cache_dir: Path, threads: int, chunk_bytes: int) -> float:
    """Seconds for the plain SDK to upload the cached files of `items`, `threads` files at a time."""
    from azure.storage.filedatalake import ContentSettings

    def put(item: CachedAttachment) -> None:
        with open(source_of(item, cache_dir), "rb") as f:
            fs.get_file_client(f"reference/{item.download_task.blob_path}").upload_data(
                f,
                length=item.bytes,
                overwrite=True,
                chunk_size=chunk_bytes,
                max_concurrency=1,
                content_settings=ContentSettings(content_type=item.content_type),
            )

    with ThreadPoolExecutor(threads) as pool:
        start = time.perf_counter()
        list(pool.map(put, items))
        return time.perf_counter() - start


def plain_copy(items: list[CachedAttachment], cache_dir: Path, folder: Path) -> float:
    """Seconds for shutil.copyfile of the cached files of `items` into a fresh `folder`, one thread."""
    folder.mkdir(parents=True)
    start = time.perf_counter()
    for item in items:
        source = source_of(item, cache_dir)
        shutil.copyfile(source, folder / source.name)
    seconds = time.perf_counter() - start
    shutil.rmtree(folder)
    return seconds


def set_name(count: int, size: int) -> str:
    return f"{count} x {size // MiB} MiB" if size >= MiB else f"{count} x {size // 1024} KiB"


def _row(
    lake: str,
    count: int,
    size: int,
    label: str,
    refs: list[float],
    stage: list[float],
    rss: list[float | None],
    runs: int,
    target: float | None,
    notes: str,
    extra: dict[str, float] | None = None,
) -> Row:
    mib = count * size / MiB
    peaks = [p for p in rss if p is not None]
    return Row(
        BENCH,
        f"{lake} {set_name(count, size)}",
        "MiB/s",
        label,
        mib / median(refs),
        mib / median(stage),
        runs,
        target=target,
        peak_rss_mib=max(peaks) if peaks else None,
        notes=notes,
        extra=extra or {},
    )


class _Runs:
    """One side's runs of a OneLake row: wall and CPU seconds, server CPU seconds, requests, peaks.
    (A plain class: a dataclass would need this module in sys.modules, not given when loaded by path.)"""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.cpu: list[float] = []  # this process, all threads
        self.server_cpu: list[float] = []
        self.requests = 0
        self.peaks: list[float | None] = []


def measure_onelake(root: Path, quick: bool, repeat: int) -> list[Row]:
    dfs = DfsProcess(root / "dfs")
    try:
        settings = onelake_settings(root, dfs)
        cache_dir = Path(settings.cache_dir)
        up = settings.upload
        # The stage's storage and the reference's client: one set of settings, two connection pools.
        storage = lake_storage(settings, connection_verify=dfs.ca_file)
        stage = UploadStage(settings, Uploader(settings, storage))
        fs = OneLakeStorage.from_settings(settings, connection_verify=dfs.ca_file).client
        threads = up.concurrency * 1  # stage pool x one append in flight per file (see the docstring)
        _, server_cpu = dfs.reset()

        def run(side: str, runs: _Runs, items: list[CachedAttachment]) -> None:
            nonlocal server_cpu
            cpu = time.process_time()
            if side == "reference":
                seconds, peak = sdk_upload(fs, items, cache_dir, threads, up.chunk_bytes), None
            else:
                seconds, peak = run_stage(stage, items)
            runs.cpu.append(time.process_time() - cpu)
            ops, now = dfs.reset()
            runs.server_cpu.append(now - server_cpu)
            server_cpu = now
            runs.seconds.append(seconds)
            runs.requests += sum(ops.values())
            runs.peaks.append(peak)

        rows = []
        for count, size in ONELAKE_SETS[quick]:
            ref, st = _Runs(), _Runs()
            for n in range(repeat):
                items = make_cache(cache_dir, f"onelake-{count}x{size}-{n}", count, size)
                run("reference", ref, items)  # first: the stage deletes the cache files it uploaded
                run("stage", st, items)
            mib = count * size / MiB
            extra = {}
            for side, r in (("ref", ref), ("stage", st)):
                extra[f"{side} requests/file"] = r.requests / (count * repeat)
                extra[f"{side} client CPU ms/MiB"] = median(r.cpu) * 1000 / mib
                extra[f"{side} server CPU ms/MiB"] = median(r.server_cpu) * 1000 / mib
            notes = (
                f"Reference: azure-storage-file-datalake upload_data of the same files to the same DFS test "
                f"server, {threads} threads, {up.chunk_bytes // MiB} MiB appends, no hashing."
            )
            rows.append(
                _row(
                    "onelake",
                    count,
                    size,
                    f"SDK upload_data x{threads}",
                    ref.seconds,
                    st.seconds,
                    st.peaks,
                    repeat,
                    TARGET,
                    notes,
                    extra,
                )
            )
        return rows
    finally:
        dfs.close()


def measure_local(root: Path, quick: bool, repeat: int) -> list[Row]:
    settings = local_settings(root)
    cache_dir = Path(settings.cache_dir)
    lake = Path(settings.storage.resolve(settings.storage.lake.local_root))
    stage = UploadStage(settings)
    rows = []
    for count, size in LOCAL_SETS[quick]:
        refs, stages, rss = [], [], []
        for run in range(repeat):
            items = make_cache(cache_dir, f"local-{count}x{size}-{run}", count, size)
            refs.append(plain_copy(items, cache_dir, root / "copies"))
            os.sync()
            seconds, peak = run_stage(stage, items)
            stages.append(seconds)
            rss.append(peak)
            shutil.rmtree(lake, ignore_errors=True)  # bounded disk use; every run writes new paths anyway
        notes = "Reference: shutil.copyfile of the same cached files into a fresh folder, one thread."
        rows.append(_row("local lake", count, size, "shutil.copyfile x1", refs, stages, rss, repeat, None, notes))
    return rows


def measure(quick: bool, repeat: int) -> list[Row]:
    """The upload rows: OneLake (DFS test server) against the plain SDK, local lake against a copy."""
    with tempfile.TemporaryDirectory(prefix="xact-bench-upload-") as tmp:
        root = Path(tmp)
        return measure_onelake(root / "onelake", quick, repeat) + measure_local(root / "local", quick, repeat)


def main(argv: Sequence[str] | None = None, out: Callable[[str], None] = print) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sets (50 x 1 MiB, 2 x 16 MiB), one run")
    parser.add_argument("--repeat", type=int, default=None, help="runs per row, median reported (default 3; 1 quick)")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    if repeat < 1:
        parser.error("--repeat must be at least 1")
    setup_logging("WARNING")
    rows = measure(args.quick, repeat)
    for line in table_lines(rows) + [""] + notes_lines(rows):
        out(line)
    for r in rows:
        if r.extra:
            out(f"- {r.bench}, {r.name}: " + ", ".join(f"{k} {v:.2f}" for k, v in r.extra.items()))


if __name__ == "__main__":
    main()
