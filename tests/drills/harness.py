"""The drills' harness: a workload of claim events whose attachments succeed, fail transiently then
succeed, fail for good, have expired or refused URLs, or are slow; the whole pipeline running as a
user runs it (`xact-pipeline run` in a subprocess, killable); and the invariants of
../shared/design.md checked at the end on the tables, the lake, the cache, the topics and the logs.

Every drill prints what it injected and what it checked (pytest -s shows it; `make test-drills`
passes -s), with its counts and wall time.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DeadLetter, DownloadTask
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.sample_server import SampleFileServer, sample_sha256
from pipeline_lib.local.samples import presigned

ROOT = Path(__file__).resolve().parents[2]
SECRET = "DRILLSECRET"  # the fake signature every presigned URL carries: must appear nowhere at rest


@dataclass
class Workload:
    """What the drill produced, by kind, and the file each good task should end as."""

    events: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    expected_sha: dict[str, str] = field(default_factory=dict)  # url path name -> sha256 of the source


def signed(url: str, now: datetime, expires: int = 3600) -> str:
    return presigned(url, now, expires).replace("0123456789abcdef0123456789abcdef", SECRET)


def make_events(
    server: SampleFileServer,
    count: int,
    seed: int,
    *,
    hosts: list[str] | None = None,
    kinds: tuple[str, ...] = ("good", "good", "good", "flaky", "gone", "expired", "refused", "slow"),
    size: int = 24_000,
) -> tuple[list[tuple[str, str]], Workload]:
    """`count` events, each with 1 to 3 attachments of the given kinds (seeded)."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    work = Workload(events=count)
    records = []
    base = server.base_url
    for i in range(count):
        urls = []
        for k in range(rng.randint(1, 3)):
            kind = rng.choice(kinds)
            name = f"d{seed}/e{i}/a{k}.pdf"
            host_base = base if not hosts else hosts[rng.randrange(len(hosts))]
            url = f"{host_base}/files/{name}?size={size}"
            if kind == "flaky":
                url += "&mode=flaky&fail=1&status=503"
            elif kind == "gone":
                url += "&mode=status&status=404"
            elif kind == "slow":
                url += "&latency_ms=800"
            if kind == "refused":
                urls.append(f"ftp://files.example.com/{name}")
            elif kind == "expired":
                urls.append(signed(url, now - timedelta(hours=3)))
            else:
                urls.append(signed(url, now))
            work.kinds[kind] += 1
            if kind in ("good", "flaky", "slow"):
                work.expected_sha[name] = sample_sha256(name, size)
        event = {
            "type": "verisk.claims.property.xn.documentsReceived",
            "version": "1",
            "utcDateTime": (now - timedelta(minutes=i)).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "traceId": f"drill-{seed}-{i}",
            "data": {"assignmentId": f"A{i}", "attachments": urls},
        }
        records.append((event["traceId"], json.dumps(event)))
    return records, work


def pipeline_args(settings: Settings) -> list[str]:
    """--set arguments that point a subprocess at exactly these settings (test topics, roots, tiers)."""
    t, s = settings.topics, settings
    pairs = {
        "kafka.bootstrap_servers": s.kafka.bootstrap_servers,
        "storage.root": s.storage.root,
        "download.cache_dir": s.cache_dir,
        "storage.lake.local_root": s.storage.resolve(s.storage.lake.local_root),
        "retry.delays_seconds": json.dumps(list(s.retry.delays_seconds)),
        "retry.max_task_age_seconds": s.retry.max_task_age_seconds,
        "streaming.trigger_interval_seconds": s.streaming.trigger_interval_seconds,
        "streaming.restart_initial_seconds": s.streaming.restart_initial_seconds,
        "streaming.restart_max_seconds": s.streaming.restart_max_seconds,
        "streaming.status_interval_seconds": s.streaming.status_interval_seconds,
        "download.total_timeout_seconds": s.download.total_timeout_seconds,
        "download.read_timeout_seconds": s.download.read_timeout_seconds,
        "download.breaker.open_seconds": s.download.breaker.open_seconds,
        "download.breaker.failure_threshold": s.download.breaker.failure_threshold,
        "upload.breaker.open_seconds": s.upload.breaker.open_seconds,
        "upload.breaker.failure_threshold": s.upload.breaker.failure_threshold,
        "upload.mode": s.upload.mode,
        "url_policy.allowed_networks": json.dumps(list(s.url_policy.allowed_networks)),
        "url_policy.allow_private_addresses": str(s.url_policy.allow_private_addresses).lower(),
        "spark.shuffle_partitions": s.spark.shuffle_partitions,
        **{f"topics.{n}.name": getattr(t, n).name for n in ("events_raw", "pending", "cached", "results", "dlq")},
    }
    if s.spark.master:
        pairs["spark.master"] = s.spark.master
    args = [f"--set={k}={v}" for k, v in pairs.items()]
    if s.streaming.stage_trigger_seconds:
        args.append(f"--set=streaming.stage_trigger_seconds={json.dumps(dict(s.streaming.stage_trigger_seconds))}")
    if s.spark.extra_conf:  # Spark keys hold dots: the whole mapping in one value
        args.append(f"--set=spark.extra_conf={json.dumps(dict(s.spark.extra_conf))}")
    lake = s.storage.lake
    if lake.backend == "onelake":
        o = lake.onelake
        args += [
            "--set=storage.lake.backend=onelake",
            f"--set=storage.lake.onelake.account_url={o.account_url}",
            f"--set=storage.lake.onelake.workspace={o.workspace}",
            f"--set=storage.lake.onelake.lakehouse={o.lakehouse}",
            f"--set=storage.lake.onelake.auth={o.auth}",
            f"--set=storage.lake.onelake.token_provider={o.token_provider}",
            f"--set=storage.lake.onelake.sdk_retries={o.sdk_retries}",
        ]
    return args


