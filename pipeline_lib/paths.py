"""Destination paths of attachments in the lake: `{status_subtype}/{assignment_id}/{trace_id}/{file}`.

File names follow the business rules (assignment prefix, FNOL marker, estimate version) and end
with a short task-id suffix, so two URLs with the same file name never collide. Every component
is sanitised: no traversal, separators, control or reserved characters, at most 255 bytes of
UTF-8 (file systems and OneLake bound a name in bytes, and one character may take four), no
Windows device names (OneLake paths are opened from Windows tools too).

Bounds, so that every name derived from a path fits every store (design invariant 9):

- every component, the temporary names of the lake backends (upload/storage.py: 38 bytes) and
  the cache names (cache.py: 32 and 46 bytes) included, takes at most MAX_COMPONENT = 255 bytes of
  UTF-8: NAME_MAX of the local file systems (ext4, xfs), and at most 255 UTF-16 units on NTFS,
  where OneLake file explorer and Windows tools open these paths;
- Microsoft, "Naming and Referencing Containers, Blobs, and Metadata" (Azure Storage REST API
  reference), Blob names: a blob name is 1 to 1,024 characters long and the number of path
  segments comprising it cannot exceed 254; Directory names (hierarchical namespace, which
  OneLake is): 1 to 1,024 characters; no path segment should end with a dot. In OneLake the blob
  name is counted from the workspace (the file system), so it includes the root
  `<lakehouse>.Lakehouse/Files/<files_prefix>/`. That root may take MAX_ROOT_BYTES = 256 bytes
  (OneLakeStorage refuses a longer one at start) and a relative path at most MAX_PATH_BYTES = 768
  bytes in MAX_PATH_SEGMENTS = 16 segments, so root + path stays within 1,024 bytes (so within
  1,024 characters, whatever counts as a character) and far below 254 segments;
- the three folders take at most FOLDER_BYTES (512 bytes with their slashes), so the file name
  always has its full 255 bytes. Folders that fit are kept whole; when together they would not,
  each is cut to its share (FOLDER_SHARES: subtype 64, assignment id 223, trace id 223 bytes);
- the task-id suffix always survives: an extension is kept after it when the whole name fits, or
  when it takes at most MAX_EXTENSION = 16 bytes; a longer one of a name that must be shortened
  is part of the stem. An extension never ends like a suffix (`_` + 10 hex), so the task id is
  recoverable from every name and two task ids differing in their first 10 hex characters never
  share a path, whatever the lengths of the extension, the assignment id or the trace id.

No secret reaches a path (invariant 11): the file name is the URL's last segment cut before a
(decoded or still encoded) `?` or `#` and before a `;name=value` path parameter, then what
redaction.redact would hide is cut off too; the folders are redacted the same way. Only the first
MAX_READ_CHARS (4,096) characters of a segment or folder value are read, which bounds the cost.
"""

from __future__ import annotations

import functools
import posixpath
import re
import unicodedata
from urllib.parse import unquote, urlsplit

from pipeline_lib.redaction import is_secret_key, redact

MAX_COMPONENT = 255  # bytes of UTF-8 in one path component, temporary and cache names included
MAX_BLOB_NAME = 1024  # characters of a blob name, from the file system (Microsoft, see above)
MAX_BLOB_SEGMENTS = 254  # path segments of a blob name (Microsoft, see above)
MAX_ROOT_BYTES = 256  # `<lakehouse>.Lakehouse/Files/<files_prefix>/`, its final slash included
MAX_PATH_BYTES = MAX_BLOB_NAME - MAX_ROOT_BYTES  # a path relative to the root: 768 bytes
MAX_PATH_SEGMENTS = 16  # of a relative path (destination_path makes 4); with the root, far below 254
FOLDER_BYTES = MAX_PATH_BYTES - 1 - MAX_COMPONENT  # the three folders and their two slashes: 512
FOLDER_SHARES = (64, 223, 223)  # subtype, assignment id, trace id, when the folders must be cut
MAX_EXTENSION = 16  # bytes of an extension kept after the task-id suffix of a shortened name
SUFFIX_HEX = 10  # task-id characters in a file name
# Characters of a URL's last segment or of a folder's value that are read at all: far more than a
# 255-byte component keeps, and redaction's cost stays bounded per value (invariant 10).
MAX_READ_CHARS = 4096
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*%#]')
_DOTS = re.compile(r"\.{2,}")
_RESERVED = re.compile(r"^(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?$", re.IGNORECASE)
_SUFFIX_LIKE = re.compile(r"_[0-9a-f]{10}\Z")
# A `?` or `#` in a decoded segment, or one still encoded once or more (`%3F`, `%253F`, ...: a
# double-encoded URL). It starts a smuggled query or fragment when `name=` follows (the `=` maybe
# encoded too: _QUERY_START), or when it comes after the name's last dot (a bare token after the
# extension). Otherwise it is a character of the name (`What%3F.pdf`, `Invoice %2312.pdf`) and
# stays. Linear: each lookahead stops at the next `?`, `#`, `&` or `%`, so the scans never overlap.
_QUERY_MARK = re.compile(r"[?#]|%(?:25)*(?:3f|23)", re.IGNORECASE)
_QUERY_START = re.compile(rf"(?:{_QUERY_MARK.pattern})(?=[^?#&=%]*+(?:=|%(?:25)*3d))", re.IGNORECASE)
# A path parameter with a value (`;jsessionid=..`, `;sig%3D..`); it is cut only when its name is
# a secret's (redaction.is_secret_key): `report;type=final.pdf` keeps its name. Linear.
_PATH_PARAM = re.compile(r";([^;=%]{1,64}+)(?:=|%(?:25)*3d)", re.IGNORECASE)
FNOL_SUBTYPE = "firstNoticeOfLossReceived"
ESTIMATE_SUBTYPE = "estimatePackageReceived"


