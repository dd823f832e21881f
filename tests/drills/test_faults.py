"""Crash and fault drills: scripted, seeded and repeatable. Each kills or breaks one part while the
pipeline runs, lets it come back, and checks every invariant afterwards (tests/drills/harness.py).

- kill -9 of each per-stage job at seeded points mid-stream, then of the `run` driver, each restarted;
- the broker stopped for 60 s mid-run: the queries recover with no manual restart;
- the lake unwritable for a while: OneLake (the DFS test server answering 503) and the local lake
  (a tmpfs remounted read-only in the run's own mount namespace: root cannot write to it either);
- the cache filesystem full: a small tmpfs under the cache path (ENOSPC is a transient failure);
- a source host down for longer than its circuit breaker's window: its tasks wait for the breaker
  without using attempts and complete once it is back; another host's tasks are unaffected.
"""

from __future__ import annotations

import random
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from pipeline_lib.local.dfs_server import DfsServer
from pipeline_lib.local.sample_server import SampleFileServer
from tests.drills.harness import (
    PipelineProcess,
    Report,
    check_invariants,
    make_events,
    produce_events,
    read_table,
    wait_for_stage_started,
    wait_for_tasks,
    wait_until_final,
)

STAGES = ("ingest", "download", "upload", "retry-scheduler", "results", "dlq-table")
MANY_TIERS = [1, 2, 4, 8, 16]  # outages outlast short tiers: waits for breakers, not attempts, carry them


def results_of(settings) -> list[dict]:
    import json

    from pipeline_lib.kafka_client import consume_all

    return [json.loads(v or b"{}") for _, v, _ in consume_all(settings, settings.topics.results.name)]


def _expected(work) -> int:
    return sum(n for k, n in work.kinds.items() if k != "refused")


