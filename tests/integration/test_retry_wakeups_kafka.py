"""The wake-up thread's Kafka reads on the real broker (retry_wakeups.py): where each tier partition
is read from after a restart, partitions added later, and a tier that is not there."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import NewPartitions

from pipeline_lib.contracts import H_RETRY_DUE_AT
from pipeline_lib.kafka_client import admin_client
from pipeline_lib.kafka_options import librdkafka_config
from pipeline_lib.retry_wakeups import (
    IncompleteAssignment,
    assign_from_horizon,
    due_ms_of,
    follow_new_partitions,
    wake_up_group,
)

pytestmark = pytest.mark.integration


def consumer_for(settings) -> Consumer:
    return Consumer({**librdkafka_config(settings.kafka), "group.id": wake_up_group(), "enable.auto.commit": False})


def write(settings, topic: str, partition: int, due: str, timestamp_ms: int | None = None) -> None:
    producer = Producer(librdkafka_config(settings.kafka))
    extra = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
    producer.produce(topic, b"retry", partition=partition, headers=[(H_RETRY_DUE_AT, due.encode())], **extra)
    assert producer.flush(10) == 0


def read_dues(consumer, seconds: float = 4.0) -> list[int]:
    dues, until = [], time.monotonic() + seconds
    while time.monotonic() < until:
        for msg in consumer.consume(100, timeout=0.5):
            if not msg.error():
                dues.append(due_ms_of(msg.headers()))
    return dues


def test_a_restart_reads_each_tier_from_the_horizon_and_follows_partitions_added_later(kafka_settings):
    settings = kafka_settings
    tier = settings.retry_topics[0]
    now_ms = int(time.time() * 1000)
    horizon = now_ms - 60_000
    write(settings, tier, 0, "2027-01-01T00:00:01Z", timestamp_ms=horizon - 600_000)  # before it: due long ago
    write(settings, tier, 0, "2027-01-01T00:00:02Z")  # after it: may still be held
    consumer = consumer_for(settings)
    try:
        known = assign_from_horizon(consumer, settings.retry_topics, horizon)
        assert known == {(t, p) for t in settings.retry_topics for p in range(settings.topics.retry_partitions)}
        # A partition with nothing after the horizon is read from the end it had at the lookup, so
        # a retry written after the assignment is read too.
        write(settings, tier, 1, "2027-01-01T00:00:03Z")
        assert sorted(read_dues(consumer)) == [
            due_ms_of([(H_RETRY_DUE_AT, b"2027-01-01T00:00:02Z")]),
            due_ms_of([(H_RETRY_DUE_AT, b"2027-01-01T00:00:03Z")]),
        ]

        count = settings.topics.retry_partitions
        admin = admin_client(settings.kafka.bootstrap_servers)
        for future in admin.create_partitions([NewPartitions(tier, count + 1)]).values():
            future.result(timeout=30)
        deadline = time.monotonic() + 30
        while (tier, count) not in known and time.monotonic() < deadline:
            follow_new_partitions(consumer, settings.retry_topics, known)
            time.sleep(0.5)
        assert (tier, count) in known
        write(settings, tier, count, "2027-01-01T00:00:04Z")
        assert read_dues(consumer) == [due_ms_of([(H_RETRY_DUE_AT, b"2027-01-01T00:00:04Z")])]
    finally:
        consumer.close()


def test_a_tier_that_is_not_there_is_an_incomplete_assignment_not_a_silent_gap(kafka_settings):
    consumer = consumer_for(kafka_settings)
    try:
        with pytest.raises(IncompleteAssignment, match="no-such-tier"):
            assign_from_horizon(consumer, [*kafka_settings.retry_topics, "no-such-tier"], 0, timeout=5)
    finally:
        consumer.close()
