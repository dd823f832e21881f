"""A real single-node Apache Kafka broker (KRaft, broker + controller) on loopback, from the official
Maven artifacts, for the demo and the tests.

    broker = LocalKafka(home=Path("/tmp/broker"), port=9092, controller_port=9093)
    broker.start()          # resolves jars once, formats storage once, waits until ready
    create_topics(broker.bootstrap, {"xact.events.raw": 3})     # pipeline_lib.kafka_client
    broker.stop()

State lives under `home`: data/, logs/broker.log (log4j2), logs/broker.out (JVM stdout/stderr),
server.properties and broker.pid.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import admin_client
from pipeline_lib.logs import get_logger
from pipeline_lib.spark.jvm import cache_root, check_java, resolve_jars
from pipeline_lib.versions import KAFKA_BROKER_ARTIFACT, KAFKA_VERSION

log = get_logger("kafka")

# Kafka's own runtime closure has slf4j-api but no binding; this one routes it to log4j2.
_SLF4J_BINDING = ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3")
_CORRUPT_MARKERS = (
    "InconsistentClusterIdException",
    "meta.properties",
    "CorruptRecordException",
    "Invalid cluster.id",
    "InvalidConfigurationException: Unable to parse",
    "but this node has",
)


class BrokerError(PipelineError, RuntimeError):
    """The local broker could not start, stop or be reached; the message says why and what to do."""


@dataclass(frozen=True)
class BrokerStatus:
    state: str  # running | stopped | stale
    pid: int | None
    bootstrap: str
    log_file: Path

    def describe(self) -> str:
        pid = f" (pid {self.pid})" if self.pid else ""
        return f"broker {self.state}{pid} on {self.bootstrap}; log: {self.log_file}"


def broker_lib_dir() -> Path:
    return cache_root() / f"kafka-{KAFKA_VERSION}" / "lib"


def ensure_broker_jars() -> Path:
    """The folder of broker jars, fetched from Maven Central on first use."""
    lib = broker_lib_dir()
    if not (lib / ".complete").is_file():
        log.info("fetching Apache Kafka %s jars from Maven Central into %s (first run only)", KAFKA_VERSION, lib)
    resolve_jars([KAFKA_BROKER_ARTIFACT, _SLF4J_BINDING], lib)
    return lib


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster_id() -> str:
    while True:  # Kafka's own ids never start with '-', which would read as a CLI flag
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        out = subprocess.run(["ps", "-p", str(pid), "-o", "command="], capture_output=True, text=True)
        return out.stdout


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited; only its parent has not reaped it yet
        return " Z" not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    except OSError:
        return True


class LocalKafka:
    """Start, stop and inspect one local broker whose state lives under `home`."""

    def __init__(
        self,
        home: Path,
        port: int = 9092,
        controller_port: int = 9093,
        heap: str = "512m",
        start_timeout: float = 90.0,
    ) -> None:
        self.home = Path(home).expanduser()
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None

    @classmethod
    def from_settings(cls, settings) -> LocalKafka:
        lk = settings.local_kafka
        home = Path(lk.home) if lk.home else cache_root() / "broker"
        return cls(home, lk.port, lk.controller_port, lk.heap, lk.start_timeout_seconds)

    # paths
    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def log_file(self) -> Path:
        return self.home / "logs" / "broker.log"

    @property
    def out_file(self) -> Path:
        return self.home / "logs" / "broker.out"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    # state
    def _recorded_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        return _alive(pid) and "kafka.Kafka" in _cmdline(pid) and str(self.properties_file) in _cmdline(pid)

    def status(self) -> BrokerStatus:
        pid = self._recorded_pid()
        if pid is None:
            return BrokerStatus("stopped", None, self.bootstrap, self.log_file)
        if self._is_our_broker(pid):
            return BrokerStatus("running", pid, self.bootstrap, self.log_file)
        return BrokerStatus("stale", pid, self.bootstrap, self.log_file)

    # lifecycle
    def start(self) -> BrokerStatus:
        """Start the broker and wait until it serves metadata; a no-op when it already runs."""
        current = self.status()
        if current.state == "running":
            log.info("broker already running (pid %s) on %s", current.pid, self.bootstrap)
            return current
        if current.state == "stale":
            log.warning("removing stale pid file %s (pid %s is not this broker)", self.pid_file, current.pid)
            self.pid_file.unlink(missing_ok=True)
        for name, port in (("port", self.port), ("controller_port", self.controller_port)):
            if not port_is_free(port):
                raise BrokerError(
                    f"127.0.0.1:{port} is already in use by another process, so the broker cannot listen "
                    f"there. Stop that process, or choose another port with --set local_kafka.{name}=<port>"
                    + (" (and kafka.bootstrap_servers=127.0.0.1:<port>)" if name == "port" else "")
                )
        java = check_java()
        lib = ensure_broker_jars()
        self._write_config()
        if not (self.data_dir / "meta.properties").is_file():
            self._format_storage(java, lib)
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            java,
            f"-Xmx{self.heap}",
            f"-Xms{self.heap}",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            "kafka.Kafka",
            str(self.properties_file),
        ]
        with self.out_file.open("ab") as out:
            self._process = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self.pid_file.write_text(f"{self._process.pid}\n")
        log.info(
            "starting Kafka %s broker (pid %s) on %s; log: %s",
            KAFKA_VERSION,
            self._process.pid,
            self.bootstrap,
            self.log_file,
        )
        self._wait_ready()
        return self.status()

    def stop(self, timeout: float = 30.0) -> BrokerStatus:
        """Stop the broker cleanly (SIGTERM, then SIGKILL after `timeout`); clears a stale pid file."""
        current = self.status()
        if current.state == "stale":
            log.warning("removing stale pid file %s (pid %s is not this broker)", self.pid_file, current.pid)
        if current.state == "running" and current.pid:
            self._signal(current.pid, signal.SIGTERM)
            if not self._wait_exit(current.pid, timeout):
                log.warning("broker pid %s did not stop within %.0fs; killing it", current.pid, timeout)
                self._signal(current.pid, signal.SIGKILL)
                self._wait_exit(current.pid, 10)
        self.pid_file.unlink(missing_ok=True)
        self._process = None
        return self.status()

    def reset(self) -> None:
        """Stop the broker and delete its data: the fix for a corrupt data directory."""
        self.stop()
        import shutil

        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _signal(self, pid: int, sig: signal.Signals) -> None:
        try:
            os.killpg(pid, sig)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def _wait_exit(self, pid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                if self._process.poll() is not None:
                    return True
            elif not _alive(pid):
                return True
            time.sleep(0.2)
        return False

    # setup
    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "logs").mkdir(exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "3",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "5",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            "log.retention.hours": "168",
        }
        self.properties_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.properties").write_text(
            "status = warn\n"
            "appender.file.type = File\n"
            "appender.file.name = FILE\n"
            f"appender.file.fileName = {self.log_file}\n"
            "appender.file.layout.type = PatternLayout\n"
            "appender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = INFO\n"
            "rootLogger.appenderRef.file.ref = FILE\n"
            "logger.state.name = state.change.logger\nlogger.state.level = WARN\n"
        )

    def _format_storage(self, java: str, lib: Path) -> None:
        cmd = [
            java,
            "-Xmx256m",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{lib}/*",
            "kafka.tools.StorageTool",
            "format",
            "-t",
            _cluster_id(),
            "-c",
            str(self.properties_file),
            "--standalone",
        ]
        log.info("formatting broker storage in %s", self.data_dir)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            raise BrokerError(
                f"formatting {self.data_dir} failed: {(proc.stderr or proc.stdout).strip()[-500:]}. "
                "If the folder holds an old or corrupt broker, run `xact-pipeline kafka reset`"
            )

    def _log_tail(self, lines: int = 30) -> str:
        chunks = []
        for path in (self.out_file, self.log_file):
            if path.is_file():
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(chunks)

    def _wait_ready(self) -> None:

        assert self._process is not None
        deadline = time.monotonic() + self.start_timeout
        admin = None
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                tail = self._log_tail()
                hint = (
                    "The data directory looks corrupt or belongs to another cluster: run "
                    "`xact-pipeline kafka reset` to wipe it (topics and messages are lost)."
                    if any(m in tail for m in _CORRUPT_MARKERS)
                    else f"See {self.log_file} and {self.out_file}."
                )
                raise BrokerError(
                    f"broker exited with code {self._process.returncode} during start. {hint}\n{tail[-2000:]}"
                )
            if admin is None:  # a client made before the port listens only logs refusals
                if port_is_free(self.port):
                    time.sleep(0.5)
                    continue
                admin = admin_client(self.bootstrap)
            try:
                metadata = admin.list_topics(timeout=2)
                if metadata.brokers:
                    log.info("broker ready on %s", self.bootstrap)
                    return
            except Exception:  # noqa: BLE001 - not ready yet; the deadline bounds the wait
                pass
            time.sleep(0.5)
        self.stop(timeout=10)
        raise BrokerError(
            f"broker did not become ready on {self.bootstrap} within {self.start_timeout:.0f}s and was stopped. "
            f"See {self.log_file}; raise local_kafka.start_timeout_seconds on a slow machine"
        )
