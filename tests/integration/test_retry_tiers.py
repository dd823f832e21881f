"""Retry tiers end to end on the real broker and Spark: the download job and the retry scheduler
run side by side with second-scale delays against a source that always answers 503."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from pipeline_lib.contracts import H_RETRY_TICK, DeadLetter, DownloadTask
from pipeline_lib.kafka_client import consume_all, produce
from pipeline_lib.local.samples import sample_task
from pipeline_lib.spark.download import run_download
from pipeline_lib.spark.retry_scheduler import run_retry_scheduler

pytestmark = pytest.mark.integration

DELAYS = [1, 2, 3]
TRIGGER = 1.0
# Re-attempted no later than: scheduler trigger + download trigger + their batch durations.
TOLERANCE = 2 * TRIGGER + 5


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_a_failing_task_goes_through_every_tier_in_order_never_early_then_to_the_dlq(
    spark, make_kafka_settings, sample_server
):
    settings = make_kafka_settings(
        retry__delays_seconds=DELAYS,
        streaming__trigger_interval_seconds=TRIGGER,
        download__breaker__failure_threshold=100,
    )
    server = sample_server
    task = sample_task(server.url("flaky.pdf", mode="status", status=503), "flaky.pdf")
    produce(settings, settings.topics.pending.name, [(task.trace_id, task.encode())])
    download = run_download(spark, settings)
    scheduler = run_retry_scheduler(spark, settings)
    try:
        deadline = time.monotonic() + 120
        dead: list[DeadLetter] = []
        while not dead and time.monotonic() < deadline:
            assert download.exception() is None and scheduler.exception() is None
            time.sleep(1)
            dead = [DeadLetter.decode(v) for _, v, _ in consume_all(settings, settings.topics.dlq.name, idle_timeout=2)]
        lateness = [
            p["observedMetrics"]["retry-scheduler"]["max_lateness_ms"]
            for p in scheduler.recentProgress
            if p["observedMetrics"].get("retry-scheduler", {}) and p["observedMetrics"]["retry-scheduler"]["moved"]
        ]
    finally:
        scheduler.stop()
        download.stop()
    assert server.requests_for("flaky.pdf") == len(DELAYS) + 1

    (letter,) = dead
    assert (letter.category, letter.attempts, letter.stage) == ("exhausted", len(DELAYS) + 1, "download")
    history = letter.error_history
    assert [h["attempt"] for h in history] == [0, 1, 2, 3]

    # One message per tier, in order, each carrying the next attempt and its due time.
    tiers = [
        [DownloadTask.decode(v) for _, v, h in consume_all(settings, topic) if H_RETRY_TICK not in h]
        for topic in settings.retry_topics
    ]
    assert [[t.attempt for t in tier] for tier in tiers] == [[1], [2], [3]]
    for delay, (retry,), failed, next_attempt in zip(DELAYS, tiers, history, history[1:], strict=False):
        waited = (ts(next_attempt["at"]) - ts(failed["at"])).total_seconds()
        late = (ts(next_attempt["at"]) - ts(retry.due_at)).total_seconds()
        assert waited >= delay, f"attempt {next_attempt['attempt']} came after {waited:.2f}s, before its {delay}s delay"
        assert 0 <= late <= TOLERANCE, f"attempt {next_attempt['attempt']} came {late:.2f}s after it was due"
    assert lateness and max(lateness) <= (settings.trigger_seconds("retry-scheduler") + 3) * 1000

    # What came back to pending: the original task and one copy per retry.
    back = [DownloadTask.decode(v) for _, v, _ in consume_all(settings, settings.topics.pending.name)]
    assert sorted(t.attempt for t in back) == [0, 1, 2, 3]
    forwarded = [h for _, _, h in consume_all(settings, settings.topics.pending.name) if "xact.retry.due_at" in h]
    assert len(forwarded) == len(DELAYS)
    assert all(ts(h["xact.retry.forwarded_at"]) >= ts(h["xact.retry.due_at"]) for h in forwarded)


def test_a_restarted_scheduler_forwards_held_retries_when_due_without_new_input(spark, make_kafka_settings):
    """Spark runs no batch after a restart until input arrives; the scheduler's start tick makes it
    run one, which fires the held message's timeout (also under --available-now)."""
    from datetime import UTC, timedelta

    from pipeline_lib.times import iso_utc
    from tests.streaming import run_available_now

    settings = make_kafka_settings(retry__delays_seconds=[30], streaming__trigger_interval_seconds=TRIGGER)
    due = datetime.now(UTC) + timedelta(seconds=15)  # beyond the first run's start-up and batch
    task = sample_task(
        "http://127.0.0.1:9/held.pdf",
        "held.pdf",
        attempt=1,
        due_at=iso_utc(due),
        retry_stage="download",
        return_topic=settings.topics.pending.name,
    )
    produce(settings, settings.retry_topics[0], [(task.trace_id, task.encode(), task.headers())])
    run_available_now(run_retry_scheduler, spark, settings)  # reads it and holds it: not due yet
    assert list(consume_all(settings, settings.topics.pending.name, idle_timeout=1)) == []
    time.sleep(max(0.0, (due - datetime.now(UTC)).total_seconds()) + 0.5)

    run_available_now(run_retry_scheduler, spark, settings)  # no new retry: only the start tick
    (forwarded,) = [h for _, _, h in consume_all(settings, settings.topics.pending.name)]
    assert forwarded["xact.task_id"] == task.task_id and ts(forwarded["xact.retry.forwarded_at"]) >= due


