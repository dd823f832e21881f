"""What analysts do with xact_dlq: select, summarise, replay, resolve (the CLI's `dlq` commands and
notebooks/dlq_analysis.ipynb): the Spark side of the pure pipeline_lib.replay, which decides which
rows, what a replayed task looks like, in which order and how fast. This module reads the table,
reads the source records from Kafka, publishes and marks the rows.

A replay, at rest, publishes each selected task once, whether it ran through, was cancelled and
resumed, or crashed and was resumed:
1. it claims its rows in one commit (status `replaying`, its replay id, the claim time), which only
   takes rows still in a selectable status, so two replays never take one row;
2. it publishes at the caps, and marks each chunk of rows `replayed` after Kafka confirmed the
   chunk (never before);
3. `--resume ID` first reads the pending topic from the claim time on and marks the rows whose
   task is already there with this replay id, then publishes only the rest.
"""

from __future__ import annotations

import re
import signal
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F

from pipeline_lib.config import Settings
from pipeline_lib.contracts import DownloadTask, SourceRef
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_client import consume_all, make_producer, read_many, short_reason, unreachable_reason
from pipeline_lib.logs import get_logger
from pipeline_lib.redaction import redact, truncate
from pipeline_lib.replay import (
    DeadRow,
    DlqSelection,
    Pacer,
    ReplayProgress,
    ReplayRate,
    ReplayReport,
    SelectionError,
    check_replay_id,
    chunks,
    new_replay_id,
    pace_order,
    pace_setter,
    plan_replay,
    replay_rate,
    resolve_note,
    task_from_record,
)
from pipeline_lib.spark.tables import dlq_table, read_table, require_table, retry_on_conflict

log = get_logger("dlq")


def selection_filter(selection: DlqSelection) -> Column:
    cond = F.col("status").isin(*selection.statuses)
    for column, values in (
        ("task_id", selection.task_ids),
        ("trace_id", selection.trace_ids),
        ("category", selection.categories),
        ("host", selection.hosts),
        ("stage", selection.stages),
    ):
        if values:
            cond = cond & F.col(column).isin(*values)
    if selection.since:
        cond = cond & (F.col("failed_at") >= F.to_timestamp(F.lit(selection.since)))
    if selection.until:
        cond = cond & (F.col("failed_at") < F.to_timestamp(F.lit(selection.until)))
    return cond


def select_dead_letters(spark: SparkSession, settings: Settings, selection: DlqSelection) -> DataFrame:
    return read_table(spark, settings, "dlq").filter(selection_filter(selection))


def dlq_summary(rows: DataFrame) -> DataFrame:
    """Counts per status, stage, category and host: where to look first."""
    return (
        rows.groupBy("status", "stage", "category", "host")
        .agg(F.count("*").alias("rows"), F.max("failed_at").alias("last_failed_at"))
        .orderBy(F.col("rows").desc())
    )


def _dead_row(row: Row) -> DeadRow:
    source = (
        SourceRef(row.source_topic, int(row.source_partition), int(row.source_offset))
        if row.source_topic is not None and row.source_partition is not None and row.source_offset is not None
        else None
    )
    return DeadRow(
        row.dlq_id,
        row.stage,
        row.category,
        row.attempts,
        row.task_id,
        row.trace_id,
        bool(row.task_json),
        source,
        row.host,
        row.failed_date,
    )


READ_CHUNK_ROWS = 5000  # source records read per consumer pass
# Resume reads the pending topic from this long before the claim: a producer clock (CreateTime)
# behind the driver's must not hide a published task.
CLOCK_SKEW = timedelta(minutes=5)
DELIVERY_TIMEOUT_SECONDS = 60.0


def live_tasks(settings: Settings, rows: Iterable[DeadRow]) -> Callable[[SourceRef, str], DownloadTask | str]:
    """`live_task(source, task_id)` for plan_replay: every row's source record, read up front in
    passes of READ_CHUNK_ROWS with one consumer each (kafka_client.read_many)."""
    sources = [row.source for row in rows if row.source is not None]
    values: dict[SourceRef, bytes] = {}
    for part in chunks(sources, READ_CHUNK_ROWS):
        values.update(read_many(settings, part))

    def live_task(source: SourceRef, task_id: str) -> DownloadTask | str:
        value = values.get(source)
        if value is None:
            return (
                f"its source record {source.topic}/{source.partition}/{source.offset} is no longer on Kafka "
                "(retention); ask upstream to re-send the event"
            )
        return task_from_record(value, task_id)

    return live_task


