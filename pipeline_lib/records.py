"""The records the pipeline reads from Kafka, whatever their topic, and their decoder.

Every per-record function (the I/O stages, ingest, the retry scheduler, the table jobs) takes an
`InputRecord`: its key, its value and where it was read (a `SourceRef`, carried into dead letters).
The Spark jobs make them with `input_records`; kafka_client.read_window (the notebooks' reads)
returns them too, with their headers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline_lib.contracts import SourceRef
from pipeline_lib.times import iso_from_millis


@dataclass(frozen=True)
class InputRecord:
    """One Kafka record a stage reads: key, value and where it was read (topic, partition, offset, time)."""

    key: str | None
    value: bytes | str | None
    source: SourceRef
    # Filled when the reader asked for headers (kafka_client.read_window; a stage that declares
    # StageQuery.headers, the retry scheduler); else empty.
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def text(self) -> str:
        """The value as text (UTF-8, undecodable bytes replaced); "" for a record without a value."""
        return self.value.decode("utf-8", "replace") if isinstance(self.value, bytes) else self.value or ""


def input_records(columns: Mapping[str, list[Any]]) -> list[InputRecord]:
    """Kafka records from the column lists of one Arrow batch (spark.kafka_io.RECORD_COLUMNS, and
    `headers` when the batch has it)."""
    headers = columns.get("headers") or [None] * len(columns["key"])
    return [
        InputRecord(
            key.decode("utf-8", "replace") if isinstance(key, bytes) else key,
            value,
            SourceRef(str(topic), int(partition), int(offset), iso_from_millis(ms)),
            header_map(raw_headers),
        )
        for key, value, topic, partition, offset, ms, raw_headers in zip(  # noqa: B905 - equal-length columns
            columns["key"],
            columns["value"],
            columns["topic"],
            columns["partition"],
            columns["offset"],
            columns["timestamp_ms"],
            headers,
        )
    ]


def header_map(headers: Iterable[Any] | None) -> dict[str, str]:
    """Kafka record headers (key, value pairs or {key, value} structs) as text; later keys win."""
    out: dict[str, str] = {}
    for header in headers if headers is not None else ():  # a numpy array has no truth value
        key, value = (header["key"], header["value"]) if isinstance(header, dict) else header
        if isinstance(key, str):
            out[key] = value.decode("utf-8", "replace") if isinstance(value, bytes) else (value or "")
    return out
