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
    canonical form identifies the object itself.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def event_id(trace_id: str, event_type: str, utc_datetime: str) -> str:
    """One id per claim event: its trace id, type and timestamp."""
    return _digest("event", trace_id, event_type, utc_datetime)


def task_id(trace_id: str, url: str) -> str:
    """One id per attachment of a trace: the trace id plus the canonical URL without its query."""
    return _digest("task", trace_id, canonical_url(url))


def dlq_id(stage: str, *identity: str) -> str:
    """One id per dead-letter record; `identity` is the task id and attempt chain, or the source offset."""
    return _digest("dlq", stage, *identity)
