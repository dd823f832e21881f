from __future__ import annotations

import json

import pytest

from pipeline_lib.contracts import ContractError, DeadLetter, DownloadTask, SourceRef

TASK = DownloadTask(
    task_id="t1",
    trace_id="T",
    event_id="e",
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
        failed_at="now",
        attempts=3,
        source=SourceRef("xact.downloads.pending", 2, 9, "ts"),
        task_id="t1",
        trace_id="T",
        task=TASK.redacted(),
        payload="Bearer abc.def",
    )
    assert "sig=S" not in dead.encode() and "abc.def" not in dead.encode()
    headers = dead.headers()
    assert headers["xact.errors.topic"] == "xact.downloads.pending"
    assert headers["xact.errors.partition"] == "2" and headers["xact.errors.offset"] == "9"
    assert headers["xact.task_id"] == "t1" and headers["xact.attempt"] == "3"
    assert DeadLetter.decode(dead.encode()) == dead


def test_attachment_result_validates_status_and_redacts():
    from pipeline_lib.contracts import AttachmentResult

    res = AttachmentResult(
        task_id="t1", trace_id="T", attempt=1, stage="download", status="retrying",
        occurred_at="2026-01-01T00:00:00Z", event_date="2026-01-01",
        attachment_url="https://h/a.pdf?X-Amz-Signature=S3CRET", error_message="503 from https://h/a.pdf?sig=S3CRET",
    )  # fmt: skip
    assert "S3CRET" not in res.encode()
    assert AttachmentResult.decode(res.encode()) == res
    assert res.headers()["xact.task_id"] == "t1" and res.headers()["xact.attempt"] == "1"
    with pytest.raises(ContractError, match="status 'lost' is not one of completed, downloaded, retrying, dead"):
        AttachmentResult(task_id="t", trace_id="T", attempt=0, stage="download", status="lost",
                         occurred_at="x", event_date="y")  # fmt: skip