def _cut(text: str, max_bytes: int) -> str:
    """The longest prefix of `text` whose UTF-8 takes at most `max_bytes` (never half a character)."""
    return text.encode("utf-8")[: max(max_bytes, 0)].decode("utf-8", "ignore")


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


@functools.lru_cache(maxsize=4096)  # pure; its callers pass at most MAX_READ_CHARS characters
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


def _unredacted_prefix(text: str) -> str:
    """`text` up to where redaction.redact would hide something (redact keeps the rest byte for byte)."""
    shown = redact(text)
    if shown == text:
        return text
    return posixpath.commonprefix([text, shown])


def _folder(value: str, max_length: int) -> str:
    return _bounded_folder(str(value)[:MAX_READ_CHARS], max_length)  # the cache keeps bounded keys only


@functools.lru_cache(maxsize=4096)  # an event's trace id and assignment repeat for each URL
def _bounded_folder(value: str, max_length: int) -> str:
    return sanitize_component(_unredacted_prefix(value), "unknown", max_length)


def url_file_name(url: str) -> str:
    """The last path segment of a URL, percent-decoded, without what may carry a secret.

    '' when the path ends with '/'. Cut before a `?` or `#` that decoding revealed (or that is
    still encoded: a double-encoded URL), before a `;name=value` path parameter (`;jsessionid=..`),
    and before whatever redaction.redact would hide; only its first MAX_READ_CHARS characters are
    read. Total: a URL that urlsplit refuses (an unclosed IPv6 bracket) is read as text.
    """
    text = str(url)
    try:
        path = urlsplit(text).path
    except ValueError:
        rest = text.split("#", 1)[0].split("?", 1)[0]
        path = rest.split("://", 1)[1].partition("/")[2] if "://" in rest else rest
    name = posixpath.basename(unquote(path))[:MAX_READ_CHARS]
    secret_param = next((m for m in _PATH_PARAM.finditer(name) if is_secret_key(m.group(1))), None)
    after_extension = _QUERY_MARK.search(name, name.rfind(".") + 1)
    ends = [m.start() for m in (_QUERY_START.search(name), after_extension, secret_param) if m]
    if ends:
        name = name[: min(ends)]
    return _unredacted_prefix(name)


def attachment_file_name(
    status_subtype: str, assignment_id: str, url: str, task_id: str, estimate_version: str | None = None
) -> str:
    """`{prefix}_{stem}_{task_id[:10]}.{ext}` in at most MAX_COMPONENT bytes, the suffix always whole."""
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
    unique = f"_{task_id[:SUFFIX_HEX]}"
    head, suffix = f"{prefix}_{stem}", unique + (f".{ext}" if ext else "")
    if ext and (
        _SUFFIX_LIKE.search(ext) or (_size(ext) > MAX_EXTENSION and _size(head) + _size(suffix) > MAX_COMPONENT)
    ):
        # An extension that looks like a suffix, or a long one of a name that must be shortened,
        # is part of the stem: the suffix then always fits, and is always the last `_` + 10 hex.
        head, suffix = f"{prefix}_{name}", unique
    # Bound the whole name in bytes; the stem gives way first, the suffix that makes it unique never does.
    head = _cut(head, MAX_COMPONENT - _size(suffix))
    out = sanitize_component(head + suffix)
    # Every part was sanitised already; only a Unicode normalisation that grew the head could cut the suffix.
    return out if out.endswith(suffix) else head + suffix


def destination_path(
    status_subtype: str,
    assignment_id: str,
    trace_id: str,
    url: str,
    task_id: str,
    estimate_version: str | None = None,
) -> str:
    """The attachment's path relative to the lake's files prefix (bounds: see the module docstring)."""
    subtype = _folder(status_subtype, MAX_COMPONENT)
    assignment = _folder(assignment_id, MAX_COMPONENT)
    trace = _folder(trace_id, MAX_COMPONENT)
    version = estimate_version and sanitize_component(_unredacted_prefix(estimate_version[:MAX_READ_CHARS]))
    file_name = attachment_file_name(subtype, assignment, url, task_id, version)
    if _size(subtype) + _size(assignment) + _size(trace) + 2 > FOLDER_BYTES:
        subtype_share, assignment_share, trace_share = FOLDER_SHARES
        subtype = _folder(status_subtype, subtype_share)
        assignment = _folder(assignment_id, assignment_share)
        trace = _folder(trace_id, trace_share)
    return f"{subtype}/{assignment}/{trace}/{file_name}"
