"""Small Kafka helpers for the CLI, the demo and the tests: produce JSON, tail a topic, count messages."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pipeline_lib.config import Settings
from pipeline_lib.kafka_options import librdkafka_config
from pipeline_lib.redaction import redact

if TYPE_CHECKING:
    from confluent_kafka import Producer

# librdkafka's retry chatter (e.g. "coordinator load in progress" while a broker starts) stays
# out of the user's terminal; real failures surface as exceptions or delivery errors.
CLIENT_LOG = logging.getLogger("xact.kafka.client")
CLIENT_LOG.setLevel(logging.CRITICAL)


def make_producer(settings: Settings) -> Producer:
    """An idempotent confluent-kafka producer for `produce`; reuse one for many calls (each new
    producer pays its connection and producer-id set-up, about 0.5 s on a local broker)."""
    from confluent_kafka import Producer

    return Producer(
        {
            **librdkafka_config(settings.kafka),
            "linger.ms": 20,
            "enable.idempotence": True,
            # The Java client's partitioner (Spark's sinks): a key lands on the same partition
            # whichever of the two produced it, so one trace's messages keep their order.
            "partitioner": "murmur2_random",
            "logger": CLIENT_LOG,
        }  # type: ignore[dict-item]
    )


def produce(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[str | None, str | bytes] | tuple[str | None, str | bytes, dict[str, str]]],
    producer: Producer | None = None,
) -> int:
    """Produce (key, value) or (key, value, headers) records and wait for every delivery.

    `producer` (from make_producer) is reused when given; otherwise one is made for this call.
    """
    producer = producer or make_producer(settings)
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:  # noqa: ANN001 - librdkafka callback
        if err is not None:
            errors.append(str(err))

    count = 0
    for record in records:
        key, value = record[0], record[1]
        headers: list[tuple[str, str | bytes | None]] | None = (
            list(record[2].items()) if len(record) > 2 else None  # type: ignore[misc]
        )
        while True:
            try:
                producer.produce(topic, key=key, value=value, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)
        count += 1
        producer.poll(0)
    remaining = producer.flush(60)
    if errors or remaining:
        raise RuntimeError(f"{len(errors) + remaining} of {count} messages to {topic} were not delivered: {errors[:3]}")
    return count


def consume_all(
    settings: Settings, topic: str, *, max_messages: int | None = None, idle_timeout: float = 10.0
) -> Iterator[tuple[str | None, bytes | None, dict[str, str]]]:
    """Read a topic from its beginning up to the end it had when the call started.

    Partitions are assigned directly (no consumer group, nothing committed), so the read is
    deterministic; `idle_timeout` only guards against a broker that stops answering.
    """
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **librdkafka_config(settings.kafka),
            "group.id": f"xact-read-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
        }
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends: dict[int, int] = {}
        assignment = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, low))
        consumer.assign(assignment)
        seen = 0
        while ends and (max_messages is None or seen < max_messages):
            msg = consumer.poll(idle_timeout)
            if msg is None:
                return
            if msg.error():
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            if offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
            seen += 1
            headers = {str(k): _text(v) or "" for k, v in (msg.headers() or [])}  # type: ignore[str-unpack]
            value = msg.value()
            yield _text(msg.key()), value.encode() if isinstance(value, str) else value, headers
    finally:
        consumer.close()


def _text(raw: str | bytes | None) -> str | None:
    if raw is None or isinstance(raw, str):
        return raw
    return raw.decode("utf-8", "replace")


def tail_topic(settings: Settings, topic: str, *, max_messages: int = 20, idle_timeout: float = 5.0) -> Iterator[str]:
    """Messages of a topic as printable lines; URLs and secrets redacted."""
    for key, value, headers in consume_all(settings, topic, max_messages=max_messages, idle_timeout=idle_timeout):
        text = (value or b"").decode("utf-8", "replace")
        try:
            text = json.dumps(json.loads(text), indent=None)
        except ValueError:
            pass
        yield redact(f"key={key} headers={headers} value={text}")