class PipelineProcess:
    """`xact-pipeline <command>` as a subprocess in its own process group (killable as a whole)."""

    def __init__(
        self,
        settings: Settings,
        log: Path,
        command: str = "run",
        extra: list[str] | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
    ) -> None:
        self.log = log
        args = [
            *(wrapper or []),
            sys.executable,
            "-m",
            "pipeline_lib.cli",
            command,
            *pipeline_args(settings),
            *(extra or []),
        ]
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        """kill -9 of the whole process group: the driver JVM and its Python workers together."""
        with _quiet():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self, timeout: float = 90) -> int:
        """SIGTERM to the pipeline's own process, as `kill <pid>` does: it stops its queries and Spark."""
        with _quiet():
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, *_: object) -> bool:
        return kind is ProcessLookupError


def tasks_of(settings: Settings) -> dict[str, DownloadTask]:
    """Every task ingest emitted (first copy of each id)."""
    out: dict[str, DownloadTask] = {}
    for _, value, _ in consume_all(settings, settings.topics.pending.name):
        task = DownloadTask.decode(value or b"")
        if task.attempt == 0 and task.replay_id is None:
            out.setdefault(task.task_id, task)
    return out


def wait_for_tasks(settings: Settings, expected: int, timeout: float = 180, procs=()) -> dict[str, DownloadTask]:
    """Wait until ingest has emitted `expected` distinct tasks."""
    start = time.monotonic()
    while True:
        tasks = tasks_of(settings)
        if len(tasks) >= expected:
            return tasks
        for proc in procs:
            assert proc.alive(), f"the pipeline exited: {proc.log.read_text()[-3000:]}"
        assert time.monotonic() - start < timeout, f"{len(tasks)} of {expected} tasks emitted"
        time.sleep(2)


def read_table(spark, settings: Settings, table: str) -> list:
    try:
        return spark.read.format("delta").load(settings.table_path(table)).collect()
    except Exception:  # noqa: BLE001 - the table appears with the job's first start
        return []


def wait_until_final(spark, settings: Settings, expected_tasks: int, timeout: float, procs=()) -> float:
    """Wait until xact_attachments has a final row (completed or dead) for `expected_tasks` tasks,
    and xact_dlq a dead letter for each dead one (the DLQ table is its own query, which may lag)."""
    start = time.monotonic()
    while True:
        rows = read_table(spark, settings, "attachments")
        final = sum(1 for r in rows if r.status in ("completed", "dead"))
        unlettered = 0
        if final >= expected_tasks and len(rows) == expected_tasks:
            lettered = {r.task_id for r in read_table(spark, settings, "dlq") if r.task_id}
            unlettered = sum(1 for r in rows if r.status == "dead" and r.task_id not in lettered)
            if not unlettered:
                return time.monotonic() - start
        for proc in procs:
            assert proc.alive(), f"the pipeline exited: {proc.log.read_text()[-3000:]}"
        assert time.monotonic() - start < timeout, (
            f"{final} of {expected_tasks} tasks final after {timeout:.0f}s, {unlettered} dead without a row "
            f"in xact_dlq; statuses {Counter(r.status for r in rows)}"
        )
        time.sleep(2)


@dataclass
class Report:
    name: str
    tasks: int = 0
    completed: int = 0
    dead: int = 0
    duplicates: int = 0
    refetches: int = 0
    seconds: float = 0.0
    injected: list[str] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    def print(self) -> None:
        print(f"\n[drill {self.name}] injected: {'; '.join(self.injected)}")
        print(
            f"[drill {self.name}] tasks {self.tasks}, completed {self.completed}, dead {self.dead}, "
            f"duplicates {self.duplicates}, refetches {self.refetches}, wall {self.seconds:.0f}s"
        )
        print(f"[drill {self.name}] checked: {'; '.join(self.checked)}")


def lake_file(settings: Settings, blob_path: str) -> Path:
    return (
        Path(settings.storage.resolve(settings.storage.lake.local_root))
        / settings.storage.lake.files_prefix
        / blob_path
    )


