"""`xact-pipeline kafka`: a real broker from the Maven artifacts, started, inspected and stopped."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from pipeline_lib.kafka_client import create_topics, list_topics
from pipeline_lib.local.broker import BrokerError, LocalKafka, ensure_broker_jars, free_port

pytestmark = pytest.mark.integration


def new_broker(tmp_path, **kw) -> LocalKafka:
    return LocalKafka(tmp_path / "broker", free_port(), free_port(), heap="256m", **kw)


def test_start_is_idempotent_status_reports_and_stop_is_clean(tmp_path):
    broker = new_broker(tmp_path)
    assert broker.status().state == "stopped"
    try:
        first = broker.start()
        assert first.state == "running" and first.pid
        assert broker.start().pid == first.pid  # second start: no-op, same process
        assert broker.log_file.is_file() and "Kafka Server started" in broker.log_file.read_text()
        assert create_topics(broker.bootstrap, {"a.b": 3, "c.d": 6}) == ["a.b", "c.d"]
        assert create_topics(broker.bootstrap, {"a.b": 3}) == []  # already there: nothing to do
        assert list_topics(broker.bootstrap) == {"a.b": 3, "c.d": 6}
    finally:
        stopped = broker.stop()
    assert stopped.state == "stopped" and not broker.pid_file.exists()
    with pytest.raises(ProcessLookupError):
        import os

        os.kill(first.pid, 0)
    # Data survives a restart: the second start skips formatting and keeps the topics.
    try:
        broker.start()
        assert list_topics(broker.bootstrap) == {"a.b": 3, "c.d": 6}
    finally:
        broker.stop()


def test_broker_jars_carry_their_scala_library():
    # Spark packages exclude Scala (pyspark ships it); the broker is a plain JVM program and needs it.
    jars = [j.name for j in ensure_broker_jars().glob("*.jar")]
    assert any(j.startswith("scala-library-") for j in jars) and any(j.startswith("kafka_2.13-") for j in jars)


def test_stale_pid_file_is_detected_and_cleared(tmp_path):
    broker = new_broker(tmp_path)
    broker.home.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    broker.pid_file.write_text(f"{dead.pid}\n")
    assert broker.status().state == "stale"
    assert broker.stop().state == "stopped" and not broker.pid_file.exists()


def test_port_in_use_is_refused_before_java_starts(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        broker = LocalKafka(tmp_path / "b", taken.getsockname()[1], free_port())
        with pytest.raises(BrokerError, match=r"already in use by another process.*--set local_kafka.port"):
            broker.start()
    assert broker.status().state == "stopped"


def test_corrupt_data_directory_names_the_fix(tmp_path):
    broker = new_broker(tmp_path, start_timeout=60)
    broker.data_dir.mkdir(parents=True)
    (broker.data_dir / "meta.properties").write_text("version=1\ncluster.id=garbage\nnode.id=7\n")
    with pytest.raises(BrokerError, match="xact-pipeline kafka reset"):
        broker.start()
    assert broker.status().state == "stopped"
    broker.reset()
    assert not broker.data_dir.exists()


def test_broker_that_never_becomes_ready_is_stopped_after_the_timeout(tmp_path):
    broker = new_broker(tmp_path, start_timeout=0.5)
    with pytest.raises(BrokerError, match="did not become ready .* within 0s and was stopped"):
        broker.start()
    assert broker.status().state == "stopped"
