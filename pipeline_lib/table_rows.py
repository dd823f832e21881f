"""What one Kafka record becomes in a Delta table, without Spark: the per-record functions of the
results job (xact.downloads.results -> xact_attachments) and the dlq-table job
(xact.downloads.dlq -> xact_dlq).

Both are total, like the I/O stages' loop (record_stage.RecordStage): whatever the record holds,
`result_row` returns a row or the record's dead letter, and `dlq_row` returns a row (a readable
dead letter, or a `malformed`/`internal` row of stage `dlq`: the DLQ table never sends anything
back onto the DLQ topic). Every value is range-checked and typed so the Arrow batch that carries
the rows cannot fail on it. Timestamps leave as ISO 8601 UTC strings and are typed in Spark.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from pipeline_lib.bounds import INT32_MAX, INT64_MAX
from pipeline_lib.contracts import AttachmentResult, ContractError, DeadLetter
from pipeline_lib.dead_letters import internal_dead_letter
from pipeline_lib.records import InputRecord
from pipeline_lib.times import iso_utc, parse_iso

RESULTS_STAGE = "results"
DLQ_STAGE = "dlq"
# The stages whose outcomes the results job folds, in the order a task passes them: of two outcomes
# of one attempt, the later stage's wins (spark/results.py), whatever the hosts' clocks say.
STAGE_ORDER = ("download", "upload")


@dataclass(frozen=True)
class TableColumn:
    """One column of a Delta table, declared once: spark/tables.py derives the StructType from it.

    `type` is one of spark.tables' type names (string, timestamp, date, int, long); `row`: the
    per-record function emits it (else Spark stamps it at the write)."""

    name: str
    type: str
    required: bool = False
    row: bool = True


# xact_attachments, in table order (the results job's rows carry all but recorded_at).
ATTACHMENT_COLUMNS = (
    TableColumn("task_id", "string", required=True),
    TableColumn("trace_id", "string", required=True),
    TableColumn("attachment_url", "string"),  # redacted
    TableColumn("blob_path", "string"),
    TableColumn("file_type", "string"),
    TableColumn("status_subtype", "string"),
    TableColumn("assignment_id", "string"),
    TableColumn("bytes", "long"),
    TableColumn("sha256", "string"),
    TableColumn("content_type", "string"),
    TableColumn("status", "string", required=True),
    TableColumn("stage", "string", required=True),
    TableColumn("http_status", "int"),
    TableColumn("attempt", "int", required=True),  # 0-based attempt of the winning outcome
    TableColumn("attempts", "int", required=True),  # attempt + 1
    TableColumn("error_category", "string"),
    TableColumn("error_message", "string"),
    TableColumn("created_at", "timestamp"),
    TableColumn("downloaded_at", "timestamp"),
    TableColumn("uploaded_at", "timestamp"),
    TableColumn("first_seen_at", "timestamp", required=True),
    TableColumn("updated_at", "timestamp", required=True),  # occurred_at of the winning outcome
    TableColumn("event_date", "date", required=True),
    # Added later (tables create adds them to an existing table):
    TableColumn("replay_id", "string"),  # the replay behind the winning outcome, if any
    TableColumn("replay_generation", "int"),  # 0: first life; +1 per replay (ranks first)
    TableColumn("event_time", "timestamp"),  # the event's own time
    TableColumn("event_produced_at", "timestamp"),  # the raw event's Kafka timestamp (latency start)
    TableColumn("recorded_at", "timestamp", row=False),  # when the results job wrote this row (latency end)
)

# xact_dlq, in table order (the dlq-table job's rows carry the dead letter's own columns; the
# status columns are added in Spark and changed by replay and resolve).
DLQ_TABLE_COLUMNS = (
    TableColumn("dlq_id", "string", required=True),
    TableColumn("stage", "string", required=True),
    TableColumn("category", "string", required=True),
    TableColumn("reason", "string"),
    TableColumn("failed_at", "timestamp"),
    TableColumn("attempts", "int"),
    TableColumn("trace_id", "string"),
    TableColumn("task_id", "string"),
    TableColumn("event_id", "string"),
    TableColumn("url", "string"),  # redacted
    TableColumn("host", "string"),
    TableColumn("http_status", "int"),
    TableColumn("source_topic", "string"),
    TableColumn("source_partition", "int"),
    TableColumn("source_offset", "long"),
    TableColumn("source_timestamp", "timestamp"),
    TableColumn("task_json", "string"),
    TableColumn("payload", "string"),
    TableColumn("error_history_json", "string"),
    TableColumn("status", "string", required=True, row=False),  # open | replaying | replayed | resolved
    TableColumn("note", "string", row=False),
    TableColumn("replay_id", "string", row=False),  # the latest replay of this row
    TableColumn("replayed_at", "timestamp", row=False),
    TableColumn("replay_selection", "string", row=False),  # the DlqSelection that replayed it (JSON)
    TableColumn("replay_count", "int", required=True, row=False),
    TableColumn("resolved_at", "timestamp", row=False),
    TableColumn("first_seen_at", "timestamp", required=True, row=False),
    TableColumn("updated_at", "timestamp", required=True, row=False),
    TableColumn("failed_date", "string", required=True),  # partition: YYYY-MM-DD of failed_at
)


def _row_columns(columns: tuple[TableColumn, ...], kind: str | None = None) -> tuple[str, ...]:
    return tuple(c.name for c in columns if c.row and (kind is None or c.type == kind))


# The columns the per-record functions emit, in table order (timestamps and dates as ISO strings).
RESULT_COLUMNS = _row_columns(ATTACHMENT_COLUMNS)
RESULT_TIMESTAMPS = _row_columns(ATTACHMENT_COLUMNS, "timestamp")
DLQ_COLUMNS = _row_columns(DLQ_TABLE_COLUMNS)
DLQ_TIMESTAMPS = _row_columns(DLQ_TABLE_COLUMNS, "timestamp")

_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,10})$")


def _utc(text: str | None) -> str | None:
    """An ISO time (already validated by the contract) as UTC with milliseconds: one form for Spark."""
    return iso_utc(parse_iso(text)) if text is not None else None


def result_row(record: InputRecord, at: datetime) -> tuple[Any, ...] | DeadLetter:
    """A results message as an xact_attachments row (RESULT_COLUMNS), or the record's dead letter."""
    try:
        result = AttachmentResult.decode(record.value if record.value is not None else b"")
    except ContractError as exc:
        return DeadLetter.malformed(
            RESULTS_STAGE, f"not a readable attachment result: {exc}", record.value, record.source, at
        )
    try:
        match = _EXTENSION.search(result.blob_path or "")
        occurred = _utc(result.occurred_at)
        values = {
            **{name: getattr(result, name) for name in RESULT_COLUMNS if hasattr(result, name)},
            "file_type": match.group(1).lower() if match else None,
            "attempts": result.attempt + 1,
            "first_seen_at": occurred,
            "updated_at": occurred,
        }
        for name in ("created_at", "downloaded_at", "uploaded_at", "event_time", "event_produced_at"):
            values[name] = _utc(values[name])
        return tuple(values[name] for name in RESULT_COLUMNS)
    except Exception as exc:  # noqa: BLE001 - one record must never fail the batch
        return internal_dead_letter(RESULTS_STAGE, exc, record, at)


