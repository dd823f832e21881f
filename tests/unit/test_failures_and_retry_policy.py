from datetime import UTC, datetime, timedelta

import pytest

from pipeline_lib.failures import (
    PERMANENT_CATEGORIES,
    TRANSIENT_CATEGORIES,
    classify_status,
    failure,
    parse_retry_after,
)
from pipeline_lib.retry_policy import RetryPolicy

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_transient_statuses(status):
    f = classify_status(status)
    assert (f.category, f.transient, f.http_status) == ("http_transient", True, status)


@pytest.mark.parametrize("status", [400, 404, 410, 422, 418, 451, 204, 304])
def test_permanent_statuses(status):
    f = classify_status(status)
    assert (f.category, f.transient) == ("http_permanent", False)


@pytest.mark.parametrize("status", [401, 403])
def test_auth_errors_are_permanent_unless_config_says_otherwise(status):
    assert classify_status(status).transient is False
    assert classify_status(status, auth_transient=True).transient is True
    assert classify_status(status).category == "auth"


def test_retry_after_seconds_and_http_date():
    assert classify_status(429, retry_after="120").retry_after_seconds == 120
    date = "Fri, 27 Nov 2026 12:05:00 GMT"
    assert parse_retry_after(date, NOW) == 300
    assert parse_retry_after("soon", NOW) is None


def test_the_table_has_no_overlap_and_failure_follows_it():
    assert not TRANSIENT_CATEGORIES & PERMANENT_CATEGORIES
    assert failure("disk_full", "x").transient and not failure("expired", "x").transient
    with pytest.raises(ValueError, match="unknown failure category"):
        failure("oops", "x")


def test_failure_messages_are_redacted():
    f = failure("connection", "could not reach https://h/a.pdf?X-Amz-Signature=SECRET&X-Amz-Expires=60")
    assert "SECRET" not in f.message and "X-Amz-Expires=60" in f.message


POLICY = RetryPolicy((300, 600, 1200, 2400), ("p.retry.5m", "p.retry.10m", "p.retry.20m", "p.retry.40m"))


def test_each_attempt_goes_to_its_tier_and_the_last_has_none():
    steps = [POLICY.next_step(a, NOW) for a in range(5)]
    assert [(s.topic, s.delay_seconds, s.next_attempt) for s in steps[:4]] == [
        ("p.retry.5m", 300, 1),
        ("p.retry.10m", 600, 2),
        ("p.retry.20m", 1200, 3),
        ("p.retry.40m", 2400, 4),
    ]
    assert steps[0].due_at == NOW + timedelta(seconds=300)
    assert steps[4] is None and POLICY.max_attempts == 5


def test_retry_after_is_a_minimum_delay_only():
    assert POLICY.next_step(0, NOW, retry_after=900).delay_seconds == 900
    assert POLICY.next_step(0, NOW, retry_after=10).delay_seconds == 300


def test_every_category_in_the_documented_table_is_known():
    import re

    from pipeline_lib import failures

    documented = set(re.findall(r"^\| (\w+) +\| (?:yes|no)", failures.__doc__, flags=re.M))
    assert documented == TRANSIENT_CATEGORIES | PERMANENT_CATEGORIES


def test_a_huge_retry_after_is_capped_at_the_last_tier_or_the_configured_cap():
    from datetime import datetime

    from pipeline_lib.retry_policy import RetryPolicy

    now = datetime(2026, 11, 27, tzinfo=UTC)
    policy = RetryPolicy((5, 10, 20), ("t5", "t10", "t20"))
    assert policy.next_step(0, now, retry_after=10**12).delay_seconds == 20
    assert policy.next_step(0, now, retry_after=7).delay_seconds == 7
    assert policy.next_step(1, now, retry_after=1).delay_seconds == 10  # a minimum, never shorter than the tier
    capped = RetryPolicy((5, 10, 20), ("t5", "t10", "t20"), retry_after_cap_seconds=8)
    assert capped.next_step(0, now, retry_after=3600).delay_seconds == 8


