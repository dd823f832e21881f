"""The seams hold (invariant 9): what ingest accepts, every later stage decodes and carries.

A chain property test over generated events, long and hostile fields included: every task ingest
emits decodes in download and fits the producer's record limit; what download emits (cached,
retry tiers, dead letters, results) decodes in upload, the retry scheduler, results and the DLQ
table; what upload emits decodes in results and the DLQ table, through every retry tier to the
dead letter. A limit that differs between two stages fails it. Issue #22, item 3.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib.config import load_settings
from pipeline_lib.contracts import (
    MAX_TEXT,
    AttachmentResult,
    CachedAttachment,
    DeadLetter,
    DownloadTask,
    SourceRef,
    record_bytes,
)
from pipeline_lib.download.downloader import DownloadOutcome
from pipeline_lib.download.stage import DownloadStage
from pipeline_lib.events import IngestOptions, IngestResult, ingest_record
from pipeline_lib.failures import Failure
from pipeline_lib.records import InputRecord, header_map
from pipeline_lib.retry_schedule import schedule_record
from pipeline_lib.routing import OutMessage
from pipeline_lib.table_rows import DLQ_COLUMNS, dlq_row, result_row
from pipeline_lib.upload.stage import UploadStage
from pipeline_lib.upload.storage import StoredFile
from pipeline_lib.url_policy import UrlPolicy

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
MAX_REQUEST = 1_000_000  # the Fabric and Databricks overlays' max.request.size
SETTINGS = load_settings("local", overrides={"kafka": {"producer_options": {"max.request.size": MAX_REQUEST}}})
OPTIONS = IngestOptions.from_settings(SETTINGS)
POLICY = UrlPolicy(frozenset({"https"}), ())
SRC = SourceRef(SETTINGS.topics.events_raw.name, 0, 7, "2026-12-03T11:59:59.000Z")
DOWNLOAD = DownloadStage(SETTINGS, downloader=object())  # type: ignore[arg-type]  # route() only: no I/O
UPLOAD = UploadStage(SETTINGS, uploader=object())  # type: ignore[arg-type]
# A failure message as long as failures get: every history entry and reason at its bound.
LONG_FAILURE = '\x01\\"é𝄞' * 3000

# Pieces that grow fast when encoded (JSON escapes of control characters take 6 bytes, astral
# characters 4 bytes of UTF-8), repeated to sizes around and over the contracts' MAX_TEXT.
_piece = st.sampled_from(["a", "\x00", "\\", '"', "é", "𝄞", "%2F", "%3F", "/", " ", "\u2028", "sig=S"])
_text = st.builds(lambda p, n: p * n, _piece, st.sampled_from([1, 7, 300, 10_000, MAX_TEXT // 2, MAX_TEXT + 1]))


def _url(path: str, query: str) -> str:
    return f"https://files.example.com/{path}?{query}"


_event = st.fixed_dictionaries(
    {
        "traceId": _text,
        "type": st.builds(lambda t: f"verisk.claims.{t}", _text),
        "assignmentId": _text,
        "estimateVersion": _text,
        "note": _text,
        "attachments": st.lists(st.builds(_url, _text, _text), max_size=3),
    }
)


def _raw(fields: dict) -> str:
    return json.dumps(
        {
            "traceId": fields["traceId"],
            "type": fields["type"],
            "utcDateTime": "2026-12-03T10:00:00Z",
            "data": {
                "assignmentId": fields["assignmentId"],
                "estimateVersion": fields["estimateVersion"],
                "note": fields["note"],
                "attachments": fields["attachments"],
            },
        }
    )


class Seen(dict[str, int]):
    """What a chain emitted: counts per outcome, and every record with the table row it became."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[tuple[str, str | None, str, dict[str, str], object]] = []