def _host(url: object) -> str | None:
    try:
        return (urlsplit(url).hostname or None) if isinstance(url, str) and url else None
    except ValueError:
        return None


def _int_in(value: object, low: int, high: int) -> int | None:
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    return value if ok else None  # type: ignore[return-value]


def _dead_letter_row(dead: DeadLetter, record: InputRecord, at: datetime) -> tuple[Any, ...]:
    task = dead.task or {}
    url = task.get("url")
    last = dead.error_history[-1] if dead.error_history else {}
    source = dead.source
    # The partition date must not depend on when the row is (re)processed: the dead letter's own
    # time, else the DLQ record's Kafka timestamp, else now (a record with no time at all).
    failed_at = _utc(dead.failed_at) if dead.failed_at else None
    failed_at = failed_at or record.source.timestamp or iso_utc(at)
    row = {
        "dlq_id": dead.dlq_id,
        "stage": dead.stage,
        "category": dead.category,
        "reason": dead.reason,
        "failed_at": failed_at,
        "attempts": _int_in(dead.attempts, 0, INT32_MAX),
        "trace_id": dead.trace_id,
        "task_id": dead.task_id,
        "event_id": dead.event_id,
        "url": url if isinstance(url, str) else None,
        "host": _host(url),
        "http_status": _int_in(last.get("http_status"), 100, 999),
        "source_topic": source.topic if source else None,
        "source_partition": _int_in(source.partition, 0, INT32_MAX) if source else None,
        "source_offset": _int_in(source.offset, 0, INT64_MAX) if source else None,
        "source_timestamp": source.timestamp if source else None,
        "task_json": orjson.dumps(task).decode() if task else None,
        "payload": dead.payload,
        "error_history_json": orjson.dumps(dead.error_history).decode() if dead.error_history else None,
        "failed_date": failed_at[:10],
    }
    stamp = source.timestamp if source else None
    try:
        row["source_timestamp"] = _utc(stamp) if isinstance(stamp, str) else None
    except ValueError:  # a provenance timestamp is informative only
        row["source_timestamp"] = None
    return tuple(row[name] for name in DLQ_COLUMNS)


def dlq_row(record: InputRecord, at: datetime) -> tuple[Any, ...]:
    """A DLQ message as an xact_dlq row (DLQ_COLUMNS): the dead letter it holds, or, when it holds
    none or handling it raised, a row of stage `dlq` (category malformed or internal) with its
    provenance. Never raises."""
    try:
        dead = DeadLetter.decode(record.value if record.value is not None else b"")
    except ContractError as exc:
        dead = DeadLetter.malformed(DLQ_STAGE, f"not a readable dead letter: {exc}", record.value, record.source, at)
    try:
        return _dead_letter_row(dead, record, at)
    except Exception as exc:  # noqa: BLE001 - one record must never fail the batch
        return internal_dlq_row(record, exc, at)


def internal_dlq_row(record: InputRecord, exc: BaseException, at: datetime) -> tuple[Any, ...]:
    """The xact_dlq row of a DLQ message whose handling raised `exc`: stage `dlq`, category internal."""
    return _dead_letter_row(internal_dead_letter(DLQ_STAGE, exc, record, at), record, at)