def replay(
    spark: SparkSession,
    settings: Settings,
    selection: DlqSelection,
    *,
    dry_run: bool = True,
    force: bool = False,
    note: str | None = None,
    rate: ReplayRate | None = None,
    resume: str | None = None,
    cancel: threading.Event | None = None,
    emit: Callable[[str], None] = print,
    resume_unfinished: bool = False,
) -> ReplayReport:
    """Re-publish the selected dead tasks to the pending topic with a fresh attempt budget, at a
    capped rate.

    Args:
        selection: which rows; only `open` ones unless `force` (which adds `replayed`).
        dry_run: list what would be replayed, why others would be skipped, and how long the replay
            would take at the caps; change nothing.
        force: replay rows that were replayed before.
        note: stored on the replayed rows.
        rate: the caps (default: `replay:` in config).
        resume: the id of an interrupted or cancelled replay to finish (`selection` is then its own).
        cancel: set it to stop after the row in flight; the replay can be resumed.
        emit: where the claim and progress lines go (the CLI: stderr; a notebook: its output).
        resume_unfinished: first finish every stopped replay holding rows of the selection (what a
            scheduled replay does: a run that timed out or was cancelled leaves rows `replaying`,
            which no new selection takes). Each one's report goes to `emit`. Only where replays
            never run at the same time (the scheduled job runs one at a time).

    Each replayed task gets attempt 0, an empty history, the replay id and the next generation;
    its rows become `replayed` with the replay id, time and selection. Replaying the same rows again
    selects nothing (they are no longer open) unless forced.
    """
    rate = rate or replay_rate(settings)
    cancel = cancel or threading.Event()
    if resume is not None:
        return _resume(spark, settings, check_replay_id(resume), rate, cancel, emit, note)
    selection.check_replayable()
    if force:
        selection = selection.forced()
    if resume_unfinished and not dry_run:
        for replay_id in unfinished_replays(spark, settings, selection):
            finished = _resume(spark, settings, replay_id, rate, cancel, emit, None)  # keeps its own note
            if finished.cancelled:
                return finished  # its id is the one to resume
            emit(finished.describe())
    report = ReplayReport(new_replay_id(), selection, dry_run, rate=rate)
    rows = [_dead_row(r) for r in select_dead_letters(spark, settings, selection).collect()]
    _say_unfinished(spark, settings, selection, emit)
    unreachable = unreachable_reason(settings, timeout=3)
    if unreachable is not None:
        if not dry_run:
            raise PipelineError(f"replay needs Kafka to read each task back and re-publish it: {unreachable}")
        emit(f"dry run without Kafka: {short_reason(settings, unreachable)}")  # one line, then the rows
        plan_replay(rows, lambda source, task_id: "its source record cannot be read: Kafka is not reachable", report)
        return report
    tasks = plan_replay(rows, live_tasks(settings, rows), report)
    _estimate(report, tasks)
    if dry_run or not tasks:
        return report
    if cancel.is_set():  # cancelled while an unfinished replay was resumed: claim nothing new
        emit(f"cancelled before claiming the rest of the selection: {len(report.replayed)} row(s) stay as they were")
        report.replayed = []
        return report
    emit(
        f"replay {report.replay_id}: claiming {len(report.replayed)} row(s) of xact_dlq; if it stops, "
        f"continue with `xact-pipeline dlq replay --resume {report.replay_id}`"
    )
    claimed = _claim(spark, settings, report, note)
    # A duplicate row rides on its primary's publication: if another replay or a resolve took the
    # primary meanwhile, the duplicate is given back (open), not left held with nothing to mark it.
    stranded = [e for e in report.replayed if e.get("duplicate_of") and e["duplicate_of"] not in claimed]
    if stranded:
        _release(spark, settings, report.replay_id, _keys(e for e in stranded if e["dlq_id"] in claimed))
        claimed -= {e["dlq_id"] for e in stranded}
    if len(claimed) < len(report.replayed):  # another replay or a resolve took some meanwhile
        taken = [e for e in report.replayed if e["dlq_id"] not in claimed]
        report.skipped += [
            {"dlq_id": e["dlq_id"], "reason": "claimed by another replay or resolved meanwhile"} for e in taken
        ]
        kept = {e["task_id"] for e in report.replayed if e["dlq_id"] in claimed and "duplicate_of" not in e}
        report.replayed = [e for e in report.replayed if e["dlq_id"] in claimed]
        tasks = [t for t in tasks if t.task_id in kept]
        _estimate(report, tasks)
    _publish(spark, settings, report, tasks, cancel, emit)
    return report


