"""confluent-kafka helpers for the CLI, replay, the notebooks, the demo and the tests: produce, read a
topic or one record, tail a topic, and create or list topics (against any Kafka; Event Hubs does
not create topics through the Kafka admin API, see docs/operations.md)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pipeline_lib.config import Settings
from pipeline_lib.contracts import SourceRef
from pipeline_lib.errors import PipelineError
from pipeline_lib.kafka_options import librdkafka_config
from pipeline_lib.logs import get_logger
from pipeline_lib.records import InputRecord
from pipeline_lib.redaction import redact
from pipeline_lib.times import iso_from_millis

if TYPE_CHECKING:
    from confluent_kafka import Producer

# librdkafka's retry chatter (e.g. "coordinator load in progress" while a broker starts) stays
# out of the user's terminal; real failures surface as exceptions or delivery errors.
CLIENT_LOG = logging.getLogger("xact.kafka.client")
log = get_logger("kafka")
CLIENT_LOG.setLevel(logging.CRITICAL)


class DeliveryFailed(PipelineError):
    """Messages could not be delivered to Kafka; the message says how many and the first errors."""


class TopicAdminError(PipelineError):
    """A topic could not be created or listed."""


def make_producer(settings: Settings, **extra: str | int) -> Producer:
    """An idempotent confluent-kafka producer for `produce`; reuse one for many calls (each new
    producer pays its connection and producer-id set-up, about 0.5 s on a local broker).
    `extra`: more librdkafka settings, e.g. message.timeout.ms for a bounded wait."""
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
            **extra,
        }  # type: ignore[dict-item]
    )


def produce(
    settings: Settings,
    topic: str,
    records: Iterable[tuple[str | None, str | bytes] | tuple[str | None, str | bytes, dict[str, str]]],
    producer: Producer | None = None,
    timeout: float = 60,
) -> int:
    """Produce (key, value) or (key, value, headers) records and wait (up to `timeout` seconds) for
    every delivery.

    `producer` (from make_producer) is reused when given; otherwise one is made for this call.
    """
    producer = producer or make_producer(settings)
    errors: list[str] = []

    def on_delivery(err, _msg) -> None:
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
    remaining = producer.flush(timeout)
    if errors or remaining:
        raise DeliveryFailed(
            f"{len(errors) + remaining} of {count} messages to {topic} were not delivered: {errors[:3]}; "
            f"check that kafka.bootstrap_servers ({settings.kafka.bootstrap_servers}) is reachable and the topic exists"
        )
    return count


# How long a read waits out a partition whose leader is being elected (a topic created a moment
# ago, a broker that just started): NOT_LEADER_FOR_PARTITION and the like are retriable.
WATERMARK_RETRY_SECONDS = 30.0


def watermarks(consumer, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
    """(low, high) offsets of one partition. While a partition's leader is being elected or moved
    (no leader yet, not the leader, a timed-out query) the call is retried for up to
    WATERMARK_RETRY_SECONDS; any other error is raised at once. The code is checked, not
    KafkaError.retriable(): confluent-kafka builds this error without that flag."""

    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    in_flux = {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._TIMED_OUT,
    }
    deadline = time.monotonic() + WATERMARK_RETRY_SECONDS
    pause = 0.1
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return low, high
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            code = error.code() if isinstance(error, KafkaError) else None
            if code not in in_flux or time.monotonic() + pause > deadline:
                raise
            log.debug("offsets of %s[%d] not ready (%s); retrying", topic, partition, error)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def consume_all(
    settings: Settings,
    topic: str,
    *,
    max_messages: int | None = None,
    idle_timeout: float = 10.0,
    since_ms: int | None = None,
    complete: bool = False,
) -> Iterator[tuple[str | None, bytes | None, dict[str, str]]]:
    """Read a topic from its beginning (or, with `since_ms`, from each partition's first record
    stamped at or after it, found with the broker's time index) up to the end it had when the call
    started.

    Partitions are assigned directly (no consumer group, nothing committed), so the read is
    deterministic; `idle_timeout` only guards against a broker that stops answering. With
    `complete`, a read that could not reach every partition's end (idle, a failed time lookup)
    raises PipelineError instead of ending early: a caller that decides from what is absent (a
    replay's resume) must not mistake a slow broker for an empty topic.
    """
    from confluent_kafka import TopicPartition

    consumer = assigned_consumer(settings, f"xact-read-{uuid.uuid4().hex[:8]}")
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        starts: dict[int, int] = {}
        if since_ms is not None and partitions:
            found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout=10)
            failed = [tp for tp in found if tp.error is not None]
            if failed and complete:
                raise PipelineError(
                    f"{topic}: the broker's time index did not answer for {failed[0]}: {failed[0].error}"
                )
            starts = {tp.partition: tp.offset for tp in found if tp.error is None}
        ends: dict[int, int] = {}
        assignment = []
        for p in partitions:
            low, high = watermarks(consumer, topic, p)
            start = max(low, starts[p]) if since_ms is not None and starts.get(p, -1) >= 0 else low
            if since_ms is not None and starts.get(p, -1) < 0:
                continue  # nothing in this partition is that recent
            if high > start:
                ends[p] = high
                assignment.append(TopicPartition(topic, p, start))
        consumer.assign(assignment)
        seen = 0
        while ends and (max_messages is None or seen < max_messages):
            msg = consumer.poll(idle_timeout)
            if msg is None:
                if complete:
                    raise PipelineError(
                        f"{topic}: no record for {idle_timeout:g} s before partitions {sorted(ends)} reached their "
                        f"ends {ends}; check the broker and try again"
                    )
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


def assigned_consumer(settings: Settings, group: str):
    """A consumer that is assigned partitions, never subscribed (the group commits nothing), whose
    connection chatter goes to CLIENT_LOG, not the terminal (a notebook cell with Kafka down
    would print a "Connection refused" line every 50 ms)."""
    from confluent_kafka import Consumer

    config = {**librdkafka_config(settings.kafka), "group.id": group, "enable.auto.commit": False}
    return Consumer({**config, "logger": CLIENT_LOG})  # type: ignore[dict-item]


READ_GAP = 1000  # read_many reads through gaps up to this many offsets rather than seek


def read_many(settings: Settings, sources: Iterable[SourceRef], timeout: float = 10.0) -> dict[SourceRef, bytes]:
    """The values of the records at `sources` (topic, partition, offset) with one consumer; a
    source that is gone (retention, compaction, a bad offset) is missing from the result.

    Each partition's offsets are read in runs: offsets less than READ_GAP apart are read through
    in one sequential fetch, a wider gap is a seek, so a replay of 50,000 dead letters costs
    about one pass over the records they point at, not 50,000 consumers."""
    from confluent_kafka import KafkaException, TopicPartition

    wanted: dict[tuple[str, int], dict[int, SourceRef]] = {}
    for source in sources:
        wanted.setdefault((source.topic, source.partition), {})[source.offset] = source
    found: dict[SourceRef, bytes] = {}
    if not wanted:
        return found
    group = f"xact-read-{uuid.uuid4().hex[:8]}"  # assigned, not subscribed: the group commits nothing
    consumer = assigned_consumer(settings, group)
    try:
        for (topic, partition), by_offset in sorted(wanted.items()):
            try:
                low, high = watermarks(consumer, topic, partition, timeout=timeout)
            except KafkaException as exc:  # a topic or partition that is gone: its sources are too
                log.debug("cannot read %s[%d]: %s", topic, partition, exc)
                continue
            offsets = sorted(o for o in by_offset if low <= o < high)
            i = 0
            while i < len(offsets):
                j = i
                while j + 1 < len(offsets) and offsets[j + 1] - offsets[j] <= READ_GAP:
                    j += 1
                end = offsets[j]
                consumer.assign([TopicPartition(topic, partition, offsets[i])])
                while True:
                    msg = consumer.poll(timeout)
                    if msg is None or msg.error():
                        break
                    offset = msg.offset() or 0
                    if offset in by_offset and offsets[i] <= offset <= end:
                        value = msg.value()
                        found[by_offset[offset]] = value.encode() if isinstance(value, str) else (value or b"")
                    if offset >= end:
                        break
                i = j + 1
    finally:
        consumer.close()
    return found


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash (org.apache.kafka.common.utils.Utils.murmur2), as a signed 32-bit int."""
    length, seed, m, r = len(data), 0x9747B28C, 0x5BD1E995, 24
    h = (seed ^ length) & 0xFFFFFFFF
    for i in range(0, length - length % 4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    if rest:
        tail = data[length - rest :]
        if rest == 3:
            h ^= tail[2] << 16
        if rest >= 2:
            h ^= tail[1] << 8
        h ^= tail[0]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_for(key: str | bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java clients, Spark's sink, and confluent-kafka
    with murmur2_random) puts a keyed record on: one claim's messages are all in one partition."""
    data = key.encode("utf-8") if isinstance(key, str) else key
    return (murmur2(data) & 0x7FFFFFFF) % partitions


def read_window(
    settings: Settings,
    topic: str,
    start_ms: int,
    end_ms: int,
    *,
    key: str | None = None,
    max_records: int = 10_000,
    timeout: float = 10.0,
) -> list[InputRecord]:
    """The records of `topic` produced between `start_ms` and `end_ms` (epoch milliseconds).

    With `key`, only that key's partition is read and only its records returned. The start is
    found with the broker's time index (offsets_for_times), so the read is bounded by the window,
    not the topic: practical against Event Hubs too.
    """
    from confluent_kafka import TopicPartition

    group = f"xact-window-{uuid.uuid4().hex[:8]}"
    consumer = assigned_consumer(settings, group)
    out: list[InputRecord] = []
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None:
            return []
        count = len(metadata.partitions)
        chosen = [partition_for(key, count)] if key is not None else sorted(metadata.partitions)
        starts = consumer.offsets_for_times([TopicPartition(topic, p, start_ms) for p in chosen], timeout=timeout)
        ends: dict[int, int] = {}
        assignment = []
        for tp in starts:
            high = watermarks(consumer, topic, tp.partition, timeout)[1]
            if tp.offset >= 0 and tp.offset < high:  # -1: nothing at or after the start
                ends[tp.partition] = high
                assignment.append(TopicPartition(topic, tp.partition, tp.offset))
        consumer.assign(assignment)
        while ends and len(out) < max_records:
            msg = consumer.poll(timeout)
            if msg is None:
                break
            if msg.error():
                continue
            partition, offset = msg.partition() or 0, msg.offset() or 0
            stamp = msg.timestamp()[1]
            if stamp > end_ms or offset + 1 >= ends.get(partition, 0):
                ends.pop(partition, None)
                consumer.pause([TopicPartition(topic, partition)])
                if stamp > end_ms:
                    continue
            record_key = _text(msg.key())
            if key is not None and record_key != key:
                continue
            headers = {str(k): _text(v) or "" for k, v in (msg.headers() or [])}  # type: ignore[str-unpack]
            value = msg.value()
            value = value.encode() if isinstance(value, str) else (value or b"")
            source = SourceRef(topic, partition, offset, iso_from_millis(stamp))
            out.append(InputRecord(record_key, value, source, headers))
    finally:
        consumer.close()
    return out


def end_offsets(settings: Settings, topics: Iterable[str], timeout: float = 10.0) -> dict[str, int]:
    """The number of records each topic holds (high minus low watermark, over its partitions)."""

    group = f"xact-offsets-{uuid.uuid4().hex[:8]}"
    consumer = assigned_consumer(settings, group)
    out: dict[str, int] = {}
    try:
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is None or metadata.error is not None:
                continue
            total = 0
            for p in metadata.partitions:
                low, high = watermarks(consumer, topic, p, timeout)
                total += max(0, high - low)
            out[topic] = total
    finally:
        consumer.close()
    return out


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
        # Each part redacted on its own: the line's own `key=` label is no secret's key.
        shown_key = redact(key) if isinstance(key, str) else key
        yield f"key={shown_key} headers={redact(str(headers))} value={redact(text)}"


def _admin(bootstrap: str, client_config: dict[str, str] | None = None):
    from confluent_kafka.admin import AdminClient

    conf = {"bootstrap.servers": bootstrap, "logger": CLIENT_LOG, **(client_config or {})}
    return AdminClient(conf)  # type: ignore[arg-type]  # the stubs do not know the logger key


def admin_client(bootstrap: str, client_config: dict[str, str] | None = None):
    """An AdminClient whose retry chatter stays out of the terminal (e.g. to wait for a starting broker)."""
    return _admin(bootstrap, client_config)


def create_topics(bootstrap: str, partitions: dict[str, int], client_config: dict[str, str] | None = None) -> list[str]:
    """Create each missing topic with its partition count (replication 1); returns the names created.

    Existing topics are left as they are, with a warning when their partition count differs.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import NewTopic

    admin = _admin(bootstrap, client_config)
    existing = admin.list_topics(timeout=10).topics
    wanted = [
        NewTopic(name, num_partitions=n, replication_factor=1) for name, n in partitions.items() if name not in existing
    ]
    for name, n in partitions.items():
        if name in existing and len(existing[name].partitions) != n:
            log.warning(
                "topic %s exists with %d partitions (config says %d); left unchanged",
                name,
                len(existing[name].partitions),
                n,
            )
    created = []
    for name, future in admin.create_topics(wanted, operation_timeout=30).items() if wanted else []:
        try:
            future.result(timeout=60)
            created.append(name)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise TopicAdminError(f"could not create topic {name} on {bootstrap}: {exc}") from exc
    return created


def delete_topics(bootstrap: str, names: Iterable[str], timeout: float = 60.0) -> list[str]:
    """Delete the topics of `names` that exist and wait until the broker no longer lists them (a
    deletion is asynchronous: a topic created again before it finished would be lost with it);
    returns the names deleted. For the local broker's demo state, never a shared cluster."""
    admin = _admin(bootstrap)
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [name for name in names if name in existing]
    if not doomed:
        return []
    for name, future in admin.delete_topics(doomed, operation_timeout=30).items():
        try:
            future.result(timeout=timeout)
        except Exception as exc:  # the client raises KafkaException, or a timeout
            raise TopicAdminError(f"could not delete topic {name} on {bootstrap}: {exc}") from exc
    deadline = time.monotonic() + timeout
    while set(doomed) & set(admin.list_topics(timeout=10).topics):
        if time.monotonic() > deadline:
            raise TopicAdminError(
                f"topics {', '.join(doomed)} on {bootstrap} were still listed {timeout:g} s after deletion"
            )
        time.sleep(0.2)
    return doomed


def unreachable_reason(settings: Settings, topics: Iterable[str] | None = None, timeout: float = 5.0) -> str | None:
    """Why the pipeline cannot use Kafka right now (in one line that says what to check), or None.

    Asked before a query starts: a Spark Kafka source pointed at a broker that is down retries for
    minutes and then fails with a JVM stack trace; this answers within `timeout`.
    """
    from confluent_kafka import KafkaException

    bootstrap = settings.kafka.bootstrap_servers
    try:
        existing = _admin(bootstrap, librdkafka_config(settings.kafka)).list_topics(timeout=timeout).topics
    except KafkaException as exc:
        return (
            f"cannot reach Kafka at {bootstrap} ({exc.args[0] if exc.args else exc}): check "
            "kafka.bootstrap_servers, the network and kafka.security_protocol/sasl_mechanism and their secrets; "
            "locally, start the broker with `xact-pipeline kafka start`"
        )
    missing = sorted(set(settings.topic_partitions() if topics is None else topics) - set(existing))
    if missing:
        return (
            f"Kafka at {bootstrap} has no topic {', '.join(missing)}: create them (locally `xact-pipeline kafka "
            "start` creates every pipeline topic; on Event Hubs create the event hubs, docs/operations.md)"
        )
    return None


def list_topics(bootstrap: str, client_config: dict[str, str] | None = None) -> dict[str, int]:
    """Every topic (internal ones excepted) with its partition count."""
    admin = _admin(bootstrap, client_config)
    topics = admin.list_topics(timeout=10).topics
    return {name: len(t.partitions) for name, t in sorted(topics.items()) if not name.startswith("__")}


def first_record_time_after(
    settings: Settings, topics: Iterable[str], since_ms: int, timeout: float = 10.0
) -> int | None:
    """The earliest record timestamp (epoch ms) at or after `since_ms` on any partition of
    `topics`, None when no record is that recent. Found with the broker's time index
    (offsets_for_times) and one record read per partition, so it costs the same whatever the
    topics hold; raises when Kafka cannot answer (the caller says so)."""
    from confluent_kafka import TopicPartition

    group = f"xact-health-{uuid.uuid4().hex[:8]}"
    consumer = assigned_consumer(settings, group)
    try:
        wanted = []
        for topic in topics:
            metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if metadata is None or metadata.error is not None:
                raise PipelineError(f"topic {topic} cannot be read: {getattr(metadata, 'error', None) or 'not found'}")
            wanted += [TopicPartition(topic, p, since_ms) for p in sorted(metadata.partitions)]
        if not wanted:
            return None
        assignment = [tp for tp in consumer.offsets_for_times(wanted, timeout=timeout) if tp.offset >= 0]
        if not assignment:
            return None
        consumer.assign(assignment)
        earliest: int | None = None
        pending = {(tp.topic, tp.partition) for tp in assignment}
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            key = (msg.topic(), msg.partition())
            if key in pending:
                pending.discard(key)
                consumer.pause([TopicPartition(*key)])
                stamp = msg.timestamp()[1]
                earliest = stamp if earliest is None else min(earliest, stamp)
        return earliest
    finally:
        consumer.close()


def short_reason(settings: Settings, reason: str) -> str:
    """An unreachable_reason cut to what a person reads in a notebook line or a dry run: "Kafka at
    host:port is not reachable", or the topics it lacks."""
    if reason.startswith("cannot "):
        return f"Kafka at {settings.kafka.bootstrap_servers} is not reachable"
    return reason.split(": create ")[0]


def topics_unreadable(settings: Settings, timeout: float = 3.0) -> str | None:
    """For a notebook cell that reads topics: None when Kafka answers, else the one line to print
    instead (the cells that read only the tables run as usual)."""
    try:
        reason = unreachable_reason(settings, timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - a broken client config says so in the same one line
        reason = f"cannot ask Kafka at {settings.kafka.bootstrap_servers}: {type(exc).__name__}: {exc}"
    if reason is None:
        return None
    return f"topics not read: {short_reason(settings, reason)} (this cell only; the tables are read as usual)"
