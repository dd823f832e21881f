"""Runs and watches the streaming queries of one Spark application: `xact-pipeline run` (every
stage) and each job command (one stage) go through it.

- Each stage's query runs in its own FAIR scheduler pool (named after the stage), so a long
  download batch cannot starve results or the retry scheduler.
- Before a query starts, and before every restart, Kafka is asked whether it is reachable and
  has the pipeline's topics; when not, the supervisor says so in one line (bootstrap servers,
  what to check) and tries again after the cooldown. A Kafka source pointed at a broker that is
  down would otherwise hang for minutes and end in a JVM stack trace.
- A query that fails is restarted from its checkpoint after a cooldown that doubles while it
  keeps failing (supervision.Cooldown). Its failure and restart are logged; every
  streaming.status_interval_seconds one status line shows every query's state, last batch,
  rows/s and lag. A fault of the broker, the lake or a source needs no person.
- With --available-now each query drains what is there and finishes; a query that keeps failing
  (AVAILABLE_NOW_TRIES in a row, Kafka unreachable included) ends the run with exit code 1
  instead of waiting forever.
- SIGTERM and Ctrl-C stop every query: a batch in flight may finish within
  streaming.stop_grace_seconds, else it is abandoned without committing (it runs again at the
  next start). The exit code says which (supervision.EXIT_OK / EXIT_ABANDONED). Either way the
  stop prints no stack trace: the batch's handler ends as Spark's "interrupted by stop"
  (spark.progress.guard_stopped_batches), and the stop returns once the batch's cancelled tasks
  have ended, so none of them reports its interruption after it or into a stopping session.

Each query keeps its own checkpoint (settings.checkpoint(stage)), the same whether it runs under
`run` or its own command, so a user can switch between the two.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from types import FrameType

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from pipeline_lib.config import Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import unreachable_reason
from pipeline_lib.logs import get_logger
from pipeline_lib.supervision import (
    EXIT_ABANDONED,
    EXIT_FAILED,
    EXIT_OK,
    Cooldown,
    StageState,
    failure_summary,
    status_line,
)

log = get_logger("run")
JobStarter = Callable[..., StreamingQuery]
AVAILABLE_NOW_TRIES = 3  # --available-now: failures in a row before the run gives up (exit 1)
TASKS_END_SECONDS = 30.0  # stop: how long the tasks of a cancelled batch may take to end


class Supervisor:
    """Start, watch, restart and stop the queries of `stages` in one session.

    Args:
        jobs: stage name -> the job's `run_*` function (spark.jobs.JOBS).
        available_now: each query drains what is there and finishes; the run ends when all have.
        check_kafka: ask Kafka before each start (tests of the supervisor itself may turn it off).
    """

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        jobs: dict[str, JobStarter],
        stages: Sequence[str],
        *,
        available_now: bool = False,
        check_kafka: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        unknown = [s for s in stages if s not in jobs]
        if unknown:
            raise PipelineError(f"unknown stage(s) {', '.join(unknown)}; choose from {', '.join(jobs)}")
        self.spark, self.settings, self.jobs = spark, settings, jobs
        self.available_now, self.check_kafka, self.clock = available_now, check_kafka, clock
        s = settings.streaming
        self.cooldown = Cooldown(s.restart_initial_seconds, s.restart_max_seconds)
        self.states = {name: StageState(name) for name in stages}
        self.queries: dict[str, StreamingQuery] = {}
        self._stop = threading.Event()
        self._kafka_said: str | None = None

    # --- lifecycle ------------------------------------------------------------------------------

    def run(self, timeout: float | None = None, tick: float = 1.0) -> int:
        """Supervise until every query finished (available-now), a stop signal, or `timeout`."""
        deadline = None if timeout is None else self.clock() + timeout
        next_status = self.clock() + self.settings.streaming.status_interval_seconds
        previous = self._install_signal_handlers()
        try:
            while not self._stop.is_set():
                now = self.clock()
                for state in self.states.values():
                    self._watch(state, now)
                if all(s.state == "finished" for s in self.states.values()):
                    log.info("[run] every query finished")
                    return EXIT_OK
                stuck = [s for s in self.states.values() if self.available_now and s.failures >= AVAILABLE_NOW_TRIES]
                if stuck:  # a run meant to drain and stop must not wait forever
                    log.error(
                        "[run] %s failed %d times in a row; giving up: %s",
                        stuck[0].name,
                        stuck[0].failures,
                        stuck[0].last_error,
                    )
                    self.stop()
                    return EXIT_FAILED
                if deadline is not None and now >= deadline:
                    log.info("[run] --timeout reached")
                    break
                if now >= next_status:
                    log.info(status_line(list(self.states.values()), now))
                    next_status = now + self.settings.streaming.status_interval_seconds
                self._stop.wait(tick)
            return self.stop()
        finally:
            self._restore_signal_handlers(previous)

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self) -> int:
        """Stop every query; a batch in flight may finish within the grace time. Returns the exit code.

        Each query is stopped the moment it is between batches (a processing-time trigger may start
        the next batch right after, so waiting and stopping are one step per query). A batch still
        running when the grace time ends is interrupted: nothing of it is committed and it runs
        again at the next start. Spark logs such an interruption as task and state-store errors
        with stack traces; they are expected here, so Spark's log is silenced from the first stop
        until every query has stopped and the tasks its stop cancelled have ended (then the level
        it had is restored), and one line says which queries were abandoned. `query.stop()`
        returns when the query's thread has ended, while the batch's cancelled tasks are still
        being killed: each reports its interruption when it ends (a write task aborted, a broadcast
        block gone), and the session stopped under them adds RejectedExecutionException.
        """
        grace_until = self.clock() + self.settings.streaming.stop_grace_seconds
        abandoned, run_ids = [], []
        previous = self._current_spark_log_level()
        try:
            for name, query in self.queries.items():
                with suppress(Exception):  # a query that already died has nothing to stop
                    run_ids.append(str(query.runId))  # its batches' job group
                    while query.isActive and query.status.get("isTriggerActive") and self.clock() < grace_until:
                        time.sleep(0.05)
                    if query.isActive and query.status.get("isTriggerActive"):
                        abandoned.append(name)
                # From the first stop on: an interrupted batch's task threads log their traces late.
                self._spark_log_level("OFF")
                with suppress(Exception):
                    query.stop()
                if self.states[name].state == "running":
                    self.states[name].state = "stopped"
            # Also without an abandoned batch: one may start between the wait above and the stop.
            self._await_cancelled_tasks(run_ids, self.clock() + TASKS_END_SECONDS)
        finally:
            self._spark_log_level(previous)
        if abandoned:
            log.warning(
                "[run] stopped with a batch in flight in %s: not committed, it runs again at the next start",
                ", ".join(abandoned),
            )
            return EXIT_ABANDONED
        failed = [s.name for s in self.states.values() if s.state == "waiting" and s.failures]
        log.info("[run] stopped; every query between batches")
        return EXIT_FAILED if failed and self.available_now else EXIT_OK

    def _await_cancelled_tasks(self, job_groups: Sequence[str], until: float) -> None:
        """Wait (until `until`) for the tasks of the stopped queries' unfinished jobs to end.

        A streaming query runs each batch's jobs in the job group of its run id, and its stop
        cancels that group. Spark's status store counts a stage's active tasks down as they end
        and writes the count when it reaches zero, so a cancelled stage with no active task has
        no task left that could still log."""
        with suppress(Exception):  # a stand-in session or a stopped context: nothing to wait for
            tracker = self.spark.sparkContext.statusTracker()
            stages = [
                stage
                for group in job_groups
                for job_id in tracker.getJobIdsForGroup(group)
                if (job := tracker.getJobInfo(job_id)) is not None and job.status != "SUCCEEDED"
                for stage in job.stageIds
            ]
            while stages and self.clock() < until:
                stages = [s for s in stages if (i := tracker.getStageInfo(s)) is not None and i.numActiveTasks > 0]
                if stages:
                    time.sleep(0.05)
        # The status store is fed by an asynchronous event bus, so it can show a stage done (or
        # not yet show it) while a killed task is still running. The task scheduler's own count
        # is live: once it is zero, every task's last status update has been handled, and a
        # session stopped now has no task left to report into its closed result pool (the
        # RejectedExecutionException in TaskSchedulerImpl.statusUpdate).
        with suppress(Exception):
            while self._running_tasks() > 0 and self.clock() < until:
                time.sleep(0.05)

    def _running_tasks(self) -> int:
        """Tasks running now on any executor, as the task scheduler counts them (no public API)."""
        scheduler = self.spark.sparkContext._jsc.sc().taskScheduler()
        counts = scheduler.runningTasksByExecutors().valuesIterator()
        total = 0
        while counts.hasNext():
            total += int(counts.next())
        return total

    def _current_spark_log_level(self) -> str:
        """The root log level now (a platform session may run at another level than the settings')."""
        try:
            jvm = self.spark.sparkContext._jvm  # no public getter
            assert jvm is not None
            return str(jvm.org.apache.logging.log4j.LogManager.getRootLogger().getLevel().toString())
        except Exception:  # noqa: BLE001 - a stand-in session or another logging backend: the configured level
            return self.settings.logging.spark_level

    def _spark_log_level(self, level: str) -> None:
        with suppress(Exception):  # a stopped context (or a test's stand-in) has no log level to set
            self.spark.sparkContext.setLogLevel(level)

    # --- one stage ------------------------------------------------------------------------------

    def _watch(self, state: StageState, now: float) -> None:
        query = self.queries.get(state.name)
        if state.state == "running" and query is not None:
            if query.isActive:
                self._read_progress(state, query)
                return
            error = query.exception()
            if error is None:  # available-now drained, or stopped from outside
                state.state = "finished"
                return
            wait = self._failed(state, failure_summary(error), now)
            log.error(
                "[run] %s failed (%d in a row): %s; restarting from its checkpoint in %.0fs",
                state.name,
                state.failures,
                state.last_error,
                wait,
            )
            return
        if state.state == "waiting" and now >= state.restart_at:
            self._start(state, now)

    def _start(self, state: StageState, now: float) -> None:
        if self.check_kafka:
            reason = unreachable_reason(self.settings, self.settings.stage_topics(state.name))
            if reason is not None:
                wait = self._failed(state, reason, now)
                if reason != self._kafka_said:  # the whole story once, then one short line per try
                    log.error("[run] %s: %s (trying again in %.0fs)", state.name, reason, wait)
                else:
                    log.warning(
                        "[run] %s: still cannot reach Kafka at %s (try %d; next in %.0fs)",
                        state.name,
                        self.settings.kafka.bootstrap_servers,
                        state.failures,
                        wait,
                    )
                self._kafka_said = reason
                return
            if self._kafka_said is not None:
                log.info("[run] Kafka at %s is reachable again", self.settings.kafka.bootstrap_servers)
                self._kafka_said = None
        sc = self.spark.sparkContext
        sc.setLocalProperty("spark.scheduler.pool", state.name)  # the query's thread inherits it
        try:
            start = self.jobs[state.name]
            self.queries[state.name] = start(self.spark, self.settings, available_now=self.available_now)
        except PipelineError:
            raise  # a configuration or setup mistake: restarting cannot fix it
        except Exception as exc:  # noqa: BLE001 - a start that fails (e.g. the lake) is retried like a failure
            wait = self._failed(state, failure_summary(exc), now)
            log.error("[run] %s could not start: %s; trying again in %.0fs", state.name, state.last_error, wait)
            return
        finally:
            sc.setLocalProperty("spark.scheduler.pool", None)  # type: ignore[arg-type]
        if state.started_at is not None:
            state.restarts += 1
            log.info("[run] %s restarted from its checkpoint (restart %d)", state.name, state.restarts)
        state.state, state.started_at = "running", now

    def _failed(self, state: StageState, error: str, now: float) -> float:
        return state.failed(error, now, self.cooldown, self.settings.streaming.healthy_after_seconds)

    @staticmethod
    def _read_progress(state: StageState, query: StreamingQuery) -> None:
        progress = query.lastProgress
        if not progress:
            return
        state.last_batch = progress.get("batchId")
        state.rows_per_second = progress.get("processedRowsPerSecond")
        lags = [
            float(src["metrics"]["maxOffsetsBehindLatest"])
            for src in progress.get("sources") or []
            if (src.get("metrics") or {}).get("maxOffsetsBehindLatest") is not None
        ]
        state.lag = int(max(lags)) if lags else None

    # --- signals --------------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict[int, object]:
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("[run] %s received: stopping every query", signal.Signals(signum).name)
            self._stop.set()

        previous: dict[int, object] = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)
        return previous

    @staticmethod
    def _restore_signal_handlers(previous: dict[int, object]) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