@pytest.mark.parametrize(
    "value",
    [
        "²",  # str.isdigit() says yes, int() and float() say no: this used to raise out of the download
        "¹²⁰",
        "٣",  # an Arabic-Indic digit: int() reads it, HTTP does not
        "9" * 40,
        "-5",
        "1.5",
        "1e3",
        "soon",
        "",
        "Fri, 31 Dec 9999 23:59:59 GMT",  # past bounds.LATEST
        "Sun, 06 Nov 1994 08:49:37 +9999",  # an offset datetime refuses
        "Mon, 32 Foo 2026 25:61:61 GMT",
        "x" * 10_000,
    ],
)
def test_retry_after_garbage_is_none_never_an_exception(value):
    assert parse_retry_after(value, NOW) is None
    assert classify_status(503, retry_after=value, now=NOW).retry_after_seconds is None


@pytest.mark.parametrize("value", [None, b"120", 120, object()])
def test_retry_after_that_is_not_text_is_none(value):
    assert parse_retry_after(value, NOW) is None


def test_retry_after_reads_ascii_seconds_and_past_dates_as_zero():
    assert parse_retry_after(" 120 ", NOW) == 120
    assert parse_retry_after("0", NOW) == 0
    assert parse_retry_after("Thu, 01 Jan 2015 00:00:00 GMT", NOW) == 0
    assert parse_retry_after("Fri, 27 Nov 2026 12:05:00 GMT", NOW.replace(tzinfo=None)) == 300  # a naive now is UTC


def _route_refusal(task, at, max_age=600.0):
    from pipeline_lib.failures import Failure
    from pipeline_lib.retry_policy import RetryPolicy
    from pipeline_lib.routing import Topics, route_failure

    policy = RetryPolicy((5, 10), ("t5", "t10"), max_task_age_seconds=max_age, breaker_open_seconds=60)
    refused = Failure("circuit_open", True, "circuit breaker for h is open; no request made", retry_after_seconds=42)
    return route_failure(
        task,
        refused,
        stage="download",
        source=None,
        at=at,
        policy=policy,
        topics=Topics("results", "dlq", "pending"),
        return_topic="pending",
    )


def test_a_breaker_refusal_waits_for_the_probe_without_using_an_attempt():
    from datetime import UTC, datetime, timedelta

    from pipeline_lib.local.samples import sample_task

    at = datetime(2026, 11, 27, 12, tzinfo=UTC)
    task = sample_task("https://h/a.pdf", attempt=1, first_attempt_at="2026-11-27T11:58:00.000Z")
    held, result = _route_refusal(task, at)
    assert (held.outcome, held.topic) == ("held", "t10")  # the current attempt's tier
    assert held.message.attempt == 1 and held.message.breaker_waits == 1 and held.message.history == []
    assert held.message.due_at == "2026-11-27T12:00:42.000Z" and result.message.status == "retrying"
    late = _route_refusal(task, at + timedelta(hours=1))[0]  # 62 minutes after its first failure
    assert late.outcome == "dead" and late.message.category == "host_unavailable"
    assert "retry.max_task_age_seconds" in late.message.reason


def test_a_full_cache_waits_its_tier_without_using_an_attempt():
    from datetime import UTC, datetime

    from pipeline_lib.failures import failure
    from pipeline_lib.local.samples import sample_task
    from pipeline_lib.retry_policy import RetryPolicy
    from pipeline_lib.routing import Topics, route_failure

    at = datetime(2026, 11, 27, 12, tzinfo=UTC)
    policy = RetryPolicy((5, 10), ("t5", "t10"), max_task_age_seconds=600)
    task = sample_task("https://h/a.pdf", attempt=1, first_attempt_at="2026-11-27T11:59:00.000Z")
    topics = Topics("results", "dlq", "pending")
    full = failure("disk_full", "the cache is full")
    held, _ = route_failure(
        task, full, stage="download", source=None, at=at, policy=policy, topics=topics, return_topic="pending"
    )
    assert (held.outcome, held.topic, held.message.attempt) == ("held", "t10", 1)
    assert held.message.due_at == "2026-11-27T12:00:10.000Z"  # its tier's delay
