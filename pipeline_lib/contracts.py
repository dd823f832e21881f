"""The Kafka message contracts of the pipeline: fields, headers, JSON encoding and versioning.

Every producer and consumer in the project encodes and decodes through this module. A message
body is a JSON object with `schema` (the message kind) and `version`; readers accept unknown
fields (a newer writer may add some) and reject a missing required field, a field of the wrong
type or out of range, a wrong kind or a newer major version with a ContractError that names it.
`decode` is total: whatever the bytes, it returns a valid message or raises ContractError (the
caller dead-letters the record as malformed), never anything else.

Headers repeat what an operator needs without parsing the body (task id, attempt, trace id,
and for dead letters the provenance, in the spirit of Kafka Connect's error-context headers).

Secrets: `DownloadTask.url` is the only field that may hold a live presigned URL, and it travels
only on the internal work topics (pending, retry tiers, and cached, whose upload may send a task
back for a fresh download); results and dead letters carry redacted URLs (invariant 5).

Retries: a message on a retry tier is the stage's own message (a DownloadTask, or a
CachedAttachment whose task says so) with `due_at`, `retry_stage` and `return_topic` set; the
`xact.retry.*` headers repeat them so the scheduler never parses a body.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import orjson

from pipeline_lib import ids
from pipeline_lib.bounds import INT32_MAX, INT64_MAX, checked_time
from pipeline_lib.errors import PipelineError
from pipeline_lib.paths import MAX_COMPONENT, MAX_PATH_BYTES, MAX_PATH_SEGMENTS
from pipeline_lib.redaction import redact, redact_payload, redact_url, truncate
from pipeline_lib.times import iso_utc, parse_iso

SCHEMA_VERSION = 1
PAYLOAD_LIMIT = 4000  # characters of an offending payload kept in a dead letter

# Header names.
H_SCHEMA = "xact.schema"
H_TASK_ID = "xact.task_id"
H_ATTEMPT = "xact.attempt"
H_TRACE_ID = "xact.trace_id"
H_ERR_STAGE = "xact.errors.stage"
H_ERR_TOPIC = "xact.errors.topic"
H_ERR_PARTITION = "xact.errors.partition"
H_ERR_OFFSET = "xact.errors.offset"
H_ERR_TIMESTAMP = "xact.errors.timestamp"
H_ERR_REASON = "xact.errors.reason"
H_RETRY_DUE_AT = "xact.retry.due_at"
H_RETRY_STAGE = "xact.retry.stage"
H_RETRY_TOPIC = "xact.retry.return_topic"
H_RETRY_FORWARDED_AT = "xact.retry.forwarded_at"  # set by the retry scheduler when it moves a message
# A retry-tier record that carries no task: the scheduler writes one when it starts, so that Spark
# runs a batch (which fires the held messages' due timeouts) even when no new retry arrives.
H_RETRY_TICK = "xact.retry.tick"


class ContractError(PipelineError, ValueError):
    """A message does not follow its contract; the message names the field and the kind."""


M = TypeVar("M", bound="Message")


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}

MAX_ATTEMPT = 1000  # far above any retry.delays_seconds; a bigger attempt number is hostile
MAX_HISTORY = 200  # entries of a task's error history
MAX_TEXT = 65536  # characters of a free-text field (URLs, reasons, payloads are far shorter)
_HEX = frozenset("0123456789abcdef")


def is_hex_id(value: object, length: int = 32) -> bool:
    """A pipeline id as ids.py makes them: `length` lowercase hex characters."""
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_source(value: object) -> bool:
    if isinstance(value, SourceRef):
        value = asdict(value)
    if not isinstance(value, dict) or set(value) - {"topic", "partition", "offset", "timestamp"}:
        return False
    return (
        isinstance(value.get("topic"), str)
        and _is_int(value.get("partition"))
        and 0 <= value["partition"] <= INT32_MAX
        and _is_int(value.get("offset"))
        and 0 <= value["offset"] <= INT64_MAX
        and (value.get("timestamp") is None or isinstance(value.get("timestamp"), str))
    )


# What each annotation of a message field accepts, as read from JSON.
_TYPE_CHECKS: dict[str, Any] = {
    "str": lambda v: isinstance(v, str) and len(v) <= MAX_TEXT,
    "int": _is_int,
    "dict[str, Any]": lambda v: isinstance(v, dict),
    "list[dict[str, Any]]": lambda v: isinstance(v, list) and all(isinstance(x, dict) for x in v),
    "SourceRef": _is_source,
}


def _check_types(cls: type, data: dict[str, Any]) -> None:
    for f in fields(cls):
        if f.name not in data:
            continue
        value, annotation = data[f.name], str(f.type)
        base, _, rest = annotation.partition(" | ")
        if value is None and rest == "None":
            continue
        if not _TYPE_CHECKS[base](value):
            expected = base + (" or null" if rest == "None" else "")
            raise ContractError(f"{cls.KIND}: field {f.name} must be {expected}, got {type(value).__name__}")  # type: ignore[attr-defined]


def _check_range(kind: str, name: str, value: int | None, low: int, high: int) -> None:
    if value is not None and not low <= value <= high:
        raise ContractError(f"{kind}: field {name} is {value}, outside {low}..{high}")


def _check_time(kind: str, name: str, value: str | None) -> None:
    if value is None:
        return
    try:
        checked_time(parse_iso(value), name)
    except ValueError as exc:
        raise ContractError(f"{kind}: field {name} must be an ISO 8601 time in range: {exc}") from None


def _check_date(kind: str, name: str, value: str) -> None:
    if len(value) != 10 or value[4] != "-" or value[7] != "-":
        raise ContractError(f"{kind}: field {name} must be a date YYYY-MM-DD, got {value[:40]!r}")
    _check_time(kind, name, value)


def check_blob_path(kind: str, path: str) -> None:
    """A lake path relative to the files prefix: no traversal, no empty or dot components, bounded.

    ingest builds it from sanitised components (paths.py); a message on an internal topic could
    carry anything, and the upload writes to this path, so it is checked again on decode, with
    the bounds paths.py keeps (so every store can take it: see paths.py's docstring).
    """
    parts = path.split("/")
    bad = (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or len(path.encode()) > MAX_PATH_BYTES
        or len(parts) > MAX_PATH_SEGMENTS
        or any(p in ("", ".", "..") or len(p.encode()) > MAX_COMPONENT for p in parts)
    )
    if bad:
        raise ContractError(f"{kind}: field blob_path {path[:80]!r} is not a safe relative lake path")


# What a Kafka producer adds to a record's key, value and headers when it checks max.request.size
# (a record batch's header, 61 bytes, and the record's varint lengths, with room to spare).
RECORD_OVERHEAD = 128


def record_bytes(key: str | None, value: str, headers: dict[str, str]) -> int:
    """The size a Kafka producer counts for one record against max.request.size (an upper bound)."""
    size = RECORD_OVERHEAD + len(value.encode()) + (len(key.encode()) if key else 0)
    return size + sum(len(k.encode()) + len(v.encode()) + 10 for k, v in headers.items())


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


@dataclass(frozen=True)
class SourceRef:
    """Where a record was read: the provenance carried into dead letters."""

    topic: str
    partition: int
    offset: int
    timestamp: str | None = None  # ISO 8601, UTC


@dataclass(frozen=True)
class Message:
    KIND: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: fields hold JSON-ready values (dataclasses.asdict deep-copies, 4x slower).
        body: dict[str, Any] = {"schema": self.KIND, "version": SCHEMA_VERSION}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            body[name] = asdict(value) if isinstance(value, SourceRef) else value
        return body

    def encode(self) -> str:
        return orjson.dumps(self.to_dict()).decode()

    def headers(self) -> dict[str, str]:
        return {H_SCHEMA: f"{self.KIND}/{SCHEMA_VERSION}"}

    @classmethod
    def decode(cls: type[M], raw: str | bytes | dict[str, Any]) -> M:
        try:
            data = raw if isinstance(raw, dict) else orjson.loads(raw)
        except (ValueError, TypeError) as exc:
            raise ContractError(f"{cls.KIND}: body is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ContractError(f"{cls.KIND}: body must be a JSON object")
        if data.get("schema") != cls.KIND:
            raise ContractError(f"expected a {cls.KIND} message, got schema {data.get('schema')!r}")
        if not isinstance(data.get("version"), int) or data["version"] > SCHEMA_VERSION:
            raise ContractError(
                f"{cls.KIND}: version {data.get('version')!r} is newer than this reader ({SCHEMA_VERSION}); upgrade"
            )
        known = {f.name: f for f in fields(cls)}
        missing = [
            name
            for name, f in known.items()
            if name not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise ContractError(f"{cls.KIND}: missing required field(s) {', '.join(missing)}")
        _check_types(cls, data)
        try:
            message = cls(**{k: v for k, v in data.items() if k in known})
        except (TypeError, ValueError) as exc:
            raise ContractError(f"{cls.KIND}: {exc}") from None
        message.validate()
        return message

    def validate(self) -> None:
        """Range and format checks beyond the field types (decode calls it); ContractError names the field."""

    def check(self) -> None:
        """Everything decode checks, on a message built in memory: what a producer calls before it
        emits, so that no reader refuses what a stage accepted (invariant 9)."""
        _check_types(type(self), self.to_dict())
        self.validate()


@dataclass(frozen=True)
class DownloadTask(Message):
    """One attachment to fetch: the body of xact.downloads.pending and the retry topics."""

    KIND: ClassVar[str] = "download_task"

    task_id: str
    trace_id: str
    event_id: str
    url: str  # may be presigned: never log or store it without redact_url
    blob_path: str  # relative to the lake's files prefix
    status_subtype: str
    assignment_id: str
    event_type: str
    event_time: str  # the event's utcDateTime, ISO 8601
    event_date: str  # YYYY-MM-DD of event_time, the partition of every table
    created_at: str
    estimate_version: str | None = None
    event_produced_at: str | None = None  # the raw event's Kafka timestamp: where latency starts
    attempt: int = 0  # 0 = the first try; one counter across download and upload
    history: list[dict[str, Any]] = field(default_factory=list)  # one history_entry per failed attempt
    replay_id: str | None = None
    replay_generation: int = 0  # 0: never replayed; each replay of the task adds one (its lineage)
    breaker_waits: int = 0  # times it waited for a host's open circuit breaker (no attempt used)
    refetches: int = 0  # times the upload found no cache file and downloaded it again (no attempt used)
    first_attempt_at: str | None = None
    # Set while the task waits on a retry tier:
    due_at: str | None = None  # ISO 8601 UTC; never re-attempted before
    retry_stage: str | None = None  # download | upload: the stage that retries it
    return_topic: str | None = None  # the stage's input topic, where the scheduler puts it back

    def headers(self) -> dict[str, str]:
        out = {
            **super().headers(),
            H_TASK_ID: self.task_id,
            H_ATTEMPT: str(self.attempt),
            H_TRACE_ID: self.trace_id,
        }
        if self.due_at:
            out[H_RETRY_DUE_AT] = self.due_at
            out[H_RETRY_STAGE] = str(self.retry_stage)
            out[H_RETRY_TOPIC] = str(self.return_topic)
        return out

    def validate(self) -> None:
        kind = self.KIND
        for name in ("task_id", "event_id"):
            if not is_hex_id(getattr(self, name)):
                raise ContractError(f"{kind}: field {name} must be 32 lowercase hex characters (ids.py)")
        if not self.trace_id or not self.url:
            raise ContractError(f"{kind}: fields trace_id and url must not be empty")
        check_blob_path(kind, self.blob_path)
        _check_date(kind, "event_date", self.event_date)
        for name in ("event_time", "created_at", "first_attempt_at", "due_at", "event_produced_at"):
            _check_time(kind, name, getattr(self, name))
        _check_range(kind, "attempt", self.attempt, 0, MAX_ATTEMPT)
        _check_range(kind, "replay_generation", self.replay_generation, 0, MAX_ATTEMPT)
        _check_range(kind, "breaker_waits", self.breaker_waits, 0, INT32_MAX)
        _check_range(kind, "refetches", self.refetches, 0, MAX_ATTEMPT)
        _check_range(kind, "history entries", len(self.history), 0, MAX_HISTORY)

    def redacted(self) -> dict[str, Any]:
        """The task as a dict that is safe to log or store."""
        data = self.to_dict()
        del data["schema"], data["version"]
        data["url"] = redact_url(self.url)
        return data


@dataclass(frozen=True)
class DeadLetter(Message):
    """A record the pipeline gave up on: the body of xact.downloads.dlq and a row of xact_dlq."""

    KIND: ClassVar[str] = "dead_letter"

    dlq_id: str
    stage: str  # ingest | download | upload
    category: str  # e.g. malformed, policy, permanent, exhausted
    reason: str  # what a human can act on
    failed_at: str
    attempts: int = 0
    source: SourceRef | None = None
    trace_id: str | None = None
    task_id: str | None = None
    event_id: str | None = None
    task: dict[str, Any] | None = None  # DownloadTask.redacted()
    payload: str | None = None  # the offending input, truncated and redacted
    error_history: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Redact at construction, so no code path can put a secret on the DLQ.
        object.__setattr__(self, "reason", truncate(redact(self.reason), 8000))
        if self.payload is not None:
            # Redacted whole (decoded first when JSON), then cut: a cut could split a secret's context.
            object.__setattr__(self, "payload", truncate(redact_payload(self.payload), PAYLOAD_LIMIT))
        if isinstance(self.source, dict):
            object.__setattr__(self, "source", SourceRef(**self.source))

    def validate(self) -> None:
        kind = self.KIND
        if not self.dlq_id or not self.stage or not self.category:
            raise ContractError(f"{kind}: fields dlq_id, stage and category must not be empty")
        _check_time(kind, "failed_at", self.failed_at)
        _check_range(kind, "attempts", self.attempts, 0, MAX_ATTEMPT + 1)
        _check_range(kind, "error_history entries", len(self.error_history), 0, MAX_HISTORY)

    @classmethod
    def malformed(
        cls, stage: str, reason: str, payload: bytes | str | None, source: SourceRef, at: datetime
    ) -> DeadLetter:
        """The dead letter of a record a stage cannot read: its id is its provenance, so reading the
        same record again gives the same dead letter."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
        return cls(
            dlq_id=ids.dlq_id(stage, source.topic, str(source.partition), str(source.offset)),
            stage=stage,
            category="malformed",
            reason=reason,
            failed_at=iso_utc(at),
            source=source,
            payload=text,
        )

    def headers(self) -> dict[str, str]:
        out = {**super().headers(), H_ERR_STAGE: self.stage, H_ERR_REASON: truncate(self.reason, 200)}
        if self.task_id:
            out[H_TASK_ID] = self.task_id
            out[H_ATTEMPT] = str(self.attempts)
        if self.trace_id:
            out[H_TRACE_ID] = self.trace_id
        if self.source:
            out[H_ERR_TOPIC] = self.source.topic
            out[H_ERR_PARTITION] = str(self.source.partition)
            out[H_ERR_OFFSET] = str(self.source.offset)
            if self.source.timestamp:
                out[H_ERR_TIMESTAMP] = self.source.timestamp
        return out


@dataclass(frozen=True)
class AttachmentResult(Message):
    """One outcome of one attempt of a task: the body of xact.downloads.results.

    The download and upload stages emit one per outcome; the results job folds them into one
    xact_attachments row per task: `completed` is final, otherwise the latest replay generation,
    then attempt, then occurred_at wins. URLs are redacted.
    """

    KIND: ClassVar[str] = "attachment_result"

    task_id: str
    trace_id: str
    attempt: int
    stage: str  # download | upload
    status: str  # one of RESULT_STATUSES
    occurred_at: str  # ISO 8601 UTC: when this outcome happened
    event_date: str  # YYYY-MM-DD of the event's own time
    attachment_url: str | None = None  # redacted
    blob_path: str | None = None
    status_subtype: str | None = None
    assignment_id: str | None = None
    bytes: int | None = None
    sha256: str | None = None
    content_type: str | None = None
    http_status: int | None = None
    error_category: str | None = None
    error_message: str | None = None  # redacted
    created_at: str | None = None  # when ingest created the task
    downloaded_at: str | None = None
    uploaded_at: str | None = None
    replay_id: str | None = None  # the replay that re-published the task, if any
    replay_generation: int = 0  # the task's lineage: 0 for the first life, +1 per replay
    event_time: str | None = None  # the event's utcDateTime
    event_produced_at: str | None = None  # the raw event's Kafka timestamp (event-to-inventory latency)

    def validate(self) -> None:
        kind = self.KIND
        if not is_hex_id(self.task_id) or not self.trace_id:
            raise ContractError(f"{kind}: field task_id must be 32 lowercase hex characters and trace_id non-empty")
        _check_range(kind, "attempt", self.attempt, 0, MAX_ATTEMPT)
        _check_range(kind, "replay_generation", self.replay_generation, 0, MAX_ATTEMPT)
        _check_range(kind, "bytes", self.bytes, 0, INT64_MAX)
        _check_range(kind, "http_status", self.http_status, 100, 999)
        if self.sha256 is not None and not is_hex_id(self.sha256, 64):
            raise ContractError(f"{kind}: field sha256 must be 64 lowercase hex characters")
        _check_date(kind, "event_date", self.event_date)
        for name in ("occurred_at", "created_at", "downloaded_at", "uploaded_at", "event_time", "event_produced_at"):
            _check_time(kind, name, getattr(self, name))

    def __post_init__(self) -> None:
        if self.status not in RESULT_STATUSES:
            raise ContractError(f"attachment_result: status {self.status!r} is not one of {', '.join(RESULT_STATUSES)}")
        if self.attachment_url is not None:
            object.__setattr__(self, "attachment_url", redact_url(self.attachment_url))
        if self.error_message is not None:
            object.__setattr__(self, "error_message", truncate(redact(self.error_message), 2000))

    def headers(self) -> dict[str, str]:
        return {**super().headers(), H_TASK_ID: self.task_id, H_ATTEMPT: str(self.attempt), H_TRACE_ID: self.trace_id}


@dataclass(frozen=True)
class CachedAttachment(Message):
    """A downloaded file waiting for upload: the body of xact.downloads.cached.

    It carries everything the upload needs, so download and upload may run on different hosts
    (invariant 4): the full task (including its live URL, in case the cache is lost and the task
    must be downloaded again), the cache URI, size, sha256 and content type.
    """

    KIND: ClassVar[str] = "cached_attachment"

    task: dict[str, Any]  # DownloadTask.to_dict()
    cache_uri: str  # file:///... on a local disk or a shared mount
    bytes: int
    sha256: str
    content_type: str | None
    downloaded_at: str

    @property
    def download_task(self) -> DownloadTask:
        """The task, decoded and validated once."""
        task = self.__dict__.get("_task")
        if task is None:
            task = DownloadTask.decode(self.task)
            object.__setattr__(self, "_task", task)
        return task

    def validate(self) -> None:
        kind = self.KIND
        _check_range(kind, "bytes", self.bytes, 0, INT64_MAX)
        if not is_hex_id(self.sha256, 64):
            raise ContractError(f"{kind}: field sha256 must be 64 lowercase hex characters")
        _check_time(kind, "downloaded_at", self.downloaded_at)
        try:
            self.download_task  # noqa: B018 - decodes and validates the nested task now
        except ContractError as exc:
            raise ContractError(f"{kind}: field task: {exc}") from None

    def headers(self) -> dict[str, str]:
        task = self.download_task
        return {**task.headers(), H_SCHEMA: f"{self.KIND}/{SCHEMA_VERSION}"}


def history_entry(
    at: str, stage: str, attempt: int, category: str, http_status: int | None, message: str
) -> dict[str, Any]:
    """One failed attempt in a task's history (the message is redacted)."""
    return {
        "at": at,
        "stage": stage,
        "attempt": attempt,
        "category": category,
        "http_status": http_status,
        "message": truncate(redact(message), 500),
    }


# completed: in OneLake; downloaded: cached, upload pending; retrying: a transient failure sent to
# a retry tier; dead: dead-lettered (permanent, or attempts exhausted).
RESULT_STATUSES = ("completed", "downloaded", "retrying", "dead")
