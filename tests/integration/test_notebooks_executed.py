"""The analyst notebooks, executed headless (papermill, as `make notebooks` does) against tables and
topics from a real local pipeline run with failures: every category of the demo (HTTP 404, expired,
refused, malformed) and a task retried once and then completed. The outputs hold the analysis, each
plot cell produced an image, and no JVM warning reaches them."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest

from pipeline_lib.contracts import DownloadTask
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.reports import execute_notebook, notebooks_dir
from pipeline_lib.local.samples import presigned, sample_event
from pipeline_lib.spark.dlq_table import run_dlq_table
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.ingest import run_ingest
from pipeline_lib.spark.progress import flush_metrics
from pipeline_lib.spark.results import run_results
from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
from pipeline_lib.spark.upload import run_upload
from tests.streaming import run_available_now

pytestmark = pytest.mark.integration


def overrides_for(settings) -> list[str]:
    t = settings.topics
    return [
        f"kafka.bootstrap_servers={settings.kafka.bootstrap_servers}",
        f"storage.root={settings.storage.root}",
        f"retry.delays_seconds={json.dumps(list(settings.retry.delays_seconds))}",
        *(f"topics.{n}.name={getattr(t, n).name}" for n in ("events_raw", "pending", "cached", "results", "dlq")),
    ]


def outputs(nb) -> str:
    texts = []
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            texts.append("".join(out.get("text", "")))
            texts.append("".join(out.get("data", {}).get("text/plain", "")))
            texts.append("".join(out.get("data", {}).get("text/html", "")))  # whole tables: plain text elides columns
    return "\n".join(texts)


def cell_output(nb, source_start: str) -> str:
    """The output of the one code cell whose source starts with `source_start`."""
    (cell,) = [c for c in nb["cells"] if c["cell_type"] == "code" and "".join(c["source"]).startswith(source_start)]
    return outputs({"cells": [cell]})


@pytest.fixture(scope="module")
def pipeline_run(spark, kafka_broker, tmp_path_factory, request):
    """One local run with every failure kind and a retried-then-completed task, metrics on."""
    from pipeline_lib.config import load_settings
    from pipeline_lib.kafka_client import create_topics
    from pipeline_lib.local.sample_server import SampleFileServer

    root = tmp_path_factory.mktemp("nbrun")
    server = SampleFileServer().start()
    request.addfinalizer(server.stop)
    s = load_settings(
        "local",
        overrides={
            "kafka": {"bootstrap_servers": kafka_broker.bootstrap},
            "storage": {"root": str(root / "var")},
            "retry": {"delays_seconds": [1, 2]},
            "metrics": {"enabled": True, "flush_seconds": 1},
            "topics": {
                n: {"name": f"nb.{n}", "partitions": p}
                for n, p in (("events_raw", 2), ("pending", 2), ("cached", 2), ("results", 2), ("dlq", 2))
            },
        },
    )
    create_topics(kafka_broker.bootstrap, s.topic_partitions())
    now = datetime.now(UTC)
    good = sample_event(1, server.base_url, trace_prefix="nb", attachments=2)
    failing = sample_event(2, server.base_url, trace_prefix="nb", attachments=0)
    failing["data"] = {
        "assignmentId": "A2",
        "attachments": [
            f"{server.base_url}/files/nb/gone.pdf?mode=status&status=404",
            f"{server.base_url}/files/nb/retried.pdf?mode=flaky&fail=1&status=503",
            presigned(f"{server.base_url}/files/nb/old.pdf", now - timedelta(hours=3)),
            "ftp://files.example.com/refused.pdf",
        ],
    }
    produce(
        s,
        s.topics.events_raw.name,
        [("nb-1", json.dumps(good)), ("nb-2", json.dumps(failing)), ("nb-bad", "not an event")],
    )
    for start in (run_ingest, run_download, run_upload, run_results, run_dlq_table):
        run_available_now(start, spark, s)
    time.sleep(2.5)  # the retried task's tier (1 s) has passed
    for start in (run_retry_scheduler, run_download, run_upload, run_results):
        run_available_now(start, spark, s)
    flush_metrics(spark)
    retried = next(
        DownloadTask.decode(v) for _, v, _ in consume_all(s, s.topics.pending.name) if b"retried.pdf" in (v or b"")
    )
    return s, retried


def assert_axis_range(described: str, hours: float | None) -> None:
    """A plot cell shows its Chart's description (pipeline_lib/charts.py): a time chart spans the
    notebook's `hours` exactly (the window, in whole buckets), a bar chart has whole-number ticks."""
    import re

    span = re.search(r"(\d{4}-\d\d-\d\d \d\d:\d\d) to (\d{4}-\d\d-\d\d \d\d:\d\d) UTC", described)
    if span is None:
        assert "bar group(s)" in described, described
        return
    start, end = (datetime.strptime(t, "%Y-%m-%d %H:%M") for t in span.groups())
    assert (end - start).total_seconds() == hours * 3600, described


