"""The pipeline on a real multi-worker Spark cluster: a standalone master and 2 workers from the
installed pyspark, each worker a process of its own with its own work and local directories (and,
in the second drill, its own disk at the cache path), standing in for Fabric and Databricks
executors on separate nodes. The driver is `xact-pipeline run`, as a user runs it.

The shared-cache and node-local-cache drills run the decoupled path (upload.mode decoupled: every
file crosses xact.downloads.cached, so an upload may run on the other worker); the last drill
runs the combined pass with OneLake down, so what it hands over to the upload stage crosses too."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline_lib.local.cluster import LocalSparkCluster
from pipeline_lib.local.dfs_server import DfsServer
from tests.drills.harness import (
    PipelineProcess,
    Report,
    check_invariants,
    make_events,
    produce_events,
    wait_for_stage_started,
    wait_for_tasks,
    wait_until_final,
)


def _run_on_cluster(
    spark,
    drill_settings,
    sample_server,
    tmp_path,
    name,
    node_local: bool,
    seed: int,
    dfs: DfsServer | None = None,
    outage_seconds: float = 0,
):
    cache = str(tmp_path / "cache")
    with LocalSparkCluster(tmp_path / "cluster", workers=2, node_local_path=cache if node_local else None) as cluster:
        lake: dict = {"upload__mode": "decoupled"}
        env = None
        if dfs is not None:
            env = {"REQUESTS_CA_BUNDLE": dfs.ca_file}
            lake = {
                "upload__mode": "combined",
                "upload__breaker__open_seconds": 10,
                "upload__breaker__failure_threshold": 3,
                "storage__lake__backend": "onelake",
                "storage__lake__onelake__account_url": dfs.url,
                "storage__lake__onelake__workspace": "ws",
                "storage__lake__onelake__lakehouse": "lh",
                "storage__lake__onelake__auth": "token_provider",
                "storage__lake__onelake__token_provider": "pipeline_lib.local.dfs_server:any_token",
                "storage__lake__onelake__sdk_retries": 0,
            }
        executor_env = {f"spark.executorEnv.{k}": v for k, v in (env or {}).items()}
        s = drill_settings(
            spark__master=cluster.master_url,
            spark__extra_conf={**cluster.session_conf(), **executor_env},
            download__cache_dir=cache,
            kafka__min_partitions=4,
            **lake,
        )
        records, work = make_events(sample_server, 16, seed=seed, kinds=("good", "good", "flaky", "gone"))
        report = Report(name)
        report.injected = [
            f"2 workers x 1 core, {'one cache disk per worker' if node_local else 'a shared cache'}",
            f"{work.events} events",
            ", ".join(f"{n} {k}" for k, n in sorted(work.kinds.items())),
        ]
        log = tmp_path / "run.log"
        started = time.monotonic()
        run = PipelineProcess(s, log, env=env)
        try:
            if dfs is not None:  # down from the first download on
                wait_for_stage_started(log, "download", run)
                dfs.outage(outage_seconds)
                report.injected.append(f"OneLake (the DFS test server) answering 503 for {outage_seconds:.0f} s")
            produce_events(s, records)
            expected = sum(work.kinds.values())
            wait_for_tasks(s, expected, timeout=300, procs=[run])
            wait_until_final(spark, s, expected, timeout=480, procs=[run])
            report.seconds = time.monotonic() - started
        finally:
            code = run.terminate()
        assert code in (0, 75), log.read_text()[-3000:]
        executors = {p.parent.name for p in (tmp_path / "cluster").glob("worker-*/work/app-*/*/stderr")}
        assert len(executors) >= 2, "both workers ran executors"
        leftovers = []
        if node_local:  # each worker's own disk: a file downloaded on one host and uploaded from the other stays
            leftovers = [p for p in (tmp_path / "cluster").glob("worker-*/node-local/**/*") if p.is_file()]
            report.injected.append(f"{len(leftovers)} cache file(s) left on the worker that downloaded them")
            for p in leftovers:
                p.unlink()
        lake_reader = None
        if dfs is not None:
            files = dfs.files

            def lake_reader(blob_path: str) -> bytes:
                return bytes(files[f"ws/lh.Lakehouse/Files/xact/attachments/{blob_path}"].data)

        check_invariants(spark, s, work, report, [log], lake_reader=lake_reader)
        report.print()
        return report, leftovers


def test_on_a_cluster_with_a_shared_cache_every_task_completes_once(spark, drill_settings, sample_server, tmp_path):
    report, _ = _run_on_cluster(spark, drill_settings, sample_server, tmp_path, "cluster, shared cache", False, 11)
    assert report.refetches == 0 and report.completed and report.dead


def test_with_one_cache_per_worker_every_task_still_completes_by_refetching(
    spark, drill_settings, sample_server, tmp_path
):
    """A user's mistake: a node-local cache path. Uploads on the other worker find no file and
    download it again there (no attempt used), so every task still completes; the cost is counted."""
    report, leftovers = _run_on_cluster(
        spark, drill_settings, sample_server, tmp_path, "cluster, node-local caches", True, 12
    )
    # Each copy left behind is a file uploaded from the other worker, after a refetch there; a
    # refetch may also fail (the source's breaker open on that worker) and leave nothing.
    assert 0 < len(leftovers) <= report.refetches, (len(leftovers), report.refetches)
    assert Path(tmp_path / "cache").exists()


def test_the_combined_pass_hands_over_to_the_upload_stage_while_onelake_is_down_across_two_workers(
    spark, drill_settings, sample_server, tmp_path
):
    """The combined pass with one cache disk per worker and OneLake down for its first minute: the
    files it could not upload go to xact.downloads.cached; an upload on the other worker finds no
    file and downloads it again there, so every task still completes once OneLake is back."""
    (tmp_path / "dfs").mkdir()
    with DfsServer(tmp_path / "dfs") as dfs:
        report, leftovers = _run_on_cluster(
            spark,
            drill_settings,
            sample_server,
            tmp_path,
            "cluster, combined pass, OneLake down",
            True,
            13,
            dfs=dfs,
            outage_seconds=60,
        )
    assert report.completed and len(leftovers) <= report.refetches, (len(leftovers), report.refetches)
