"""Every stage end to end on the runtimes the users have: Spark 3.5 with Delta 3.2 (Fabric Runtime
1.3, Databricks 15.4/16.4 LTS) and Spark 4.0 with Delta 4.0 (Databricks 17.3 LTS, Fabric Runtime 2.0),
with the matching open-source Kafka connector and Delta from Maven Central (versions.RUNTIMES).

`make test-compat` runs it in one venv per runtime; the main suite, on the pinned Spark, covers the
same ground in depth and skips it. One pass: ingest, download, upload, results and the DLQ table;
then the retry scheduler forwards the task that failed once, and it completes.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

pyspark = pytest.importorskip("pyspark")

from pipeline_lib.versions import SPARK_VERSION  # noqa: E402 - after the importorskip

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(pyspark.__version__ == SPARK_VERSION, reason="the main suite covers the pinned Spark"),
]


def test_every_stage_runs_on_this_runtime(spark, make_kafka_settings, sample_server):
    from pipeline_lib.kafka_client import consume_all, produce
    from pipeline_lib.spark.dlq_table import run_dlq_table
    from pipeline_lib.spark.download import run_download
    from pipeline_lib.spark.ingest import run_ingest
    from pipeline_lib.spark.results import run_results
    from pipeline_lib.spark.retry_scheduler import run_retry_scheduler
    from pipeline_lib.spark.upload import run_upload
    from tests.streaming import run_available_now

    s = make_kafka_settings(retry__delays_seconds=[1, 2], metrics__enabled=True, metrics__flush_seconds=1)
    urls = [
        sample_server.url("smoke/a.pdf", 70_000),
        sample_server.url("smoke/b.jpg", 5_000),
        f"{sample_server.base_url}/files/smoke/gone.pdf?mode=status&status=404",
        f"{sample_server.base_url}/files/smoke/flaky.pdf?mode=flaky&fail=1&status=503",
    ]
    event = {
        "type": "verisk.claims.property.xn.documentsReceived",
        "traceId": "SMOKE-1",
        "utcDateTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": {"assignmentId": "A1", "attachments": urls},
    }
    produce(s, s.topics.events_raw.name, [("SMOKE-1", json.dumps(event)), ("SMOKE-bad", "not an event")])

    def run(start):
        began = time.monotonic()
        run_available_now(start, spark, s)
        print(f"{start.__name__} on Spark {pyspark.__version__}: {time.monotonic() - began:.1f} s")

    for start in (run_ingest, run_download, run_upload, run_results, run_dlq_table):
        run(start)
    time.sleep(2.5)  # the failed-once task's first tier (1 s) is due
    for start in (run_retry_scheduler, run_download, run_upload, run_results):
        run(start)

    rows = spark.read.format("delta").load(s.table_path("attachments")).collect()
    inventory = {r.attachment_url.split("?")[0].rsplit("/", 1)[-1]: r for r in rows}
    completed = sorted(name for name, r in inventory.items() if r.status == "completed")
    assert completed == ["a.pdf", "b.jpg", "flaky.pdf"], inventory
    assert inventory["gone.pdf"].status == "dead" and inventory["gone.pdf"].http_status == 404
    assert inventory["flaky.pdf"].attempt == 1  # failed once, forwarded when due, then completed
    dead = spark.read.format("delta").load(s.table_path("dlq")).collect()
    assert sorted(r.category for r in dead) == ["http_permanent", "malformed"]  # the 404 and the bad event
    events = spark.read.format("delta").load(s.table_path("events")).collect()
    assert [r.trace_id for r in events] == ["SMOKE-1"]
    forwarded = [h for _, _, h in consume_all(s, s.topics.pending.name) if "xact.retry.forwarded_at" in h]
    assert len(forwarded) == 1 and forwarded[0]["xact.retry.forwarded_at"] >= forwarded[0]["xact.retry.due_at"]