def _deliver(message: OutMessage, seen: Seen) -> DownloadTask | CachedAttachment | None:
    """The consumer of `message`'s topic reads it as that consumer does; returns what it decoded."""
    topic, key, value, headers = message.row()
    size = record_bytes(key, value, headers)
    assert size <= MAX_REQUEST, f"{message.outcome} record on {topic} is {size:,} bytes"
    seen[message.outcome] = seen.get(message.outcome, 0) + 1
    record = InputRecord(key, value.encode(), SourceRef(topic, 0, 1, "2026-12-03T12:00:00.000Z"))
    if topic == SETTINGS.topics.results.name:
        row = result_row(record, NOW)
        assert not isinstance(row, DeadLetter), row.reason
        seen.records.append((topic, key, value, headers, row))
        return None
    if topic == SETTINGS.topics.dlq.name:
        row = dict(zip(DLQ_COLUMNS, dlq_row(record, NOW), strict=True))
        assert row["stage"] != "dlq", row["reason"]  # not the DLQ table's own malformed row
        seen.records.append((topic, key, value, headers, row))
        return None
    seen.records.append((topic, key, value, headers, None))
    if topic in SETTINGS.retry_topics:
        waiting = schedule_record(
            record,
            header_map(headers.items()),
            frozenset({SETTINGS.topics.pending.name, SETTINGS.topics.cached.name}),
            NOW,
            10**6,
        )
        assert not isinstance(waiting, DeadLetter), waiting.reason
        topic = waiting.return_topic  # the scheduler forwards it there when due
    if topic == SETTINGS.topics.pending.name:
        return DownloadTask.decode(value)
    assert topic == SETTINGS.topics.cached.name, topic
    return CachedAttachment.decode(value)


def _download_until_dead(task: DownloadTask, seen: Seen) -> None:
    while True:
        failed = Failure("http_transient", True, LONG_FAILURE, 503)
        routed = DOWNLOAD.route(DownloadOutcome(task, NOW, NOW, failure=failed), SRC)
        again = [_deliver(m, seen) for m in routed.messages]
        if not isinstance(again[0], DownloadTask):
            return
        task = again[0]


def _upload_until_dead(cached: CachedAttachment, seen: Seen) -> None:
    while True:
        failed = Failure("http_transient", True, LONG_FAILURE, 503)
        outcome = UPLOAD.route(_upload_outcome(cached, failure=failed), SRC)
        again = [_deliver(m, seen) for m in outcome.messages]
        if not isinstance(again[0], CachedAttachment):
            return
        cached = again[0]


def _upload_outcome(cached: CachedAttachment, **kw):
    from pipeline_lib.upload.uploader import UploadOutcome

    return UploadOutcome(cached, cached.download_task, NOW, 0.1, **kw)


def chain(raw: str, result: IngestResult | None = None) -> Seen:
    """Every message the stages emit for one raw event, each delivered to its reader."""
    seen = Seen()
    result = result or ingest_record(raw, SRC, POLICY, NOW, OPTIONS)
    for dead in result.dead:
        _deliver(OutMessage("ingest-dead", SETTINGS.topics.dlq.name, dead.trace_id, dead), seen)
    for emitted in result.tasks:
        task = _deliver(OutMessage("task", SETTINGS.topics.pending.name, emitted.trace_id, emitted), seen)
        assert task == emitted  # download reads exactly what ingest emitted
        assert isinstance(task, DownloadTask)
        stored = CachedAttachment(
            task=task.to_dict(),
            cache_uri=f"file:///cache/{task.task_id}",
            bytes=10,
            sha256="0" * 64,
            content_type="application/pdf",
            downloaded_at="2026-12-03T12:00:00Z",
        )
        routed = DOWNLOAD.route(DownloadOutcome(task, NOW, NOW, cached=stored), SRC)
        cached = [c for c in (_deliver(m, seen) for m in routed.messages) if c is not None]
        assert len(cached) == 1 and isinstance(cached[0], CachedAttachment)
        _download_until_dead(task, seen)
        done = StoredFile(f"/lake/{task.blob_path}", 10, "0" * 64, True)
        for message in UPLOAD.route(_upload_outcome(cached[0], stored=done), SRC).messages:
            _deliver(message, seen)
        _upload_until_dead(cached[0], seen)
    return seen


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_event)
def test_every_message_of_every_stage_is_accepted_by_the_next_for_generated_events(fields):
    chain(_raw(fields))


