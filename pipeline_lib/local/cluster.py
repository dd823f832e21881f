"""A real Spark standalone cluster on loopback, from the installed pyspark: one master and N workers,
each worker a process of its own with its own work and local directories, so each executor is a
separate host as far as the pipeline's code can tell. It stands in for Fabric and Databricks
executors on separate nodes (tests, drills, the scaling benchmark).

    with LocalSparkCluster(tmp / "cluster", workers=2) as cluster:
        xact-pipeline run --set spark.master=<cluster.master_url> ...

`node_local_path`, when given, is a path that each worker (and its executors) sees as a directory of
its own: the worker runs in a private mount namespace with its own folder bind-mounted there (Linux,
as root). It reproduces a node-local cache on a cluster: the same `download.cache_dir` string, a
different disk on each node.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from pipeline_lib.errors import PipelineError
from pipeline_lib.local.broker import free_port
from pipeline_lib.logs import get_logger

log = get_logger("cluster")


class ClusterError(PipelineError):
    """The local Spark cluster could not start; the message says why and where its logs are."""


def spark_home() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("pyspark")
    if spec is None or spec.origin is None:
        raise ClusterError("pyspark is not installed in this environment (make install)")
    return Path(spec.origin).parent


class LocalSparkCluster:
    def __init__(
        self,
        home: Path,
        *,
        workers: int = 2,
        cores_per_worker: int = 1,
        memory_per_worker: str = "1g",
        node_local_path: str | None = None,
        start_timeout: float = 120.0,
    ) -> None:
        self.home = Path(home)
        self.workers, self.cores, self.memory = workers, cores_per_worker, memory_per_worker
        self.node_local_path = node_local_path
        self.start_timeout = start_timeout
        self.port, self.ui_port = free_port(), free_port()
        self._procs: list[subprocess.Popen[bytes]] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def session_conf(self, executor_memory: str = "768m") -> dict[str, str]:
        """Settings (spark.extra_conf) for a driver on this cluster: one executor per worker."""
        return {
            "spark.executor.memory": executor_memory,
            "spark.executor.cores": str(self.cores),
            "spark.cores.max": str(self.cores * self.workers),
            "spark.pyspark.python": sys.executable,  # the venv's interpreter, which has pipeline_lib
        }

    def worker_dir(self, index: int) -> Path:
        return self.home / f"worker-{index}"

    def _env(self, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "PYSPARK_PYTHON": sys.executable,
            "SPARK_NO_DAEMONIZE": "1",
            **extra,
        }
        return env

    def _launch(self, name: str, args: list[str], env: dict[str, str], namespace_bind: Path | None = None) -> None:
        command = [str(spark_home() / "bin" / "spark-class"), *args]
        if namespace_bind is not None and self.node_local_path:
            if not shutil.which("unshare"):
                raise ClusterError("node_local_path needs `unshare` (util-linux) and root: a private mount namespace")
            Path(self.node_local_path).mkdir(parents=True, exist_ok=True)
            namespace_bind.mkdir(parents=True, exist_ok=True)
            script = 'mount --bind "$0" "$1" && shift && exec "$@"'  # $0, $1: the two paths
            command = [
                "unshare",
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                script,
                str(namespace_bind),
                self.node_local_path,
                *command,
            ]
        out = (self.home / f"{name}.log").open("ab")
        self._procs.append(
            subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
            )
        )

    def start(self) -> LocalSparkCluster:
        self.home.mkdir(parents=True, exist_ok=True)
        self._launch(
            "master",
            [
                "org.apache.spark.deploy.master.Master",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--webui-port",
                str(self.ui_port),
            ],
            self._env(),
        )
        for index in range(self.workers):
            folder = self.worker_dir(index)
            (folder / "work").mkdir(parents=True, exist_ok=True)
            (folder / "local").mkdir(parents=True, exist_ok=True)
            env = self._env(SPARK_WORKER_DIR=str(folder / "work"), SPARK_LOCAL_DIRS=str(folder / "local"))
            args = [
                "org.apache.spark.deploy.worker.Worker",
                self.master_url,
                "--host",
                "127.0.0.1",
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--work-dir",
                str(folder / "work"),
                "--webui-port",
                str(free_port()),
            ]
            self._launch(f"worker-{index}", args, env, namespace_bind=folder / "node-local")
        self._wait_for_workers()
        log.info(
            "Spark standalone cluster at %s: %d worker(s) x %d core(s); logs in %s",
            self.master_url,
            self.workers,
            self.cores,
            self.home,
        )
        return self

    def _wait_for_workers(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        alive = 0
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    self.stop()
                    raise ClusterError(f"a cluster process exited with {proc.returncode}; see the logs in {self.home}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=2) as answer:
                    alive = int(json.load(answer).get("aliveworkers", 0))
            except OSError:
                alive = 0
            if alive >= self.workers:
                return
            time.sleep(0.5)
        self.stop()
        raise ClusterError(
            f"{alive} of {self.workers} workers registered within {self.start_timeout:.0f}s; "
            f"see the logs in {self.home}"
        )

    def stop(self) -> None:
        for proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in reversed(self._procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self._procs.clear()

    def __enter__(self) -> LocalSparkCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