def _estimate(report: ReplayReport, tasks: list[DownloadTask]) -> None:
    assert report.rate is not None
    hosts = [e["host"] for e in report.replayed if "duplicate_of" not in e]
    plan = pace_order(hosts, lambda host: host, report.rate)
    report.planned_seconds = plan[-1][0] if plan else 0.0
    report.pace = pace_setter(hosts, report.rate)


def unfinished_replays(spark: SparkSession, settings: Settings, selection: DlqSelection) -> dict[str, int]:
    """The replays still holding rows of `selection` (`replaying`), with how many, oldest first."""
    held = replace(selection, statuses=("replaying",))
    rows = (
        select_dead_letters(spark, settings, held)
        .groupBy("replay_id")
        .agg(F.count("*").alias("rows"), F.min("replayed_at").alias("claimed_at"))
        .orderBy("claimed_at")
        .collect()
    )
    return {r.replay_id: r.rows for r in rows}


def _say_unfinished(
    spark: SparkSession, settings: Settings, selection: DlqSelection, emit: Callable[[str], None]
) -> None:
    """One line per unfinished replay holding rows of this selection: they are not selectable."""
    for replay_id, count in unfinished_replays(spark, settings, selection).items():
        emit(
            f"note: {count} row(s) of this selection are still `replaying` in {replay_id} (stopped, or running "
            f"elsewhere); `xact-pipeline dlq replay --resume {replay_id}` finishes it"
        )


def _keys(entries: Iterable[dict[str, Any]]) -> list[tuple[str, str | None]]:
    return [(e["dlq_id"], e["failed_date"]) for e in entries]


def _update_rows(
    spark: SparkSession,
    settings: Settings,
    keys: list[tuple[str, str | None]],
    condition: str,
    updates: dict[str, Column],
) -> None:
    """Update the xact_dlq rows with these (dlq_id, failed_date) keys where `condition` holds, in
    one commit: a MERGE with the keys as a DataFrame, so the plan holds no literal list of ids, and
    with the keys' partitions named as literals, so it reads (and conflicts with writers of) only
    those. A commit that lost to a concurrent writer (the dlq-table job inserting dead letters) is
    tried again: the condition is re-checked each time."""
    if not keys:
        return
    dates = sorted({date for _, date in keys if date is not None})
    if not all(_DATE.fullmatch(date) for date in dates):
        raise PipelineError(f"xact_dlq failed_date values must be YYYY-MM-DD, got {dates[:3]}")
    table = require_table(spark, dlq_table(settings))
    source = spark.createDataFrame(keys, "dlq_id string, failed_date string")
    partitions = ", ".join(f"'{date}'" for date in dates) or "NULL"
    on = f"t.failed_date IN ({partitions}) AND t.failed_date = s.failed_date AND t.dlq_id = s.dlq_id"

    def commit() -> None:
        (
            table.alias("t")
            .merge(source.alias("s"), on)
            .whenMatchedUpdate(condition=condition, set={**updates, "updated_at": F.current_timestamp()})
            .execute()
        )

    retry_on_conflict(commit, "xact_dlq status update")


_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _claim(spark: SparkSession, settings: Settings, report: ReplayReport, note: str | None) -> set[str]:
    """Claim the report's rows for its replay (status `replaying`) where they are still in a
    selectable status; the dlq_ids this replay holds."""
    statuses = ", ".join(f"'{s}'" for s in report.selection.statuses if s != "replaying")
    updates = {
        "status": F.lit("replaying"),
        "replay_id": F.lit(report.replay_id),
        "replayed_at": F.current_timestamp(),  # the claim time, until the row is marked replayed
        "replay_selection": F.lit(report.selection.to_json()),
    }
    if note:
        updates["note"] = F.lit(truncate(redact(note), 2000))
    _update_rows(spark, settings, _keys(report.replayed), f"t.status IN ({statuses})", updates)
    held = read_table(spark, settings, "dlq").filter(_held(report.replay_id)).select("dlq_id").collect()
    return {r.dlq_id for r in held}


def _held(replay_id: str) -> Column:
    return (F.col("replay_id") == replay_id) & (F.col("status") == "replaying")


def _held_condition(replay_id: str) -> str:
    return f"t.replay_id = '{replay_id}' AND t.status = 'replaying'"


def mark_replayed(spark: SparkSession, settings: Settings, replay_id: str, keys: list[tuple[str, str | None]]) -> None:
    """Rows of `replay_id` whose task Kafka has confirmed: `replayed`, counted once."""
    updates = {
        "status": F.lit("replayed"),
        "replayed_at": F.current_timestamp(),
        "replay_count": F.col("t.replay_count") + 1,
    }
    _update_rows(spark, settings, keys, _held_condition(replay_id), updates)


