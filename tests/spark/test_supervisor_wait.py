"""A stop waits for the stopped queries' cancelled tasks to end, by the task scheduler's live count
(not the asynchronous status store), so a session stopped right after has no task left to report
into its closed result pool: the RejectedExecutionException a clean CI run once printed."""

from __future__ import annotations

import threading
import time

import pytest

from pipeline_lib.spark.supervisor import Supervisor

pytestmark = pytest.mark.integration


def test_the_wait_for_cancelled_tasks_ends_only_when_the_scheduler_runs_none(spark, make_settings):
    supervisor = Supervisor(spark, make_settings(), {}, [])
    assert supervisor._running_tasks() == 0
    ended = threading.Event()

    def slow_job() -> None:
        sc = spark.sparkContext
        sc.setJobGroup("stopped-query-run-id", "a batch cut short by its query's stop")
        try:
            sc.parallelize(range(2), 2).map(lambda x: time.sleep(3) or x).collect()
        except Exception:  # noqa: BLE001 - the cancel fails the job, as a stop does
            pass
        finally:
            ended.set()

    threading.Thread(target=slow_job, daemon=True).start()
    deadline = time.monotonic() + 30
    while supervisor._running_tasks() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert supervisor._running_tasks() == 2
    spark.sparkContext.cancelJobGroup("stopped-query-run-id")
    supervisor._await_cancelled_tasks(["stopped-query-run-id"], supervisor.clock() + 30)
    assert supervisor._running_tasks() == 0
    assert ended.wait(30)
