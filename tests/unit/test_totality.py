"""Every per-record function is total (invariant 8): property-based tests over arbitrary bytes,
arbitrary JSON, arbitrary header values and mutations of valid messages. Each input yields exactly
one result of the function's normal kind (routed messages, an ingest decision, a table row or a
dead letter); nothing raises."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib.config import load_settings
from pipeline_lib.contracts import (
    AttachmentResult,
    CachedAttachment,
    ContractError,
    DeadLetter,
    DownloadTask,
    Message,
    SourceRef,
)
from pipeline_lib.events import ingest_record
from pipeline_lib.ids import canonical_url, task_id
from pipeline_lib.local.samples import sample_event, sample_task
from pipeline_lib.paths import destination_path, sanitize_component
from pipeline_lib.record_stage import RecordStage
from pipeline_lib.records import InputRecord, header_map
from pipeline_lib.retry_schedule import Waiting, schedule_record
from pipeline_lib.routing import Routed, result_message
from pipeline_lib.table_rows import DLQ_COLUMNS, RESULT_COLUMNS, dlq_row, result_row
from pipeline_lib.url_policy import UrlPolicy

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
SOURCE = SourceRef("topic", 1, 7, "2026-11-27T12:00:00.000Z")
POLICY = UrlPolicy(frozenset({"https"}))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5),
    max_leaves=20,
)


def _valid_task() -> DownloadTask:
    return sample_task("https://files.example.com/c/a.pdf?X-Amz-Signature=SECRET", "a.pdf")


def _mutations(body: dict) -> st.SearchStrategy[bytes]:
    """A valid message body with one field replaced by an arbitrary JSON value, or dropped."""
    keys = st.sampled_from(sorted(body))
    replaced = st.tuples(keys, json_values).map(lambda kv: {**body, kv[0]: kv[1]})
    dropped = keys.map(lambda k: {n: v for n, v in body.items() if n != k})
    return (replaced | dropped).map(lambda b: json.dumps(b, default=str).encode())


TASK_BODY = _valid_task().to_dict()
CACHED_BODY = CachedAttachment(
    task=TASK_BODY,
    cache_uri="file:///cache/x",
    bytes=3,
    sha256="a" * 64,
    content_type=None,
    downloaded_at="2026-11-27T10:00:00.000Z",
).to_dict()
RESULT_BODY = result_message(_valid_task(), "download", "retrying", NOW, http_status=503).to_dict()
DEAD_BODY = DeadLetter(
    dlq_id="d" * 32,
    stage="download",
    category="http_permanent",
    reason="HTTP 404",
    failed_at="2026-11-27T10:00:00Z",
    attempts=1,
    source=SOURCE,
    task_id=TASK_BODY["task_id"],
    trace_id="T-1",
    task=_valid_task().redacted(),
    error_history=[{"at": "2026-11-27T10:00:00Z", "http_status": 404}],
).to_dict()


def anything(body: dict) -> st.SearchStrategy[bytes | None]:
    return st.none() | st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()) | _mutations(body)


@pytest.mark.parametrize(
    ("cls", "body"),
    [
        (DownloadTask, TASK_BODY),
        (CachedAttachment, CACHED_BODY),
        (AttachmentResult, RESULT_BODY),
        (DeadLetter, DEAD_BODY),
    ],
)
def test_decode_returns_a_valid_message_or_a_contract_error_and_nothing_else(cls: type[Message], body):
    @FAST
    @given(anything(body))
    def check(raw):
        try:
            message = cls.decode(raw if raw is not None else b"")
        except ContractError:
            return
        message.encode()  # a decoded message always encodes again
        message.headers()

    check()


@FAST
@given(
    st.one_of(
        st.binary(max_size=300),
        json_values.map(lambda v: json.dumps(v).encode()),
        _mutations(sample_event(3, "https://files.example.com", now=NOW)),
        _mutations(
            {
                **sample_event(3, "https://files.example.com", now=NOW),
                "data": {
                    **sample_event(2, "https://files.example.com", now=NOW, attachments=0)["data"],
                    "attachments": ["https://h:99999/a.pdf", "https://[::1/b.pdf", 7, None, "ftp://x/y"],
                },
            }
        ),
    )
)
def test_ingest_record_decides_every_record_and_everything_it_emits_encodes(raw):
    result = ingest_record(raw, SOURCE, POLICY, NOW)
    assert result.event is not None or result.dead, "a record yields an events row or a dead letter"
    for message in (*result.tasks, *result.dead):
        message.encode()
    if result.event is None:
        assert not result.tasks


@FAST
@given(st.lists(st.text(max_size=40) | st.none(), max_size=6), st.text(max_size=40))
def test_an_event_whose_urls_are_anything_never_raises(urls, trace):
    event = sample_event(1, "https://files.example.com", now=NOW, attachments=0)
    event["traceId"] = trace or "T"
    data = event["data"] if isinstance(event["data"], dict) else json.loads(event["data"])
    event["data"] = {**data, "attachments": urls}
    result = ingest_record(json.dumps(event), SOURCE, POLICY, NOW)
    assert result.event is not None or result.dead


class _FlakyStage(RecordStage[DownloadTask, "_Outcome"]):
    """A stage whose work raises for some tasks and whose route raises for others."""

    name = "download"
    message_cls = DownloadTask

    def work(self, message):
        if message.assignment_id.startswith("boom"):
            raise RuntimeError("work blew up")
        return _Outcome(message)

    def route(self, outcome, source):
        if outcome.task.assignment_id.startswith("bad-route"):
            raise KeyError("route blew up")
        result = result_message(outcome.task, self.name, "downloaded", NOW)
        from pipeline_lib.routing import OutMessage

        return Routed([OutMessage("result", self.topics.results, outcome.task.trace_id, result)], outcome)

    def task_of(self, message):
        return message


class _Outcome:
    breaker_opened = False
    bytes = 0

    def __init__(self, task):
        self.task = task


@pytest.fixture(scope="module")
def flaky_stage(tmp_path_factory):
    settings_ = load_settings("local", overrides={"storage": {"root": str(tmp_path_factory.mktemp("s"))}})
    return _FlakyStage(settings_, 4)


@FAST
@given(
    st.lists(
        st.sampled_from(["ok", "boom", "bad-route"]).map(
            lambda kind: orjson.dumps({**TASK_BODY, "assignment_id": f"{kind}-1"})
        )
        | anything(TASK_BODY),
        max_size=12,
    )
)
def test_the_stage_loop_routes_every_record_exactly_once_in_order(flaky_stage, values):
    records = [InputRecord(f"k{i}", v, SourceRef("p", 0, i)) for i, v in enumerate(values)]
    routed = list(flaky_stage.process(records))
    assert len(routed) == len(records)
    for record, out in zip(records, routed, strict=True):
        assert out.rows is not None and len(out.rows) == len(out.messages) >= 1
        dead = [m.message for m in out.messages if isinstance(m.message, DeadLetter)]
        if dead:
            assert dead[0].source == record.source  # provenance kept
            assert dead[0].category in ("malformed", "internal")
            if dead[0].category == "internal":
                assert "blew up" in dead[0].reason
                assert "RuntimeError" in dead[0].reason or "KeyError" in dead[0].reason


@FAST
@given(anything(RESULT_BODY))
def test_result_row_is_a_typed_row_or_a_dead_letter(raw):
    row = result_row(InputRecord("k", raw, SOURCE), NOW)
    if isinstance(row, DeadLetter):
        assert row.source == SOURCE and row.stage == "results"
        row.encode()
    else:
        assert len(row) == len(RESULT_COLUMNS)


@FAST
@given(anything(DEAD_BODY))
def test_dlq_row_always_gives_a_row_with_a_partition_date(raw):
    row = dict(zip(DLQ_COLUMNS, dlq_row(InputRecord("k", raw, SOURCE), NOW), strict=True))
    assert len(row["failed_date"]) == 10 and row["dlq_id"] and row["stage"] and row["category"]
    if row["stage"] == "dlq":
        assert (row["source_topic"], row["source_offset"]) == ("topic", 7)


header_values = st.text(max_size=40) | st.sampled_from(
    ["2026-11-27T12:00:05Z", "9999-12-31T23:59:59Z", "2026-11-27T12:00:00", "²", "", "xact.downloads.pending"]
)


@FAST
@given(
    st.dictionaries(
        st.sampled_from(["xact.retry.due_at", "xact.retry.return_topic", "xact.task_id", "xact.attempt", "other"]),
        header_values,
    )
)
def test_the_retry_scheduler_waits_for_or_dead_letters_every_message(headers):
    decision = schedule_record(
        InputRecord("k", b"v", SOURCE), headers, frozenset({"xact.downloads.pending"}), NOW, 3600
    )
    if isinstance(decision, Waiting):
        assert decision.due_ms <= int(NOW.timestamp() * 1000) + 3600_000
    else:
        assert decision.category in ("malformed", "internal") and decision.source == SOURCE


@FAST
@given(st.lists(st.tuples(st.text(max_size=10) | st.none(), st.binary(max_size=20) | st.none()), max_size=5))
def test_header_map_reads_any_kafka_headers(headers):
    assert all(isinstance(v, str) for v in header_map(headers).values())


@FAST
@given(st.text(max_size=400))
def test_a_sanitized_component_is_always_safe_and_at_most_255_bytes(text):
    out = sanitize_component(text)
    assert out and out not in (".", "..") and ".." not in out and "/" not in out and "\\" not in out
    assert len(out.encode()) <= 255 and all(ord(c) >= 32 for c in out)


@FAST
@given(st.text(max_size=200), st.text(max_size=200), st.text(max_size=300))
def test_ids_and_paths_are_total_over_any_url(trace, assignment, url):
    tid = task_id("e" * 32, url)
    assert len(tid) == 32 and isinstance(canonical_url(url), str)
    path = destination_path("documentsReceived", assignment, trace, url, tid)
    assert path.count("/") == 3 and all(p and p not in (".", "..") for p in path.split("/"))


def test_header_map_reads_the_numpy_arrays_mapinpandas_hands_over():
    import numpy as np

    headers = np.array([{"key": "a", "value": b"1"}, {"key": "b", "value": None}], dtype=object)
    assert header_map(headers) == {"a": "1", "b": ""}


@pytest.mark.parametrize("window", [1, 3, 500])
def test_the_stage_loop_reads_lazily_and_holds_at_most_its_window(flaky_stage, window):
    pulled = 0

    def records():
        nonlocal pulled
        for i in range(20):
            pulled += 1
            kind = ("ok", "boom", "bad-route")[i % 3]
            yield InputRecord(
                f"k{i}", orjson.dumps({**TASK_BODY, "assignment_id": f"{kind}-{i}"}), SourceRef("p", 0, i)
            )

    offsets = []
    for routed in flaky_stage.process(records(), window=window):
        assert pulled - len(offsets) <= window  # decoded but not yet yielded: bounded by the window
        sources = [m.message.source for m in routed.messages if isinstance(m.message, DeadLetter)]
        offsets.append(sources[0].offset if sources else int(routed.outcome.task.assignment_id.split("-")[1]))
    assert pulled == 20 and offsets == list(range(20))  # every record once, in input order