def test_kill_9_of_each_stage_job_mid_stream_then_restart(spark, drill_settings, sample_server, tmp_path):
    seed = 20261127
    rng = random.Random(seed)
    s = drill_settings()
    records, work = make_events(sample_server, 14, seed=seed, kinds=("good", "good", "flaky", "gone", "slow"))
    report = Report(f"kill -9 of each stage job (seed {seed})")
    logs = {stage: tmp_path / f"{stage}.log" for stage in STAGES}
    started = time.monotonic()
    procs = {stage: PipelineProcess(s, logs[stage], command=stage) for stage in STAGES}
    try:
        produce_events(s, records[: len(records) // 2])
        schedule = sorted((rng.uniform(25, 75), stage) for stage in STAGES)
        produced_rest = False
        for at, stage in schedule:
            while time.monotonic() - started < at:
                time.sleep(0.5)
            if not produced_rest and at > 45:
                produce_events(s, records[len(records) // 2 :])
                produced_rest = True
            procs[stage].kill9()
            report.injected.append(f"kill -9 {stage} at {at:.0f}s")
            time.sleep(rng.uniform(1, 4))
            procs[stage] = PipelineProcess(s, logs[stage], command=stage)
        if not produced_rest:
            produce_events(s, records[len(records) // 2 :])
        wait_for_tasks(s, _expected(work), timeout=300, procs=procs.values())
        wait_until_final(spark, s, _expected(work), timeout=600, procs=procs.values())
        report.seconds = time.monotonic() - started
    finally:
        for proc in procs.values():
            proc.terminate(60)
    check_invariants(spark, s, work, report, list(logs.values()))
    report.print()


def test_kill_9_of_the_run_driver_twice_then_restart(spark, drill_settings, sample_server, tmp_path):
    seed = 7
    rng = random.Random(seed)
    s = drill_settings()
    records, work = make_events(sample_server, 20, seed=seed, kinds=("good", "good", "flaky", "gone", "slow"))
    report = Report(f"kill -9 of the run driver (seed {seed})")
    log = tmp_path / "run.log"
    started = time.monotonic()
    produce_events(s, records)
    run = PipelineProcess(s, log)
    try:
        for _ in range(2):
            at = rng.uniform(30, 50)
            time.sleep(at)
            run.kill9()
            report.injected.append(f"kill -9 of the run driver after {at:.0f}s more")
            time.sleep(2)
            run = PipelineProcess(s, log)
        wait_for_tasks(s, _expected(work), timeout=300, procs=[run])
        wait_until_final(spark, s, _expected(work), timeout=600, procs=[run])
        report.seconds = time.monotonic() - started
    finally:
        run.terminate()
    check_invariants(spark, s, work, report, [log])
    report.print()


def test_the_broker_down_for_60_seconds_mid_run_recovers_without_a_person(
    spark, kafka_broker, drill_settings, sample_server, tmp_path
):
    s = drill_settings()
    records, work = make_events(sample_server, 16, seed=3, kinds=("good", "good", "flaky", "gone"))
    report = Report("broker down 60 s")
    log = tmp_path / "run.log"
    started = time.monotonic()
    produce_events(s, records[:8])
    run = PipelineProcess(s, log)
    try:
        wait_for_tasks(s, 3, timeout=240, procs=[run])
        kafka_broker.stop()
        down = time.monotonic()
        report.injected.append(f"broker stopped at {down - started:.0f}s")
        time.sleep(60)
        kafka_broker.start()
        report.injected.append(f"broker started again after {time.monotonic() - down:.0f}s")
        produce_events(s, records[8:])
        wait_for_tasks(s, _expected(work), timeout=400, procs=[run])
        wait_until_final(spark, s, _expected(work), timeout=600, procs=[run])
        report.seconds = time.monotonic() - started
    finally:
        if kafka_broker.status().state != "running":
            kafka_broker.start()
        run.terminate()
    text = log.read_text()
    report.injected.append(
        f"the supervisor saw {text.count('failed (')} query failure(s), {text.count('cannot reach Kafka')} "
        f"unreachable check(s) and {text.count('restarted from its checkpoint')} restart(s)"
    )
    check_invariants(spark, s, work, report, [log])
    report.print()


def test_the_onelake_lake_answering_503_for_a_while_loses_nothing(spark, drill_settings, sample_server, tmp_path):
    (tmp_path / "dfs").mkdir()
    with DfsServer(tmp_path / "dfs") as dfs:
        s = drill_settings(
            retry__delays_seconds=MANY_TIERS,
            upload__breaker__open_seconds=10,
            upload__breaker__failure_threshold=3,
            storage__lake__backend="onelake",
            storage__lake__onelake__account_url=dfs.url,
            storage__lake__onelake__workspace="ws",
            storage__lake__onelake__lakehouse="lh",
            storage__lake__onelake__auth="token_provider",
            storage__lake__onelake__token_provider="pipeline_lib.local.dfs_server:any_token",
            storage__lake__onelake__sdk_retries=0,
        )
        records, work = make_events(sample_server, 16, seed=4, kinds=("good", "good", "flaky"))
        report = Report("OneLake answering 503")
        log = tmp_path / "run.log"
        started = time.monotonic()
        run = PipelineProcess(s, log, env={"REQUESTS_CA_BUNDLE": dfs.ca_file})
        try:
            wait_for_stage_started(log, "upload", run)
            dfs.outage(45)
            report.injected.append("every DFS call answered 503 ServerBusy for 45 s, from the first events on")
            produce_events(s, records)
            wait_for_tasks(s, _expected(work), timeout=300, procs=[run])
            wait_until_final(spark, s, _expected(work), timeout=600, procs=[run])
            report.seconds = time.monotonic() - started
        finally:
            run.terminate()
        refused = sum(1 for op, _, _ in dfs.log if op == "create")
        report.injected.append(f"{refused} file creations tried in all")

        def lake_reader(blob_path: str) -> bytes:
            return bytes(dfs.files[f"ws/lh.Lakehouse/Files/xact/attachments/{blob_path}"].data)

        check_invariants(spark, s, work, report, [log], lake_reader=lake_reader)
        report.print()
        assert report.completed == _expected(work) and report.dead == 0


def _namespace(mounts: list[tuple[str, str]]) -> list[str]:
    """A wrapper that runs the command in a private mount namespace with tmpfs mounts (path, size)."""
    script = " && ".join(f'mount -t tmpfs -o size={size} tmpfs "{path}"' for path, size in mounts)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", f'{script} && exec "$@"', "sh"]


def _in_namespace(pid: int, *command: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["nsenter", "-t", str(pid), "-m", *command], capture_output=True, check=True)


def test_the_local_lake_read_only_for_a_while_loses_nothing(spark, drill_settings, sample_server, tmp_path):
    s = drill_settings(
        retry__delays_seconds=MANY_TIERS, upload__breaker__open_seconds=10, upload__breaker__failure_threshold=3
    )
    lake_root = Path(s.storage.resolve(s.storage.lake.local_root))
    lake_root.mkdir(parents=True, exist_ok=True)
    records, work = make_events(sample_server, 16, seed=5, kinds=("good", "good", "flaky"))
    report = Report("local lake read-only")
    log = tmp_path / "run.log"
    started = time.monotonic()
    run = PipelineProcess(s, log, wrapper=_namespace([(str(lake_root), "256m")]))
    try:
        wait_for_stage_started(log, "upload", run)
        _in_namespace(run.pid, "mount", "-o", "remount,ro", str(lake_root))
        report.injected.append("the lake's filesystem remounted read-only for 45 s (EROFS, even for root)")
        produce_events(s, records)
        time.sleep(45)
        _in_namespace(run.pid, "mount", "-o", "remount,rw", str(lake_root))
        wait_for_tasks(s, _expected(work), timeout=300, procs=[run])
        wait_until_final(spark, s, _expected(work), timeout=600, procs=[run])
        report.seconds = time.monotonic() - started

        def lake_reader(blob_path: str) -> bytes:
            path = lake_root / s.storage.lake.files_prefix / blob_path
            return _in_namespace(run.pid, "cat", str(path)).stdout

        check_invariants(spark, s, work, report, [log], lake_reader=lake_reader)
    finally:
        run.terminate()
    report.print()
    assert report.completed == _expected(work) and report.dead == 0


def test_a_full_cache_filesystem_gives_transient_failures_and_no_partial_file(
    spark, drill_settings, sample_server, tmp_path
):
    s = drill_settings(retry__delays_seconds=MANY_TIERS)
    cache = Path(s.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    records, work = make_events(sample_server, 12, seed=6, kinds=("good",), size=220_000)
    report = Report("cache filesystem full")
    report.injected.append("the cache on a 700 KiB tmpfs: three 220 KB files at most at a time")
    log = tmp_path / "run.log"
    filler = cache / "drill-filler"  # outside the cache's task folders: the janitor never touches it
    started = time.monotonic()
    run = PipelineProcess(s, log, wrapper=_namespace([(str(cache), "700k")]))
    try:
        # Fill the cache before the first download, so that it is full whatever the timing (with
        # three files' room, a fast upload may empty it before it fills); free it once a download
        # has failed with disk_full. disk_full uses no attempt, so the wait costs none.
        wait_for_stage_started(log, "download", run)
        _in_namespace(run.pid, "dd", "if=/dev/zero", f"of={filler}", "bs=1024", "count=560")
        produce_events(s, records)
        deadline = time.monotonic() + 180
        while not any(r.get("error_category") == "disk_full" for r in results_of(s)):
            assert run.alive(), log.read_text()[-3000:]
            assert time.monotonic() < deadline, "no download failed with disk_full while the cache was full"
            time.sleep(2)
        _in_namespace(run.pid, "rm", str(filler))
        report.injected.append(
            f"a 560 KiB filler left 140 KiB free until a download failed ({time.monotonic() - started:.0f} s)"
        )
        wait_for_tasks(s, _expected(work), timeout=300, procs=[run])
        wait_until_final(spark, s, _expected(work), timeout=600, procs=[run])
        report.seconds = time.monotonic() - started
        inside = _in_namespace(run.pid, "find", str(cache), "-type", "f").stdout.decode().split()
        assert inside == [], f"files left in the cache: {inside}"
    finally:
        run.terminate()
    full = read_table(spark, s, "dlq")
    assert not full, "a full cache is transient: nothing dead"
    full_results = [r for r in results_of(s) if r.get("error_category") == "disk_full"]
    assert full_results, "the cache did fill up: some downloads failed with disk_full"
    report.injected.append(f"{len(full_results)} download(s) failed with disk_full and were retried")
    check_invariants(spark, s, work, report, [log])
    report.print()
    assert report.completed == _expected(work)


def test_a_source_host_down_longer_than_its_breaker_window(spark, drill_settings, tmp_path):
    """Its tasks wait for the breaker's probes without using attempts, and complete once it is back;
    another host's tasks complete meanwhile."""
    s = drill_settings(
        retry__delays_seconds=[1, 2, 4, 8, 16, 32],
        download__breaker__open_seconds=15,
        download__breaker__failure_threshold=3,
        url_policy__allowed_networks=["127.0.0.1/32", "::1/128"],
    )
    other = SampleFileServer().start()
    down_host = SampleFileServer().start()
    port = int(down_host.base_url.rsplit(":", 1)[1])
    try:
        a_records, a_work = make_events(down_host, 8, seed=8, kinds=("good",))
        b_records, b_work = make_events(other, 8, seed=9, kinds=("good",))
        # The same server process serves both names; the breaker is per host name, so "localhost" is
        # a host of its own: the one that goes down.
        a_records = [(k, v.replace("127.0.0.1", "localhost")) for k, v in a_records]
        report = Report("source host down 60 s, breaker window 15 s")
        log = tmp_path / "run.log"
        started = time.monotonic()
        run = PipelineProcess(s, log)
        try:
            wait_for_stage_started(log, "download", run)
            down_host.stop()
            down_at = time.monotonic()
            report.injected.append(f"host localhost:{port} down for 60 s; 127.0.0.1 up")
            produce_events(s, a_records + b_records)
            time.sleep(60)
            down_host = SampleFileServer(port=port).start()
            up_at, up_wall = time.monotonic(), datetime.now(UTC).replace(tzinfo=None)
            expected = _expected(a_work) + _expected(b_work)
            wait_for_tasks(s, expected, timeout=300, procs=[run])
            wait_until_final(spark, s, expected, timeout=600, procs=[run])
            report.seconds = time.monotonic() - started
        finally:
            run.terminate()
        rows = read_table(spark, s, "attachments")
        during = [r for r in rows if "localhost" not in (r.attachment_url or "") and r.status == "completed"]
        assert len(during) == _expected(b_work)
        assert all(r.uploaded_at < up_wall for r in during), "the other host's tasks completed while localhost was down"
        work = a_work
        work.kinds.update(b_work.kinds)
        work.expected_sha.update(b_work.expected_sha)
        check_invariants(spark, s, work, report, [log])
        report.injected.append(f"outage {up_at - down_at:.0f}s")
        report.print()
        assert report.completed == expected and report.dead == 0
    finally:
        other.stop()
        down_host.stop()