def test_an_idle_scheduler_runs_no_batch_until_a_retry_is_due_and_a_restarted_one_still_wakes(
    spark, make_kafka_settings
):
    """retry.wake_on_due (the default): no no-data batch every trigger while retries wait; a tick
    from the driver's wake-up thread starts the batch that forwards each when due, and a restarted
    scheduler plans the retries its state holds from the tiers themselves."""
    from datetime import UTC, timedelta

    from pipeline_lib.times import iso_utc

    settings = make_kafka_settings(retry__delays_seconds=[20], streaming__trigger_interval_seconds=TRIGGER)
    trigger = settings.trigger_seconds("retry-scheduler")
    assert settings.retry.wake_on_due and trigger == TRIGGER
    now = datetime.now(UTC)
    dues = [now + timedelta(seconds=14), now + timedelta(seconds=32)]
    tasks = [
        sample_task(
            f"http://127.0.0.1:9/held-{i}.pdf",
            f"held-{i}.pdf",
            attempt=1,
            due_at=iso_utc(due),
            retry_stage="download",
            return_topic=settings.topics.pending.name,
        )
        for i, due in enumerate(dues)
    ]
    produce(settings, settings.retry_topics[0], [(t.trace_id, t.encode(), t.headers()) for t in tasks])

    def forwarded() -> dict[str, dict[str, str]]:
        rows = consume_all(settings, settings.topics.pending.name, idle_timeout=1)
        return {h["xact.task_id"]: h for _, _, h in rows}

    def batch_ids(query) -> set[int]:
        return {p["batchId"] for p in query.recentProgress}

    def wait_for(query, task_id: str, limit: float) -> dict[str, str]:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            assert query.exception() is None
            found = forwarded()
            if task_id in found:
                return found[task_id]
            time.sleep(0.5)
        raise AssertionError(f"{task_id} was not forwarded within {limit:.0f}s")

    def run_until_forwarded(task: DownloadTask, due: datetime) -> set[int]:
        """Run a scheduler until `task` is forwarded; the batch ids it ran."""
        query = run_retry_scheduler(spark, settings)
        try:
            headers = wait_for(query, task.task_id, 60)
            ran = batch_ids(query)
        finally:
            query.stop()
        late = (ts(headers["xact.retry.forwarded_at"]) - due).total_seconds()
        assert 0 <= late <= trigger + 3, f"forwarded {late:.2f}s after it was due"
        return ran

    # Start ticks and input (one or two batches), then the wake-up.
    assert len(run_until_forwarded(tasks[0], dues[0])) <= 4
    assert tasks[1].task_id not in forwarded()
    # Restarted with no new input: what it holds is in its state only. Its batches: the start
    # ticks, the first retry's follow-ups (2, 4, 8, 16 s after it was due: the new thread reads it
    # again) and the wake-up (6 measured). A no-data batch every 1 s trigger makes about 19 here
    # (measured with wake_on_due off).
    assert len(run_until_forwarded(tasks[1], dues[1])) <= 9
    assert sorted(forwarded()) == sorted(t.task_id for t in tasks)
