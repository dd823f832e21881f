"""Deterministic identifiers: the same input gives the same id on every replay, so paths and merge
keys stay stable (invariant 2)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
# Which rule made an xact_events row's revision and task ids: 2 keeps the query but its signing
# parameters (canonical_url); rows without it (null) were made with the whole query dropped
# (legacy_canonical_url), and only those are matched by legacy ids.
IDENTITY_VERSION = 2


def _digest(*parts: str, length: int = 32) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")  # unit separator: ("ab", "c") and ("a", "bc") differ
    return h.hexdigest()[:length]


@dataclass(frozen=True)
class SigningForm:
    """One way of signing a URL: the query parameters that mark it and those it adds.

    A URL is of this form when its query holds every name of one of `markers`' sets; then its
    `members` (exact names) and every name starting with one of `prefixes` sign or expire the URL
    and say nothing about which object it names. Names compare case-insensitively, percent-decoded.
    """

    name: str
    markers: tuple[frozenset[str], ...]
    members: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def present(self, names: set[str]) -> bool:
        return any(marker <= names for marker in self.markers)

    def signs(self, name: str) -> bool:
        return name in self.members or name.startswith(self.prefixes)


# The forms whose parameters an attachment's identity ignores. download/presigned.py reads the
# expiry of the S3 SigV4, Azure SAS and ClaimX forms; redaction hides their signatures.
SIGNING_FORMS: tuple[SigningForm, ...] = (
    # S3 and GCS signers also add what the response should carry (`response-content-disposition`,
    # `response-content-type`, ...) and the SDK's operation name (`x-id=GetObject`): chosen at
    # signing time, not part of the object's name, so they go with the signature.
    SigningForm(  # AWS Signature Version 4 query auth (S3, and any SigV4 service)
        "s3-sigv4",
        (frozenset({"x-amz-signature"}), frozenset({"x-amz-credential"}), frozenset({"x-amz-algorithm"})),
        frozenset({"x-id"}),
        prefixes=("x-amz-", "response-"),
    ),
    SigningForm(  # AWS Signature Version 2 query auth (legacy S3)
        "s3-sigv2",
        (frozenset({"awsaccesskeyid", "signature"}),),
        frozenset({"awsaccesskeyid", "signature", "expires", "x-amz-security-token", "x-id"}),
        prefixes=("response-",),
    ),
    SigningForm(  # Google Cloud Storage V4 signed URLs
        "gcs-v4",
        (frozenset({"x-goog-signature"}), frozenset({"x-goog-credential"}), frozenset({"x-goog-algorithm"})),
        prefixes=("x-goog-", "response-"),
    ),
    SigningForm(  # Google Cloud Storage V2 signed URLs
        "gcs-v2",
        (frozenset({"googleaccessid", "signature"}),),
        frozenset({"googleaccessid", "signature", "expires"}),
        prefixes=("response-",),
    ),
    SigningForm(  # Azure shared access signatures (service, account and user delegation SAS)
        # A SAS always has `sig`; `sv` alone marks one too. A lone `se=` is someone's parameter.
        # rscc/rscd/rsce/rscl/rsct override the response headers, chosen when signing.
        "azure-sas",
        (frozenset({"sig"}), frozenset({"sv"})),
        frozenset(
            {
                "sig",
                "sv",
                "ss",
                "srt",
                "sp",
                "se",
                "st",
                "spr",
                "sr",
                "si",
                "sip",
                "sdd",
                "ses",
                "skoid",
                "sktid",
                "skt",
                "ske",
                "sks",
                "skv",
                "skdutid",
                "saoid",
                "suoid",
                "scid",
                "sduoid",
                "rscc",
                "rscd",
                "rsce",
                "rscl",
                "rsct",
            }
        ),
    ),
    SigningForm("claimx", (frozenset({"systemdate", "expires"}),), frozenset({"systemdate", "expires"})),
)


def _param_name(pair: str) -> str:
    return unquote(pair.partition("=")[0]).strip().lower()


def identity_query(query: str, ignored_params: Iterable[str] = ()) -> str:
    """The part of a URL's query that names the object: signing and expiry parameters removed.

    Drops the parameters of every SIGNING_FORMS form the query is in, and every name in
    `ignored_params` (the `ingest.identity_ignored_params` setting; case-insensitive); keeps the
    other pairs exactly as written, sorted, so their order does not matter. Linear in the query.
    """
    pairs = [p for p in query.split("&") if p]
    if not pairs:
        return ""
    named = [(_param_name(p), p) for p in pairs]
    names = {n for n, _ in named}
    forms = [form for form in SIGNING_FORMS if form.present(names)]
    ignored = {n.strip().lower() for n in ignored_params}
    kept = sorted(p for n, p in named if n not in ignored and not any(form.signs(n) for form in forms))
    return "&".join(kept)


def _split(url: str) -> tuple[str, str]:
    """(the URL without query and fragment, its query)."""
    base = url.strip().partition("#")[0]
    head, _, query = base.partition("?")
    return head, query


def _canonical_head(head: str) -> str:
    """Scheme and host lower-cased, default port dropped; total for text that is not a URL."""
    try:
        parts = urlsplit(head)
        port = parts.port
    except ValueError:  # a port above 65535, an unclosed IPv6 bracket: the text identifies it
        return head
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    netloc = host if port in (None, _DEFAULT_PORTS.get(scheme)) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def canonical_url(url: str, ignored_params: Iterable[str] = ()) -> str:
    """What identifies an attachment's object: the URL without what signs or expires it.

    Scheme and host lower-cased, default port dropped, fragment removed, and the query reduced to
    identity_query: `.../download?fileId=1001` and `?fileId=1002` are two objects, while a
    re-signed URL of one object (another signature, date or expiry) is the same one. A URL whose
    query holds only signing parameters has the same canonical form as before queries were kept
    (legacy_canonical_url), so its task id did not change. Total: text that is not a URL is
    identified by its own text, reduced the same way.
    """
    head, query = _split(url)
    kept = identity_query(query, ignored_params)
    canonical = _canonical_head(head)
    return f"{canonical}?{kept}" if kept else canonical


def legacy_canonical_url(url: str) -> str:
    """The canonical form before 2026-12 (the whole query dropped): recorded events' task ids."""
    return _canonical_head(_split(url)[0])


