from __future__ import annotations

import json

import pytest

from pipeline_lib.contracts import CachedAttachment, ContractError, DeadLetter, DownloadTask, SourceRef

T1 = "1" * 32  # ids are 32 lowercase hex characters (ids.py)
E1 = "e" * 32
TASK = DownloadTask(
    task_id=T1,
    trace_id="T",
    event_id=E1,
    url="https://h/a.pdf?sig=S",
    blob_path="s/A/T/a.pdf",
    status_subtype="s",
    assignment_id="A",
    event_type="x.s",
    event_time="2026-01-01T00:00:00.000Z",
    event_date="2026-01-01",
    created_at="2026-01-01T00:00:01.000Z",
)


def test_round_trip_and_versioned_envelope():
    body = json.loads(TASK.encode())
    assert body["schema"] == "download_task" and body["version"] == 1
    assert DownloadTask.decode(TASK.encode()) == TASK


def test_readers_ignore_unknown_fields_from_newer_writers():
    body = {**json.loads(TASK.encode()), "added_later": 1}
    assert DownloadTask.decode(json.dumps(body)) == TASK


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"schema": "dead_letter"}, "expected a download_task message"),
        ({"version": 99}, "newer than this reader"),
        ({"task_id": None, "__drop__": "task_id"}, "missing required field(s) task_id"),
    ],
)
def test_contract_violations_name_the_problem(change, message):
    body = json.loads(TASK.encode())
    drop = change.pop("__drop__", None)
    body.update(change)
    if drop:
        body.pop(drop)
    with pytest.raises(ContractError, match=message.replace("(", r"\(").replace(")", r"\)")):
        DownloadTask.decode(json.dumps(body))


def test_redacted_task_hides_the_signature():
    assert "sig=***" in TASK.redacted()["url"]


def test_dead_letter_redacts_at_construction_and_carries_provenance_headers():
    dead = DeadLetter(
        dlq_id="d",
        stage="download",
        category="permanent",
        reason="404 for https://h/a?sig=S",
        failed_at="2026-01-01T00:00:02.000Z",
        attempts=3,
        source=SourceRef("xact.downloads.pending", 2, 9, "ts"),
        task_id=T1,
        trace_id="T",
        task=TASK.redacted(),
        payload="Bearer abc.def",
    )
    assert "sig=S" not in dead.encode() and "abc.def" not in dead.encode()
    headers = dead.headers()
    assert headers["xact.errors.topic"] == "xact.downloads.pending"
    assert headers["xact.errors.partition"] == "2" and headers["xact.errors.offset"] == "9"
    assert headers["xact.task_id"] == T1 and headers["xact.attempt"] == "3"
    assert DeadLetter.decode(dead.encode()) == dead


def test_attachment_result_validates_status_and_redacts():
    from pipeline_lib.contracts import AttachmentResult

    res = AttachmentResult(
        task_id=T1,
        trace_id="T",
        attempt=1,
        stage="download",
        status="retrying",
        occurred_at="2026-01-01T00:00:00Z",
        event_date="2026-01-01",
        attachment_url="https://h/a.pdf?X-Amz-Signature=S3CRET",
        error_message="503 from https://h/a.pdf?sig=S3CRET",
    )
    assert "S3CRET" not in res.encode()
    assert AttachmentResult.decode(res.encode()) == res
    assert res.headers()["xact.task_id"] == T1 and res.headers()["xact.attempt"] == "1"
    with pytest.raises(ContractError, match="status 'lost' is not one of completed, downloaded, retrying, dead"):
        AttachmentResult(
            task_id="t", trace_id="T", attempt=0, stage="download", status="lost", occurred_at="x", event_date="y"
        )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"task_id": "t1"}, "field task_id must be 32 lowercase hex"),
        ({"url": 7}, "field url must be str, got int"),
        ({"attempt": "2"}, "field attempt must be int, got str"),
        ({"attempt": True}, "field attempt must be int, got bool"),
        ({"attempt": 10**9}, "field attempt is 1000000000, outside 0..1000"),
        ({"history": {"a": 1}}, "field history must be list"),
        ({"history": [1, 2]}, "field history must be list"),
        ({"estimate_version": ["x"]}, "field estimate_version must be str or null"),
        ({"event_date": "someday"}, "field event_date must be a date"),
        ({"event_date": "9999-99-99"}, "field event_date must be an ISO 8601 time"),
        ({"due_at": "2026-13-01T00:00:00Z"}, "field due_at must be an ISO 8601 time"),
        ({"due_at": "3000-01-01T00:00:00Z"}, "outside the accepted range"),
        ({"blob_path": "../../etc/passwd"}, "not a safe relative lake path"),
        ({"blob_path": "/abs/a.pdf"}, "not a safe relative lake path"),
        ({"blob_path": "a//b.pdf"}, "not a safe relative lake path"),
    ],
)
def test_a_field_of_the_wrong_type_or_out_of_range_is_a_contract_error(change, message):
    body = {**json.loads(TASK.encode()), **change}
    with pytest.raises(ContractError, match=message):
        DownloadTask.decode(json.dumps(body))


def test_a_cached_attachment_validates_its_nested_task_at_decode():
    cached = CachedAttachment(
        task=TASK.to_dict(),
        cache_uri="file:///c/x",
        bytes=3,
        sha256="a" * 64,
        content_type=None,
        downloaded_at="2026-01-01T00:00:03.000Z",
    )
    assert CachedAttachment.decode(cached.encode()).download_task == TASK
    for task in ("not an object", {**TASK.to_dict(), "url": None}, {**TASK.to_dict(), "schema": "x"}):
        body = {**json.loads(cached.encode()), "task": task}
        with pytest.raises(ContractError):
            CachedAttachment.decode(json.dumps(body))
    with pytest.raises(ContractError, match="field bytes is -1"):
        CachedAttachment.decode(json.dumps({**json.loads(cached.encode()), "bytes": -1}))


def test_a_dead_letter_source_must_be_a_real_provenance():
    dead = DeadLetter(
        dlq_id="d", stage="s", category="c", reason="r", failed_at="2026-01-01T00:00:00Z", source=SourceRef("t", 0, 1)
    )
    for source in (
        {"topic": 1, "partition": 0, "offset": 1},
        {"topic": "t", "partition": -1, "offset": 1},
        {"topic": "t", "partition": 0, "offset": 1, "extra": 1},
        "t/0/1",
    ):
        with pytest.raises(ContractError, match="field source"):
            DeadLetter.decode(json.dumps({**json.loads(dead.encode()), "source": source}))
