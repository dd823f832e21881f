"""Raw claim events: the one schema definition, validation, and the ingest decision for one record.

`ingest_record` turns one Kafka record of xact.events.raw into
- an `xact_events` row (flattened fields plus the redacted raw JSON), when the event is valid;
- one DownloadTask per allowed, distinct attachment URL;
- one DeadLetter per problem: the whole event when it is malformed, or one refused URL.
It never raises for bad input: everything bad becomes a dead letter with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline_lib import ids
from pipeline_lib.bounds import EVENT_CLOCK_SKEW, checked_time
from pipeline_lib.config import ConfigError
from pipeline_lib.contracts import MAX_TEXT, ContractError, DeadLetter, DownloadTask, SourceRef, record_bytes
from pipeline_lib.dead_letters import internal_dead_letter
from pipeline_lib.errors import PipelineError
from pipeline_lib.paths import destination_path
from pipeline_lib.records import InputRecord
from pipeline_lib.redaction import REDACTED, is_secret_key, redact, redact_url, truncate
from pipeline_lib.times import iso_utc, parse_iso
from pipeline_lib.url_policy import UrlPolicy, UrlRefused


class EventInvalid(PipelineError, ValueError):
    """The event breaks its schema; the message names the field and what was expected."""


@dataclass(frozen=True)
class EventField:
    """One flattened column of xact_events and where it lives in the raw event."""

    column: str
    path: tuple[str, ...]  # keys from the top of the event; "data" is the decoded data object
    type: str = "string"  # string | timestamp
    required: bool = False
    aliases: tuple[tuple[str, ...], ...] = ()


# The one schema definition: validation below and the Delta table schema (pipeline_lib.spark.schemas) read it.
EVENT_FIELDS: tuple[EventField, ...] = (
    EventField("trace_id", ("traceId",), required=True, aliases=(("trace_id",),)),
    EventField("event_type", ("type",), required=True),
    EventField("version", ("version",)),
    EventField("utc_datetime", ("utcDateTime",), type="timestamp", required=True),
    EventField("assignment_id", ("data", "assignmentId"), required=True),
    EventField("estimate_version", ("data", "estimateVersion")),
    EventField("description", ("data", "description")),
    EventField("original_assignment_id", ("data", "originalAssignmentId")),
    EventField("xn_address", ("data", "xnAddress")),
    EventField("carrier_id", ("data", "carrierId")),
    EventField("note", ("data", "note")),
    EventField("author", ("data", "author")),
    EventField("sender_reviewer_name", ("data", "senderReviewerName")),
    EventField("sender_reviewer_email", ("data", "senderReviewerEmail")),
    EventField("carrier_reviewer_name", ("data", "carrierReviewerName")),
    EventField("carrier_reviewer_email", ("data", "carrierReviewerEmail")),
    EventField("data_datetime", ("data", "dateTime")),
    EventField(
        "claim_number",
        ("data", "adm.coverageLoss.claimNumber"),
        aliases=(("data", "adm", "coverageLoss", "claimNumber"),),
    ),
    EventField("contact_name", ("data", "contact", "name")),
    EventField("contact_phone", ("data", "contact", "phone")),
    EventField("contact_email", ("data", "contact", "email")),
)

# The flattened fields every download task carries (so every later stage's message): they must
# fit the contracts' limits. The others are stored in xact_events only.
TASK_COLUMNS = frozenset({"trace_id", "event_type", "assignment_id", "estimate_version"})

# Columns ingest adds to the flattened fields, in table order.
DERIVED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("event_id", "string"),
    ("revision", "string"),  # what this delivery lists (ids.event_revision): a corrected re-send differs
    ("identity_version", "int"),  # ids.IDENTITY_VERSION of the revision and task ids; null: the legacy rule
    ("status_subtype", "string"),
    ("event_date", "date"),
    ("attachment_count", "int"),
    ("attachments", "array<string>"),
    ("task_ids", "array<string>"),
    ("raw_json", "string"),
    ("source_topic", "string"),
    ("source_partition", "int"),
    ("source_offset", "long"),
    ("kafka_timestamp", "timestamp"),
    ("ingested_at", "timestamp"),
)


@dataclass
class IngestResult:
    event: dict[str, Any] | None = None  # the xact_events row (with its revision)
    tasks: list[DownloadTask] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    # What an event recorded before attachment identities kept their query (ids.legacy_*) was
    # known by, where that differs: the revision, and each task's old id (by task id). Ingest
    # treats them as known too, so a redelivery emits nothing it already emitted.
    legacy_revision: str | None = None
    legacy_task_ids: dict[str, str] = field(default_factory=dict)


# Kafka's default producer max.request.size; kafka.producer_options may set another.
KAFKA_MAX_REQUEST_SIZE = 1048576
# What later stages may add to a task's record: the cached envelope, the retry headers, and a
# dead letter carrying the task (redacted) with its error history twice (the task's own and the
# dead letter's), plus its reason. Per attempt: one history entry (a message of at most 500
# characters, each at most 6 bytes as JSON) in both places.
_FIXED_HEADROOM = 64 * 1024
_HEADROOM_PER_ATTEMPT = 2 * 3584


@dataclass(frozen=True)
class IngestOptions:
    """What ingest needs besides the URL policy: the identity rule and the record-size limit.

    Args:
        max_record_bytes: the largest Kafka record (key, value, headers) ingest emits: the
            producer's max.request.size less what later stages add to a task (headroom), so the
            task's cached, retry, results and dead-letter records fit the same producer limit.
        identity_ignored_params: query parameters that never name an attachment
            (`ingest.identity_ignored_params`), besides the signing forms ids.py knows.
    """

    max_record_bytes: int = KAFKA_MAX_REQUEST_SIZE - _FIXED_HEADROOM - 5 * _HEADROOM_PER_ATTEMPT
    identity_ignored_params: tuple[str, ...] = ()
    max_request_size: int = KAFKA_MAX_REQUEST_SIZE  # the producer limit behind max_record_bytes, for reasons

    @classmethod
    def for_limits(cls, max_request_size: int, max_attempts: int, ignored: tuple[str, ...] = ()) -> IngestOptions:
        headroom = _FIXED_HEADROOM + max_attempts * _HEADROOM_PER_ATTEMPT
        return cls(max(max_request_size - headroom, 4096), ignored, max_request_size)

    @classmethod
    def from_settings(cls, settings: Any) -> IngestOptions:
        """From the job's Settings: kafka.producer_options' max.request.size, the retry tiers, the identity rule."""
        configured = settings.kafka.producer_options.get("max.request.size", KAFKA_MAX_REQUEST_SIZE)
        text = str(configured).strip()
        if not text.isdigit() or not 65536 <= int(text) <= 2**31 - 1:
            raise ConfigError(
                f"kafka.producer_options max.request.size is {configured!r}: give a whole number of bytes from "
                "65536 to 2147483647 (Event Hubs: 1000000)"
            )
        attempts = len(settings.retry.delays_seconds) + 1
        return cls.for_limits(int(text), attempts, tuple(settings.ingest.identity_ignored_params))


_MISSING = object()


def _get(tree: Any, path: tuple[str, ...]) -> Any:
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return _MISSING
        node = node[key]
    return node


def parse_timestamp(text: str, name: str, now: datetime | None = None) -> datetime:
    """An event's time: ISO 8601, no earlier than 1970 and no later than a day ahead of `now`."""
    try:
        value = parse_iso(text)
    except ValueError:
        raise EventInvalid(f"field {name} must be an ISO 8601 date-time, got {text[:60]!r}") from None
    latest = (now or datetime.now(UTC)) + EVENT_CLOCK_SKEW
    try:
        return checked_time(value, f"field {name}", latest=latest)
    except ValueError as exc:
        raise EventInvalid(f"{exc} (a broken producer clock?)") from None