def _release(spark: SparkSession, settings: Settings, replay_id: str, keys: list[tuple[str, str | None]]) -> None:
    """Rows a resumed replay can no longer replay (their source went): `open` again."""
    _update_rows(spark, settings, keys, _held_condition(replay_id), {"status": F.lit("open")})


def _publish(
    spark: SparkSession,
    settings: Settings,
    report: ReplayReport,
    tasks: list[DownloadTask],
    cancel: threading.Event,
    emit: Callable[[str], None],
) -> None:
    """Publish `tasks` in the paced order, chunk by chunk; mark each chunk once Kafka confirmed
    it (in a background thread, so a commit does not stall the pace). On a cancel (or Ctrl-C) the
    rows in flight are confirmed and marked, and the rest stay `replaying` for `--resume`."""
    assert report.rate is not None
    primaries = [e for e in report.replayed if "duplicate_of" not in e]
    riders: dict[str, list[dict[str, Any]]] = {}
    for entry in report.replayed:
        if "duplicate_of" in entry:
            riders.setdefault(entry["duplicate_of"], []).append(entry)
    plan = pace_order(list(zip(primaries, tasks, strict=True)), lambda pair: pair[0]["host"], report.rate)
    topic = settings.topics.pending.name
    # Every message is delivered or failed within the flush's wait: none is still in flight when
    # a chunk is marked, the run stops, or a resume reads the topic.
    producer = make_producer(settings, **{"message.timeout.ms": int(DELIVERY_TIMEOUT_SECONDS * 1000) - 10_000})
    pacer = Pacer(report.rate, catch_up=True)
    progress = ReplayProgress(report.replay_id, [at for at, _ in plan], emit, settings.replay.progress_seconds)
    marker = ThreadPoolExecutor(1, thread_name_prefix="xact-replay-mark")
    marking: Future | None = None
    confirmed: list[dict[str, Any]] = []
    failures: list[str] = []
    sent = 0

    def settle(chunk_delivered: list[dict[str, Any]]) -> None:
        nonlocal marking
        remaining = producer.flush(DELIVERY_TIMEOUT_SECONDS)
        if marking is not None:
            marking.result()  # a failed mark stops the replay: its rows are found again by --resume
        rows = [r for e in chunk_delivered for r in (e, *riders.get(e["dlq_id"], []))]
        marking = marker.submit(mark_replayed, spark, settings, report.replay_id, _keys(rows))
        confirmed.extend(rows)
        if failures or remaining:
            marking.result()
            raise PipelineError(
                f"replay {report.replay_id} stopped: {len(failures) + remaining} task(s) were not delivered to "
                f"{topic} ({failures[:2]}); {len(confirmed)} row(s) are marked. Check Kafka, then continue with "
                f"`xact-pipeline dlq replay --resume {report.replay_id}`"
            )

    # Ctrl-C (a notebook's interrupt) sets `cancel`: pyspark's own SIGINT handler would cancel
    # every Spark job, the chunk mark in flight with them.
    previous = _on_sigint(cancel)
    try:
        for chunk in chunks(plan, settings.replay.mark_chunk_rows):
            delivered: list[dict[str, Any]] = []
            try:
                for _, (entry, task) in chunk:
                    _wait_turn(pacer, entry["host"], cancel)
                    if cancel.is_set():
                        break
                    _send(producer, topic, task, entry, delivered, failures)
                    pacer.sent(entry["host"], time.monotonic())
                    sent += 1
                    progress.update(sent)
            except KeyboardInterrupt:
                cancel.set()
            settle(delivered)
            if cancel.is_set():
                break
        if marking is not None:
            marking.result()
    finally:
        producer.flush(DELIVERY_TIMEOUT_SECONDS)  # on any way out, nothing left in flight
        marker.shutdown(wait=True)
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    report.replayed = confirmed
    report.cancelled = len(confirmed) < len(primaries) + sum(map(len, riders.values()))
    report.remaining = len(primaries) + sum(map(len, riders.values())) - len(confirmed)
    progress.update(sent, final=True)
    log.info("replay %s: %d task(s) re-published to %s", report.replay_id, sent, topic)


