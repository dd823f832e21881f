"""Remove secrets from text before it reaches a log, a Kafka payload or a table.

Query strings are redacted default-deny: every parameter value is replaced unless the parameter is
known to be harmless and useful (expiry and date fields of presigned URLs), so an unknown signature
parameter is never leaked.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "***"

# Parameters of presigned URLs that carry no secret and help explain failures (expiry, timing).
SAFE_QUERY_PARAMS = frozenset(
    p.lower()
    for p in (
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-Algorithm",
        "X-Amz-SignedHeaders",
        "se",
        "st",
        "sp",
        "sv",
        "sr",
        "spr",
        "srt",
        "ss",
        "systemDate",
        "expires",
    )
)

_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s\"'<>]+")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
_KEY_VALUE = re.compile(
    r"(?i)\b(SharedAccessKey|AccountKey|SharedAccessSignature|password|client_secret|clientSecret"
    r"|sasl\.password|api[_-]?key|access_token|token)\s*([=:])\s*(\"[^\"]*\"|'[^']*'|[^;\s,&\"']+)"
)


def _redact_param(pair: str) -> str:
    key, sep, _value = pair.partition("=")
    if not sep:  # a bare token ("?abc123") may itself be the secret
        return pair and REDACTED
    name = unquote(key).lower() if "%" in key else key.lower()
    return pair if name in SAFE_QUERY_PARAMS else f"{key}={REDACTED}"


def redact_url(url: str) -> str:
    """The URL with credentials and every non-allowlisted query value replaced by ***.

    Works on the raw text (no decoding and re-encoding), so what is kept is byte-for-byte the original.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text_without_urls(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = "&".join(_redact_param(pair) for pair in parts.query.split("&")) if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment and REDACTED))


def redact_text_without_urls(text: str) -> str:
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    return _KEY_VALUE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


# One cheap search decides whether the full set of substitutions is needed at all.
_MAYBE_SECRET = re.compile(r"(?i)://|bearer|sharedaccess|accountkey|password|secret|api[_-]?key|access_token|token")


def redact(text: str) -> str:
    """Redact URLs, bearer tokens, connection-string keys and password fields in free text."""
    if not text or not _MAYBE_SECRET.search(text):
        return text
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    return redact_text_without_urls(text)


def truncate(text: str, limit: int) -> str:
    """Cut text to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"