def _redact_tree(value: Any, known: dict[str, str]) -> Any:
    """Redact every string of a decoded event; `known` holds URLs already redacted."""
    if isinstance(value, str):
        cached = known.get(value)
        return cached if cached is not None else redact(value)
    if isinstance(value, list):
        return [_redact_tree(v, known) for v in value]
    if isinstance(value, dict):
        # A field named like a secret (password, token, sig, ...) is hidden whole: its bare value has
        # no context (no URL, no `key=`) that text redaction could recognise.
        return {
            k: REDACTED if v not in (None, "") and is_secret_key(k) else _redact_tree(v, known)
            for k, v in value.items()
        }
    return value


def decode_event(raw: bytes | str | None) -> dict[str, Any]:
    """Decode and shape-check a raw event; `data` given as a JSON string is decoded in place."""
    if raw is None or (isinstance(raw, (bytes, str)) and not raw.strip()):
        raise EventInvalid("the message is empty; expected one JSON object per message")
    try:
        event = orjson.loads(raw)
    except ValueError as exc:  # orjson.JSONDecodeError, invalid UTF-8 included
        raise EventInvalid(f"the message is not valid JSON ({exc}); expected one JSON object per message") from None
    if not isinstance(event, dict):
        raise EventInvalid(f"the message is a JSON {type(event).__name__}; expected one JSON object per message")
    data = event.get("data", _MISSING)
    if data is _MISSING or data is None:
        raise EventInvalid("required field data is missing")
    if isinstance(data, str):
        try:
            data = orjson.loads(data)
        except ValueError as exc:
            raise EventInvalid(f"field data is a string but not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise EventInvalid(f"field data must be an object (or a JSON string of one), got {type(data).__name__}")
    return {**event, "data": data}


def flatten_event(event: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """The EVENT_FIELDS columns of a decoded event; raises EventInvalid naming the field."""
    row: dict[str, Any] = {}
    for spec in EVENT_FIELDS:
        value = _get(event, spec.path)
        for alias in spec.aliases:
            if value is _MISSING or value is None:
                value = _get(event, alias)
        name = ".".join(spec.path)
        if value is _MISSING or value is None or (isinstance(value, str) and not value.strip()):
            if spec.required:
                alias_text = "".join(f" (or {'.'.join(a)})" for a in spec.aliases)
                raise EventInvalid(f"required field {name}{alias_text} is missing or empty")
            row[spec.column] = None
            continue
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise EventInvalid(f"field {name} must be a string, got {type(value).__name__}")
        text = str(value)
        if len(text) > MAX_TEXT and spec.column in TASK_COLUMNS:  # later stages must carry it (contracts)
            raise EventInvalid(
                f"field {name} is {len(text):,} characters, over the {MAX_TEXT:,} a message field "
                "holds (contracts.MAX_TEXT)"
            )
        row[spec.column] = iso_utc(parse_timestamp(text, name, now)) if spec.type == "timestamp" else text
    return row


def attachment_urls(event: dict[str, Any]) -> list[Any]:
    urls = event["data"].get("attachments")
    if urls is None:
        return []
    if not isinstance(urls, list):
        raise EventInvalid(f"field data.attachments must be a list of URL strings, got a {type(urls).__name__}")
    return urls


def status_subtype(event_type: str) -> str:
    return event_type.rsplit(".", 1)[-1]


def ingest_record(
    raw: bytes | str | None,
    source: SourceRef,
    policy: UrlPolicy,
    now: datetime,
    options: IngestOptions = IngestOptions(),
) -> IngestResult:
    """Decide what one raw event becomes: an events row, download tasks and dead letters.

    Total: whatever `raw` holds, the result is either this decision or, when deciding raised
    unexpectedly, one `internal` dead letter for the record (ingest's equivalent of the I/O
    stages' guarded loop, record_stage.RecordStage). The tasks and dead letters are encoded once here,
    inside the guard, so a message that cannot be encoded fails only its own record.
    """
    try:
        result = _decide(raw, source, policy, now, options)
        for message in result.dead:
            message.encode()
        return result
    except Exception as exc:  # noqa: BLE001 - one event must never fail the batch (invariant 8)
        record = InputRecord(None, raw, source)
        return IngestResult(dead=[internal_dead_letter("ingest", exc, record, now)])


# Flattened columns that are not free text: ids and times the pipeline parsed itself.
_PARSED_COLUMNS = frozenset(spec.column for spec in EVENT_FIELDS if spec.type == "timestamp")


def _shown(value: Any) -> str:
    """An attachment as the tables show it: a URL redacted, anything else as redacted JSON, bounded."""
    if isinstance(value, str):
        return redact_url(value)
    try:
        text = orjson.dumps(_redact_tree(value, {})).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = type(value).__name__
    return truncate(redact(text), 200)


def _refused(
    index: int,
    rule: str,
    message: str,
    shown: str,
    event_id: str,
    trace_id: str,
    source: SourceRef,
    now_iso: str,
    task_id: str | None,
) -> DeadLetter:
    """The dead letter of one attachment ingest does not emit: refused by the URL policy, or over a limit."""
    return DeadLetter(
        dlq_id=ids.dlq_id("ingest", event_id, str(index), shown),
        stage="ingest",
        category="policy" if rule not in _LIMIT_RULES else "malformed",
        reason=f"attachment {index} refused ({rule}): {message}; the event's other attachments were kept",
        failed_at=now_iso,
        source=source,
        trace_id=trace_id,
        event_id=event_id,
        task_id=task_id,
        payload=shown,
    )


_LIMIT_RULES = frozenset({"length", "record_size"})


def _dead_letter_growth(task: DownloadTask, shown_url: str) -> int:
    """Bytes a task's dead letter holds beyond the task's own record and the fixed headroom: the
    trace id a fourth time (key, header and task carry it; the dead letter has its own field
    too), and the redacted URL's growth over the live one (`***` can be longer than a short value)."""
    return len(orjson.dumps(task.trace_id)) + max(0, len(orjson.dumps(shown_url)) - len(orjson.dumps(task.url)))


def _decide(
    raw: bytes | str | None, source: SourceRef, policy: UrlPolicy, now: datetime, options: IngestOptions
) -> IngestResult:
    now_iso = iso_utc(now)
    try:
        event = decode_event(raw)
        row = flatten_event(event, now)
        urls = attachment_urls(event)
    except EventInvalid as exc:
        return IngestResult(dead=[DeadLetter.malformed("ingest", str(exc), raw, source, now)])

    # Ids come from the values as sent (stable across versions); everything stored or sent on
    # shows them redacted: a secret pasted into a note, a trace id or an assignment id stays in
    # the raw event only (invariant 11).
    event_id = ids.event_id(row["trace_id"], row["event_type"], row["utc_datetime"])
    shown_text = {v: redact(v) for k, v in row.items() if k not in _PARSED_COLUMNS and isinstance(v, str)}
    row = {k: v if k in _PARSED_COLUMNS or not isinstance(v, str) else shown_text[v] for k, v in row.items()}
    trace_id, event_type = row["trace_id"], row["event_type"]
    subtype = status_subtype(event_type)
    event_date = row["utc_datetime"][:10]
    ignored = options.identity_ignored_params
    strings = [u for u in urls if isinstance(u, str)]
    canonical = {u: ids.canonical_url(u, ignored) for u in strings}  # once per URL: it parses the URL
    legacy_canonical = {u: ids.legacy_canonical_url(u) for u in strings}
    revision = ids.event_revision(list(canonical.values()))
    legacy_revision = ids.event_revision(list(legacy_canonical.values()))
    result = IngestResult(legacy_revision=legacy_revision if legacy_revision != revision else None)
    seen: set[str] = set()
    shown_urls = {u: redact_url(u) for u in strings}
    for index, url in enumerate(urls):
        shown = shown_urls[url] if isinstance(url, str) else _shown(url)
        tid = ids.task_id_of(event_id, canonical[url]) if isinstance(url, str) else None

        def refuse(rule: str, message: str, index: int = index, shown: str = shown, tid: str | None = tid) -> None:
            result.dead.append(_refused(index, rule, message, shown, event_id, trace_id, source, now_iso, tid))

        if isinstance(url, str) and len(url) > MAX_TEXT:
            refuse(
                "length",
                f"the URL is {len(url):,} characters, over the {MAX_TEXT:,} a message field holds (contracts.MAX_TEXT)",
            )
            continue
        try:
            policy.check_url(url)
        except UrlRefused as exc:
            refuse(exc.rule, str(exc))
            continue
        assert tid is not None  # check_url refuses what is not a string
        if tid in seen:  # the same object listed twice (maybe with another signature): one task
            continue
        task = DownloadTask(
            task_id=tid,
            trace_id=trace_id,
            event_id=event_id,
            url=url.strip(),
            blob_path=destination_path(subtype, row["assignment_id"], trace_id, url, tid, row["estimate_version"]),
            status_subtype=subtype,
            assignment_id=row["assignment_id"],
            event_type=event_type,
            event_time=row["utc_datetime"],
            event_date=event_date,
            created_at=now_iso,
            estimate_version=row["estimate_version"],
            event_produced_at=source.timestamp,
        )
        # What download will accept: the same checks as its decode, and a record within the limit.
        try:
            task.check()
        except ContractError as exc:
            refuse("length", f"its download task breaks the contract download reads ({exc})")
            continue
        # The largest record the task can become is its dead letter: the task (its URL redacted,
        # which may lengthen it) and the trace id once more, besides what the headroom covers.
        value = task.encode()
        size = record_bytes(task.trace_id, value, task.headers()) + _dead_letter_growth(task, shown)
        if size > options.max_record_bytes:
            refuse(
                "record_size",
                (
                    f"its download task would be a {size:,}-byte Kafka record, over the {options.max_record_bytes:,} "
                    f"bytes ingest emits (kafka.producer_options max.request.size {options.max_request_size:,}, less "
                    "room for what the retry and dead-letter records add)"
                ),
            )
            continue
        seen.add(tid)
        result.tasks.append(task)
        legacy = ids.task_id_of(event_id, legacy_canonical[url])
        if legacy != tid:
            result.legacy_task_ids[tid] = legacy
    result.event = {
        **row,
        "event_id": event_id,
        "revision": revision,
        "identity_version": ids.IDENTITY_VERSION,
        "status_subtype": subtype,
        "event_date": event_date,
        "attachment_count": len(urls),
        "attachments": [shown_urls[u] if isinstance(u, str) else _shown(u) for u in urls],
        "task_ids": [t.task_id for t in result.tasks],
        "raw_json": orjson.dumps(_redact_tree(event, {**shown_text, **shown_urls})).decode(),  # each string once
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "kafka_timestamp": source.timestamp,
        "ingested_at": now_iso,
    }
    return result