def _on_sigint(cancel: threading.Event):
    """Make SIGINT set `cancel` while a replay publishes; the handler it replaced (None off the main
    thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, lambda *_: cancel.set())


def _wait_turn(pacer: Pacer, host: str | None, cancel: threading.Event) -> None:
    while not cancel.is_set():
        now = time.monotonic()
        wait = pacer.ready_at(host, now) - now
        if wait <= 0:
            return
        cancel.wait(min(wait, 0.2))


def _send(producer, topic: str, task: DownloadTask, entry: dict[str, Any], delivered: list, failures: list) -> None:
    def on_delivery(err, _msg) -> None:
        (failures.append(str(err)) if err is not None else delivered.append(entry))

    while True:
        try:
            producer.produce(
                topic,
                key=task.trace_id,
                value=task.encode(),
                headers=list(task.headers().items()),
                on_delivery=on_delivery,
            )
            break
        except BufferError:
            producer.poll(0.1)
    producer.poll(0)


def _published_task_ids(settings: Settings, replay_id: str, since_ms: int) -> set[str]:
    """Task ids on the pending topic that carry `replay_id`, from `since_ms` on."""
    needle = f'"replay_id":"{replay_id}"'.encode()
    found: set[str] = set()
    topic = settings.topics.pending.name
    for _, value, _ in consume_all(settings, topic, since_ms=since_ms, idle_timeout=30, complete=True):
        if value and needle in value:
            try:
                task = DownloadTask.decode(value)
            except Exception:  # noqa: BLE001 - any record that is not a task is not ours
                continue
            if task.replay_id == replay_id:
                found.add(task.task_id)
    return found


def _resume(
    spark: SparkSession,
    settings: Settings,
    replay_id: str,
    rate: ReplayRate,
    cancel: threading.Event,
    emit: Callable[[str], None],
    note: str | None,
) -> ReplayReport:
    mine = read_table(spark, settings, "dlq").filter(F.col("replay_id") == replay_id)
    rows = mine.collect()
    if not rows:
        raise SelectionError(
            f"no xact_dlq row has replay id {replay_id}; `xact-pipeline dlq list --status replaying` "
            "shows the rows of unfinished replays"
        )
    selection = DlqSelection.from_json(rows[0].replay_selection)
    report = ReplayReport(replay_id, selection, False, rate=rate, resumed=True)
    held = [r for r in rows if r.status == "replaying"]
    if not held:
        emit(f"replay {replay_id} has nothing left to do: its {len(rows)} row(s) are no longer `replaying`")
        return report
    unreachable = unreachable_reason(settings, timeout=3)
    if unreachable is not None:
        raise PipelineError(f"resuming a replay needs Kafka to see what it published: {unreachable}")
    # The claim time, read in Spark as epoch ms: no driver-local naive datetime in between.
    first = mine.filter(_held(replay_id)).agg(F.min(F.unix_millis("replayed_at"))).first()
    claimed_ms = first[0] if first is not None else None
    since_ms = int(claimed_ms - CLOCK_SKEW.total_seconds() * 1000) if claimed_ms is not None else 0
    emit(
        f"replay {replay_id}: {len(held)} row(s) unfinished; "
        f"reading what it published from {settings.topics.pending.name}"
    )
    published = _published_task_ids(settings, replay_id, since_ms)
    done = [r for r in held if r.task_id in published]
    for part in chunks([(r.dlq_id, r.failed_date) for r in done], settings.replay.mark_chunk_rows):
        mark_replayed(spark, settings, replay_id, list(part))
    report.already_published = len(done)
    rest = [_dead_row(r) for r in held if r.task_id not in published]
    tasks = plan_replay(rest, live_tasks(settings, rest), report)
    gone = {s["dlq_id"] for s in report.skipped}
    _release(spark, settings, replay_id, [(r.dlq_id, r.failed_date) for r in rest if r.dlq_id in gone])
    _estimate(report, tasks)
    if note:
        _update_rows(
            spark,
            settings,
            _keys(report.replayed),
            _held_condition(replay_id),
            {"note": F.lit(truncate(redact(note), 2000))},
        )
    if tasks:
        _publish(spark, settings, report, tasks, cancel, emit)
    return report


def resolve(spark: SparkSession, settings: Settings, selection: DlqSelection, note: str) -> int:
    """Mark the selected rows resolved (no replay), with a note saying why; returns how many."""
    note = resolve_note(note)
    selection.check_replayable()
    keys = [
        (r.dlq_id, r.failed_date)
        for r in select_dead_letters(spark, settings, selection).select("dlq_id", "failed_date").collect()
    ]
    resolved = {
        "status": F.lit("resolved"),
        "resolved_at": F.current_timestamp(),
        "note": F.lit(truncate(redact(note), 2000)),
    }
    statuses = ", ".join(f"'{s}'" for s in selection.statuses)
    _update_rows(spark, settings, keys, f"t.status IN ({statuses})", resolved)
    return len(keys)
