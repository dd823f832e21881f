"""ingest_record: what one raw event becomes (tasks, events row, dead letters); it never raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from pipeline_lib.contracts import SourceRef
from pipeline_lib.events import ingest_record
from pipeline_lib.ids import task_id
from pipeline_lib.url_policy import UrlPolicy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
SRC = SourceRef("xact.events.raw", 1, 42, "2026-11-27T12:00:00Z")
POLICY = UrlPolicy(frozenset({"https"}), (".example.com",), False)
SIGNED = "https://files.example.com/c/{name}?X-Amz-Date=20261127T000000Z&X-Amz-Expires=3600&X-Amz-Signature=SECRET"


def event(**changes):
    data = {
        "assignmentId": "A123",
        "attachments": [SIGNED.format(name="photo.jpg"), SIGNED.format(name="report.pdf")],
        "estimateVersion": "2.0",
        "description": "roof damage",
        "adm.coverageLoss.claimNumber": "CLM-1",
        "contact": {"name": "Pat", "phone": "555", "email": "pat@example.com"},
        "note": "token=abc123",
    }
    body = {
        "type": "verisk.claims.property.xn.documentsReceived",
        "version": "1",
        "utcDateTime": "2026-11-26T23:30:00Z",
        "traceId": "T-1",
        "data": data,
    }
    for key, value in changes.items():
        target = data if key in data or key.startswith("data_") else body
        key = key.removeprefix("data_")
        if value is ...:
            target.pop(key, None)
        else:
            target[key] = value
    return json.dumps(body)


def test_valid_event_gives_one_row_and_one_task_per_url():
    result = ingest_record(event().encode(), SRC, POLICY, NOW)
    assert result.dead == []
    row = result.event
    assert row["trace_id"] == "T-1" and row["status_subtype"] == "documentsReceived"
    assert row["event_date"] == "2026-11-26"  # the event's own date, not the processing date
    assert row["claim_number"] == "CLM-1" and row["contact_email"] == "pat@example.com"
    assert row["attachment_count"] == 2 and row["source_offset"] == 42
    assert "SECRET" not in row["raw_json"] and "SECRET" not in json.dumps(row["attachments"])
    assert "abc123" not in row["raw_json"]
    assert [t.task_id for t in result.tasks] == [  # one event's attachments: the event id plus the URL
        task_id(row["event_id"], SIGNED.format(name="photo.jpg")),
        task_id(row["event_id"], SIGNED.format(name="report.pdf")),
    ]
    first = result.tasks[0]
    assert first.attempt == 0 and first.url.endswith("X-Amz-Signature=SECRET")  # the live URL travels on pending
    assert first.blob_path.startswith("documentsReceived/A123/T-1/A123_photo_")
    assert first.headers()["xact.task_id"] == first.task_id and first.headers()["xact.attempt"] == "0"


def test_trace_id_alias_and_data_as_json_string():
    raw = json.loads(event(traceId=...))
    raw["trace_id"] = "T-9"
    raw["data"] = json.dumps(raw["data"])
    result = ingest_record(json.dumps(raw), SRC, POLICY, NOW)
    assert result.event["trace_id"] == "T-9" and len(result.tasks) == 2


def test_event_without_attachments_is_recorded_and_makes_no_task():
    result = ingest_record(event(data_attachments=...), SRC, POLICY, NOW)
    assert result.event is not None and result.event["attachment_count"] == 0
    assert result.tasks == [] and result.dead == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[1, 2]", "is a JSON list; expected one JSON object"),
        (None, "the message is empty"),
        (event(traceId=...), "required field traceId (or trace_id) is missing"),
        (event(data='{"broken'), "field data is a string but not valid JSON"),
        (event(data_attachments="https://files.example.com/a.pdf"), "data.attachments must be a list of URL strings"),
        (event(utcDateTime="yesterday"), "utcDateTime must be an ISO 8601 date-time"),
        (event(data_assignmentId={"id": 1}), "field data.assignmentId must be a string, got dict"),
    ],
)
def test_malformed_events_become_one_dead_letter_with_provenance(raw, reason):
    result = ingest_record(raw, SRC, POLICY, NOW)
    assert result.event is None and result.tasks == []
    (dead,) = result.dead
    assert reason in dead.reason
    assert dead.stage == "ingest" and dead.category == "malformed"
    assert dead.source == SRC and dead.failed_at == "2026-11-27T12:00:00.000Z"
    assert dead.headers()["xact.errors.offset"] == "42"


def test_bad_urls_are_dead_lettered_and_good_ones_still_become_tasks():
    urls = [SIGNED.format(name="ok.jpg"), "ftp://files.example.com/a.pdf", "https://evil.com/x.pdf?sig=SECRET", 17]
    result = ingest_record(event(data_attachments=urls), SRC, POLICY, NOW)
    assert len(result.tasks) == 1 and result.event is not None
    assert [d.category for d in result.dead] == ["policy"] * 3
    reasons = " ".join(d.reason for d in result.dead)
    assert "scheme 'ftp'" in reasons and "host 'evil.com'" in reasons and "empty or not a string" in reasons
    assert "SECRET" not in json.dumps([d.to_dict() for d in result.dead])


def test_the_same_object_listed_twice_is_one_task():
    urls = [SIGNED.format(name="a.jpg"), SIGNED.format(name="a.jpg").replace("SECRET", "OTHER")]
    assert len(ingest_record(event(data_attachments=urls), SRC, POLICY, NOW).tasks) == 1


def test_redelivery_gives_identical_ids():
    a = ingest_record(event(), SRC, POLICY, NOW)
    b = ingest_record(event(), SourceRef("xact.events.raw", 0, 7), POLICY, NOW)
    assert a.event["event_id"] == b.event["event_id"]
    assert [t.task_id for t in a.tasks] == [t.task_id for t in b.tasks]
    assert [t.blob_path for t in a.tasks] == [t.blob_path for t in b.tasks]


def test_dead_letter_payload_is_truncated_and_redacted():
    raw = "x" * 10000 + " https://h/p?sig=SECRET"
    (dead,) = ingest_record(raw, SRC, POLICY, NOW).dead
    assert len(dead.payload) < 4100 and "more chars" in dead.payload and "SECRET" not in dead.payload


def test_fields_named_like_secrets_are_hidden_whole_in_raw_json():
    raw = json.loads(event())
    raw["data"]["extra"] = {"password": "hunter2-PLAIN", "apiKey": "k-PLAIN", "note": "fine"}
    row = ingest_record(json.dumps(raw).encode(), SRC, POLICY, NOW).event
    assert "PLAIN" not in row["raw_json"] and "fine" in row["raw_json"]