def check_invariants(
    spark, settings: Settings, work: Workload, report: Report, logs: list[Path], lake_reader=None
) -> None:
    """The invariants of ../shared/design.md on the finished run; fills and prints `report`."""
    tasks = tasks_of(settings)
    rows = read_table(spark, settings, "attachments")
    dlq = read_table(spark, settings, "dlq")
    events = read_table(spark, settings, "events")
    report.tasks = len(tasks)
    by_task = Counter(r.task_id for r in rows)
    report.duplicates = sum(n - 1 for n in by_task.values() if n > 1)
    report.duplicates += sum(n - 1 for n in Counter(r.dlq_id for r in dlq).values() if n > 1)
    report.duplicates += sum(n - 1 for n in Counter((r.event_id, r.revision) for r in events).values() if n > 1)
    assert report.duplicates == 0, "a duplicate row at rest"
    assert set(by_task) == set(tasks), "every task has exactly one inventory row"
    report.checked.append("one inventory row per task, no duplicate in any table")

    final = {r.task_id: r for r in rows}
    assert {r.status for r in rows} <= {"completed", "dead"}
    report.completed = sum(1 for r in rows if r.status == "completed")
    report.dead = sum(1 for r in rows if r.status == "dead")
    dead_ids = {r.task_id for r in dlq if r.task_id}
    missing_letters = [t for t, r in final.items() if r.status == "dead" and t not in dead_ids]
    assert not missing_letters, f"dead tasks without a dead letter in xact_dlq: {missing_letters[:3]}"
    report.checked.append("every dead task has its dead letters in xact_dlq")

    for task_id, row in final.items():
        if row.status != "completed":
            continue
        name = unquote(urlsplit(tasks[task_id].url).path.removeprefix("/files/"))
        data = lake_reader(row.blob_path) if lake_reader else lake_file(settings, row.blob_path).read_bytes()
        assert hashlib.sha256(data).hexdigest() == work.expected_sha.get(name, row.sha256) == row.sha256, task_id
    report.checked.append("every completed task's lake file matches its source's sha256")

    leftovers = [p for p in Path(settings.cache_dir).rglob("*") if p.is_file()]
    assert not leftovers, f"cache files left behind: {leftovers[:3]}"
    report.checked.append("no cache file left behind")

    texts = [json.dumps([r.asDict() for r in t], default=str) for t in (rows, dlq, events)]
    texts += [
        (v or b"").decode("utf-8", "replace")
        for topic in (settings.topics.results.name, settings.topics.dlq.name)
        for _, v, _ in consume_all(settings, topic)
    ]
    texts += [log.read_text(errors="replace") for log in logs if log.exists()]
    assert not [t for t in texts if SECRET in t], "a presigned signature at rest, in a log, or on results/DLQ"
    report.checked.append("no signature in any table, log, results or DLQ topic")

    checked_waits = check_retry_waits(settings)
    report.checked.append(f"{checked_waits} forwarded retries each waited at least its tier's delay")
    report.refetches = sum_refetches(logs)


def check_retry_waits(settings: Settings) -> int:
    """Each message the scheduler forwarded waited at least its tier's delay after its failure."""
    delays = settings.retry.delays_seconds
    count = 0
    for topic in (settings.topics.pending.name, settings.topics.cached.name):
        for _, value, headers in consume_all(settings, topic):
            if "xact.retry.forwarded_at" not in headers:
                continue
            body = json.loads(value or b"{}")
            task = body.get("task", body)  # a cached attachment carries its task
            forwarded = datetime.fromisoformat(headers["xact.retry.forwarded_at"].replace("Z", "+00:00"))
            due = datetime.fromisoformat(task["due_at"].replace("Z", "+00:00"))
            assert forwarded >= due, f"forwarded before due: {task['task_id']}"
            history = task.get("history") or []
            if history and history[-1]["attempt"] == task["attempt"] - 1:
                failed = datetime.fromisoformat(history[-1]["at"].replace("Z", "+00:00"))
                assert (forwarded - failed).total_seconds() >= delays[task["attempt"] - 1] - 0.01
            count += 1
    return count


def sum_refetches(logs: list[Path]) -> int:
    import re

    total = 0
    for log in logs:
        if log.exists():
            total += sum(int(n) for n in re.findall(r"\[upload\] batch \d+:.* refetches=(\d+)", log.read_text()))
    return total


def dead_letters(settings: Settings) -> list[DeadLetter]:
    return [DeadLetter.decode(v or b"") for _, v, _ in consume_all(settings, settings.topics.dlq.name)]


def produce_events(settings: Settings, records: list[tuple[str, str]]) -> None:
    produce(settings, settings.topics.events_raw.name, records)


def query_params(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def wait_for_stage_started(log: Path, stage: str, proc, timeout: float = 180) -> None:
    start = time.monotonic()
    while f"[{stage}] started" not in (log.read_text() if log.exists() else ""):
        assert proc.alive(), log.read_text()[-3000:]
        assert time.monotonic() - start < timeout, f"{stage} did not start"
        time.sleep(1)
