"""kafka_client.watermarks waits out a partition whose leader is being elected (a CI drill read a
topic the run had just created and got NOT_LEADER_FOR_PARTITION) and raises anything else."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from pipeline_lib import kafka_client


class FlakyConsumer:
    def __init__(self, failures: list[int]) -> None:
        self.failures = list(failures)
        self.calls = 0

    def get_watermark_offsets(self, _tp, timeout: float):
        self.calls += 1
        if self.failures:
            raise KafkaException(KafkaError(self.failures.pop(0)))
        return 3, 7


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    monkeypatch.setattr("time.sleep", lambda _s: None)


@pytest.mark.parametrize(
    "code",
    [KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError._TIMED_OUT],
)
def test_a_partition_without_a_leader_yet_is_read_once_it_has_one(code):
    consumer = FlakyConsumer([code, code])
    assert kafka_client.watermarks(consumer, "t", 0) == (3, 7)
    assert consumer.calls == 3


def test_any_other_error_is_raised_at_once():
    consumer = FlakyConsumer([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        kafka_client.watermarks(consumer, "t", 0)
    assert consumer.calls == 1


def test_a_leader_that_never_comes_is_raised_after_the_deadline(monkeypatch):
    monkeypatch.setattr(kafka_client, "WATERMARK_RETRY_SECONDS", 0.0)
    consumer = FlakyConsumer([KafkaError.NOT_LEADER_FOR_PARTITION] * 100)
    with pytest.raises(KafkaException):
        kafka_client.watermarks(consumer, "t", 0)
    assert consumer.calls == 1