def event_id(trace_id: str, event_type: str, utc_datetime: str) -> str:
    """One id per claim event: its trace id, type and timestamp."""
    return _digest("event", trace_id, event_type, utc_datetime)


def task_id_of(event_id: str, canonical: str) -> str:
    """The task id of an event's attachment given its canonical URL."""
    return _digest("task", event_id, canonical)


def task_id(event_id: str, url: str, ignored_params: Iterable[str] = ()) -> str:
    """One id per attachment of an event: the event id plus the attachment's canonical URL.

    A task is one event's attachment: two events that list the same URL are two tasks (two
    inventory rows, two lake files, two cache entries), while a re-signed URL of the same object
    in the same event is the same task. Every other key (cache path, lake file suffix, retry
    scheduler state, dead-letter id) derives from this one id.
    """
    return task_id_of(event_id, canonical_url(url, ignored_params))


def legacy_task_id(event_id: str, url: str) -> str:
    """The task id ingest gave this attachment before queries were kept (legacy_canonical_url)."""
    return task_id_of(event_id, legacy_canonical_url(url))


def event_revision(canonical_urls: list[str]) -> str:
    """What one delivery of an event lists: the same attachments give the same revision.

    A corrected re-send of an event (same trace, type and time, so the same event id) that lists
    other attachments is a new revision; a plain redelivery is not.
    """
    return _digest("revision", *sorted(set(canonical_urls)), length=16)


def dlq_id(stage: str, *identity: str) -> str:
    """One id per dead-letter record; `identity` is the task id and attempt chain, or the source offset."""
    return _digest("dlq", stage, *identity)
