"""Deterministic identifiers: the same input gives the same id on every replay, so paths and merge
keys stay stable (invariant 2)."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _digest(*parts: str, length: int = 32) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") differ
    return h.hexdigest()[:length]


def canonical_url(url: str) -> str:
    """Scheme and host lower-cased, default port dropped, query and fragment removed.

    Presigned URLs of the same object differ only in their query (signature, expiry), so the
    canonical form identifies the object itself. Total: a URL that cannot be parsed (a port above
    65535, an unclosed IPv6 bracket) is identified by its text without query and fragment.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return text.split("#", 1)[0].split("?", 1)[0]
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def event_id(trace_id: str, event_type: str, utc_datetime: str) -> str:
    """One id per claim event: its trace id, type and timestamp."""
    return _digest("event", trace_id, event_type, utc_datetime)


def task_id(event_id: str, url: str) -> str:
    """One id per attachment of an event: the event id plus the canonical URL without its query.

    A task is one event's attachment: two events that list the same URL are two tasks (two
    inventory rows, two lake files, two cache entries), while a re-signed URL of the same object
    in the same event is the same task. Every other key (cache path, lake file suffix, retry
    scheduler state, dead-letter id) derives from this one id.
    """
    return _digest("task", event_id, canonical_url(url))


def event_revision(canonical_urls: list[str]) -> str:
    """What one delivery of an event lists: the same attachments give the same revision.

    A corrected re-send of an event (same trace, type and time, so the same event id) that lists
    other attachments is a new revision; a plain redelivery is not.
    """
    return _digest("revision", *sorted(set(canonical_urls)), length=16)


def dlq_id(stage: str, *identity: str) -> str:
    """One id per dead-letter record; `identity` is the task id and attempt chain, or the source offset."""
    return _digest("dlq", stage, *identity)
