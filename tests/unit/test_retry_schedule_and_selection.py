import pytest

from pipeline_lib.replay import DlqSelection, SelectionError
from pipeline_lib.retry_schedule import NotSchedulable, waiting_from_headers

ALLOWED = frozenset({"p", "c"})


def test_a_retry_message_is_grouped_by_task_attempt_and_due_at_its_time():
    headers = {
        "xact.retry.due_at": "2026-11-27T10:00:01.500Z",
        "xact.retry.return_topic": "p",
        "xact.task_id": "t1",
        "xact.attempt": "2",
    }
    w = waiting_from_headers(headers, ALLOWED, "tier/0/5")
    assert (w.group, w.return_topic, w.due_ms) == ("t1/2", "p", 1795773601500)
    del headers["xact.task_id"]
    assert waiting_from_headers(headers, ALLOWED, "tier/0/5").group == "tier/0/5"


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({}, "without the xact.retry.due_at and xact.retry.return_topic headers"),
        ({"xact.retry.due_at": "soon", "xact.retry.return_topic": "p"}, "not an ISO 8601 time"),
        ({"xact.retry.due_at": "2026-11-27T10:00:00", "xact.retry.return_topic": "p"}, "no time zone"),
        (
            {"xact.retry.due_at": "2026-11-27T10:00:00Z", "xact.retry.return_topic": "elsewhere"},
            "not a stage input topic",
        ),
    ],
)
def test_unschedulable_messages_say_why(headers, match):
    with pytest.raises(NotSchedulable, match=match):
        waiting_from_headers(headers, ALLOWED, "tier/0/5")


def test_selection_validates_and_describes_itself():
    s = DlqSelection(categories=("expired",), hosts=("h",), since="2026-11-01")
    assert s.describe() == "categories=expired hosts=h since=2026-11-01 statuses=open"
    assert '"categories":["expired"]' in s.to_json()
    with pytest.raises(SelectionError, match="since: 'yesterday' is not an ISO 8601"):
        DlqSelection(since="yesterday")
    with pytest.raises(SelectionError, match="statuses: gone is not one of"):
        DlqSelection(statuses=("gone",))


def test_the_schedulers_start_tick_is_dropped_whatever_else_it_carries():
    from datetime import UTC, datetime

    from pipeline_lib.contracts import H_RETRY_TICK, SourceRef
    from pipeline_lib.records import InputRecord
    from pipeline_lib.retry_schedule import schedule_record

    record = InputRecord(None, b"tick", SourceRef("xact.downloads.pending.retry.5m", 0, 9))
    now = datetime(2026, 11, 28, tzinfo=UTC)
    assert schedule_record(record, {H_RETRY_TICK: "2026-11-28T00:00:00Z"}, frozenset(), now, 60) is None
    assert schedule_record(record, {}, frozenset(), now, 60) is not None  # anything else is decided
