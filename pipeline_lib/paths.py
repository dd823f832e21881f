"""Destination paths of attachments in the lake: `{status_subtype}/{assignment_id}/{trace_id}/{file}`.

File names follow the business rules (assignment prefix, FNOL marker, estimate version) and end
with a short task-id suffix, so two URLs with the same file name never collide. Every component
is sanitised: no traversal, separators, control or reserved characters, at most 255 bytes of
UTF-8 (file systems and OneLake bound a name in bytes, and one character may take four), no
Windows device names (OneLake paths are opened from Windows tools too).
"""

from __future__ import annotations

import functools
import posixpath
import re
import unicodedata
from urllib.parse import unquote, urlsplit

MAX_COMPONENT = 255  # bytes of UTF-8 in one path component
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*%#]')
_DOTS = re.compile(r"\.{2,}")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
FNOL_SUBTYPE = "firstNoticeOfLossReceived"
ESTIMATE_SUBTYPE = "estimatePackageReceived"


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 takes at most `max_bytes` (never half a character)."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


@functools.lru_cache(maxsize=65536)  # pure; an event's trace id and assignment repeat for each URL
def sanitize_component(value: str, fallback: str = "unnamed", max_length: int = MAX_COMPONENT) -> str:
    """One safe path component: never '.', '..', empty, a device name or longer than max_length bytes."""
    text = unicodedata.normalize("NFC", str(value))
    text = _UNSAFE.sub("_", text)
    text = _DOTS.sub("_", text)  # no traversal, even embedded
    text = text.strip(" .")
    if not text:
        text = fallback
    if _RESERVED.match(text):
        text = f"_{text}"
    if len(text.encode("utf-8")) > max_length:
        stem, dot, ext = text.rpartition(".")
        if dot and 0 < len(ext) <= 10 and stem:
            text = _cut(stem, max_length - len(ext.encode("utf-8")) - 1).rstrip(" .") + "." + ext
        else:
            text = _cut(text, max_length).rstrip(" .")
    return text or fallback


def url_file_name(url: str) -> str:
    """The last path segment of a URL, percent-decoded ('' when the path ends with '/')."""
    path = urlsplit(url).path
    return posixpath.basename(unquote(path))


def attachment_file_name(
    status_subtype: str, assignment_id: str, url: str, task_id: str, estimate_version: str | None = None
) -> str:
    name = sanitize_component(url_file_name(url), fallback="attachment")
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    if status_subtype == FNOL_SUBTYPE:
        prefix = f"{assignment_id}_FNOL"
    elif status_subtype == ESTIMATE_SUBTYPE:
        prefix = f"{assignment_id}_{estimate_version or 'unknown'}"
    else:
        prefix = assignment_id
    suffix = f"_{task_id[:10]}" + (f".{ext}" if ext else "")
    # Bound the whole name in bytes; the stem gives way first, the suffix that makes it unique never does.
    head = _cut(f"{prefix}_{stem}", MAX_COMPONENT - len(suffix.encode("utf-8")))
    return sanitize_component(head + suffix)


def destination_path(
    status_subtype: str,
    assignment_id: str,
    trace_id: str,
    url: str,
    task_id: str,
    estimate_version: str | None = None,
) -> str:
    """The attachment's path relative to the lake's files prefix."""
    subtype = sanitize_component(status_subtype, fallback="unknown")
    assignment = sanitize_component(assignment_id, fallback="unknown")
    trace = sanitize_component(trace_id, fallback="unknown")
    file_name = attachment_file_name(
        subtype, assignment, url, task_id, estimate_version and sanitize_component(estimate_version)
    )
    return f"{subtype}/{assignment}/{trace}/{file_name}"