def test_an_event_just_under_the_producer_limit_becomes_dead_letters_not_an_unwritable_record():
    # An event of about 900 KB: three fields of 50,000 characters that JSON escapes to 6 bytes each.
    # Every task carries all three (and the trace id again as its key and a header), so each would
    # be a record over 1,000,000 bytes: the event stays, its attachments are dead letters naming the limit.
    url = _url("a.pdf", "x=" + "%00" * 300)
    heavy = "\x00" * 50_000
    raw = _raw(
        {
            "traceId": heavy,
            "type": "verisk.claims.documentsReceived",
            "assignmentId": heavy,
            "estimateVersion": heavy,
            "note": "n",
            "attachments": [url, url + "1", url + "2"],
        }
    )
    assert len(raw.encode()) < MAX_REQUEST
    result = ingest_record(raw, SRC, POLICY, NOW, OPTIONS)
    assert result.tasks == [] and result.event is not None and len(result.dead) == 3
    assert all("max.request.size 1,000,000" in d.reason and d.task_id for d in result.dead)
    chain(raw)


def test_a_url_or_field_longer_than_a_message_field_holds_is_refused_at_ingest_naming_the_limit():
    long_url = _url("a.pdf", "q=" + "x" * MAX_TEXT)
    fields = {
        "traceId": "T",
        "type": "t.documentsReceived",
        "assignmentId": "A",
        "estimateVersion": "1",
        "note": "n",
        "attachments": [long_url],
    }
    result = ingest_record(_raw(fields), SRC, POLICY, NOW)
    (dead,) = result.dead
    assert dead.category == "malformed" and "contracts.MAX_TEXT" in dead.reason and dead.task_id
    too_long = "T" * (MAX_TEXT + 1)
    (dead,) = ingest_record(
        _raw(
            {
                "traceId": too_long,
                "type": "t.x",
                "assignmentId": "A",
                "estimateVersion": "1",
                "note": "n",
                "attachments": [],
            }
        ),
        SRC,
        POLICY,
        NOW,
    ).dead
    assert dead.category == "malformed" and "field traceId is 65,537 characters" in dead.reason


@pytest.mark.parametrize("limit", [1_048_576, 1_000_000, 200_000])
def test_ingest_keeps_room_for_what_later_stages_add(limit):
    options = IngestOptions.for_limits(limit, len(SETTINGS.retry.delays_seconds) + 1)
    assert 0 < options.max_record_bytes < limit - 64 * 1024
    assert replace(options, max_record_bytes=1).max_request_size == limit


def test_results_and_cached_messages_decode_as_their_readers_do():
    # The readers' own decoders: a smoke test that _deliver checks what the stages really read.
    (task,) = ingest_record(
        _raw(
            {
                "traceId": "T",
                "type": "t.documentsReceived",
                "assignmentId": "A",
                "estimateVersion": "1",
                "note": "n",
                "attachments": [_url("a.pdf", "sig=S")],
            }
        ),
        SRC,
        POLICY,
        NOW,
    ).tasks
    seen = chain(
        json.dumps(
            {
                "traceId": "T",
                "type": "t.documentsReceived",
                "utcDateTime": "2026-12-03T10:00:00Z",
                "data": {"assignmentId": "A", "attachments": [task.url]},
            }
        )
    )
    assert {"task", "cached", "result", "retry", "dead", "completed"} <= set(seen)
    assert AttachmentResult.KIND and seen["dead"] == 2  # one from each stage's exhausted retries


def test_a_long_multibyte_trace_id_never_makes_a_dead_letter_over_the_limit():
    # The trace id travels as key, header and field of every record, and a dead letter has it a
    # fourth time: 65,536 four-byte characters make a 787 KB task whose exhausted dead letter would
    # be over 1 MB. Ingest refuses it up front, naming the limit; a shorter one flows through.
    for trace, refused in (("𝄞" * MAX_TEXT, True), ("𝄞" * 20_000, False)):
        raw = _raw(
            {
                "traceId": trace,
                "type": "t.documentsReceived",
                "assignmentId": "A",
                "estimateVersion": "1",
                "note": "n" * (MAX_TEXT + 5),
                "attachments": [_url("a.pdf", "sig=S")],
            }
        )
        result = ingest_record(raw, SRC, POLICY, NOW, OPTIONS)
        assert result.event is not None  # a long note is stored, not refused: no later stage carries it
        assert (len(result.dead), len(result.tasks)) == ((1, 0) if refused else (0, 1))
        seen = chain(raw, result)
        assert ("dead" in seen) is not refused
