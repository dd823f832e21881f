"""The metrics recorder's background thread (pipeline_lib/spark/metrics.py) outlives no session."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from pipeline_lib.config import load_settings
from pipeline_lib.spark.metrics import MetricsRecorder


def test_the_recorder_ends_quietly_once_its_session_has_stopped(tmp_path, caplog):
    settings = load_settings("local", overrides={"storage": {"root": str(tmp_path)}, "metrics": {"flush_seconds": 1}})
    stopped = SimpleNamespace(_sc=SimpleNamespace(_jsc=None))  # a classic session after spark.stop()
    recorder = MetricsRecorder(stopped, settings)  # type: ignore[arg-type]
    recorder.buffer.add({"stage": "download", "batch_id": 1})
    with caplog.at_level(logging.WARNING, logger="xact.metrics"):
        recorder.start()
        recorder._thread.join(10)
    assert not recorder._thread.is_alive()
    assert [r.getMessage() for r in caplog.records] == [
        "the Spark session stopped: 1 metric row(s) were not recorded"
    ]  # one line, not one failed write per flush interval
    recorder.stop()  # and stopping it later writes nothing
    assert not (tmp_path / "tables").exists()


def test_a_session_without_a_context_here_spark_connect_is_never_taken_for_stopped(tmp_path):
    settings = load_settings("local", overrides={"storage": {"root": str(tmp_path)}})
    assert not MetricsRecorder(SimpleNamespace(), settings)._session_stopped()  # type: ignore[arg-type]
    assert not MetricsRecorder(SimpleNamespace(_sc=SimpleNamespace(_jsc=object())), settings)._session_stopped()  # type: ignore[arg-type]