def run_notebook(name, settings, tmp_path, **parameters):
    out = execute_notebook(
        notebooks_dir() / name, tmp_path, {"env": "local", "overrides": overrides_for(settings), **parameters}
    )
    nb = json.loads(out.read_text())
    assert out.with_suffix(".html").exists()
    hours = parameters.get(
        "hours", {"pipeline_health.ipynb": 24, "dlq_analysis.ipynb": 168, "ingest_overview.ipynb": 24}.get(name)
    )
    for cell in nb["cells"]:
        if "plot" in cell["metadata"].get("tags", []):
            assert any("image/png" in o.get("data", {}) for o in cell["outputs"]), "".join(cell["source"])
            assert_axis_range(outputs({"cells": [cell]}), hours)
    text = outputs(nb)
    assert "WARN" not in text and "WARNING:" not in text, text[:2000]
    return nb, text


def test_the_dlq_notebook_summarises_drills_into_a_retried_task_and_dry_runs_a_replay(pipeline_run, tmp_path):
    settings, retried = pipeline_run
    nb, text = run_notebook(
        "dlq_analysis.ipynb", settings, tmp_path, task_id=retried.task_id, categories=["http_permanent"]
    )
    for category in ("http_permanent", "expired", "policy", "malformed"):
        assert category in text
    assert "would replay 1 dead letter(s)" in text  # the 404, selected by category
    assert "dry run only" in text
    journey = cell_output(nb, "journey(")
    assert "retrying" in journey and "completed" in journey and "forwarded by the retry scheduler" in journey
    assert "SECRET" not in text and "X-Amz-Signature=0123" not in text


def test_the_health_notebook_opens_with_a_verdict_per_stage_and_shows_the_latency(pipeline_run, tmp_path):
    settings, _ = pipeline_run
    nb, text = run_notebook("pipeline_health.ipynb", settings, tmp_path)
    for stage in ("ingest", "download", "upload", "results", "dlq-table", "retry-scheduler"):
        assert stage in text
    assert "p95" in text and "nb.pending" in text
    (first,) = [c for c in nb["cells"] if c["cell_type"] == "code" and c["outputs"]][:1]
    assert "verdicts" in first["metadata"].get("tags", [])  # the verdicts are the first thing shown
    verdicts = cell_output(nb, "verdict_frame(")
    lines = [line.split() for line in verdicts.splitlines()]
    stages = {words[0]: words[1] for words in lines if len(words) > 1 and words[1] in ("ok", "warn", "failing")}
    assert set(stages) == {"ingest", "download", "upload", "results", "dlq-table", "retry-scheduler"}, verdicts


def test_the_ingest_overview_notebook_runs(pipeline_run, tmp_path):
    settings, _ = pipeline_run
    _, text = run_notebook("ingest_overview.ipynb", settings, tmp_path)
    assert "documentsReceived" in text or "estimatePackageReceived" in text or "firstNoticeOfLossReceived" in text
