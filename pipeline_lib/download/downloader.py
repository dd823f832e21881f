"""Download one attachment into the cache: checked, streamed, checksummed, bounded (invariants 6, 7).

    downloader = Downloader.from_settings(settings)
    outcome = downloader.download(task)          # never raises for a failed download
    outcome.cached                               # CachedAttachment on success
    outcome.failure                              # Failure (failures.py table) otherwise

Order of checks, cheapest and most final first; the first four make no request:
URL policy (scheme, host, credentials, literal address) -> extension allowed -> presigned URL
not expired -> the host's circuit breaker -> then the request, with the policy checked again at
every connection and redirect hop, the status, the framing headers (Content-Length one ASCII
integer, no Transfer- or Content-Encoding urllib3 would not decode exactly), Content-Length
against max_bytes, the content type against the extension, and the body streamed in chunks to
`<final>.<random>.part` with the decoded bytes counted and hashed, and an atomic rename to the
path derived from the task id.

One total deadline (download.total_timeout_seconds) covers all of it: DNS, connect, TLS, the
response headers and the body (deadline.py shuts a late download's socket down, so a server that
drips bytes cannot hold a thread past it). Whatever a server sends ends as a classified Failure
(failures.py); only a bug raises, and the breaker still hears of it (as neutral).
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPException, IncompleteRead
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urljoin

import requests
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    InvalidHeader,
    LocationValueError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
)
from urllib3.response import BaseHTTPResponse

from pipeline_lib.cache import cache_path, part_path
from pipeline_lib.circuit_breaker import BreakerRegistry, shared_registry
from pipeline_lib.config import DownloadSettings, Settings
from pipeline_lib.contracts import CachedAttachment, DownloadTask
from pipeline_lib.download.content_policy import ContentPolicy, ContentRefused
from pipeline_lib.download.deadline import Deadline, deadline_scope
from pipeline_lib.download.http_fetch import (
    REDIRECT_STATUSES,
    MalformedResponse,
    Resolver,
    check_transfer_encoding,
    coding_complete,
    content_encoded,
    content_length,
    guarded_session,
    send_get,
)
from pipeline_lib.download.presigned import expiry_problem
from pipeline_lib.errors import PipelineError
from pipeline_lib.failures import HOST_HEALTH_CATEGORIES, Failure, classify_status, failure
from pipeline_lib.times import iso_utc
from pipeline_lib.url_policy import UrlPolicy, UrlRefused


@dataclass(frozen=True)
class DownloadOutcome:
    task: DownloadTask
    started_at: datetime
    finished_at: datetime
    cached: CachedAttachment | None = None
    failure: Failure | None = None
    breaker_opened: bool = False
    requested: bool = True  # False when a check refused the task before any request

    @property
    def bytes(self) -> int:
        return self.cached.bytes if self.cached else 0


class _Stop(PipelineError):
    """Ends a download with a classified failure."""

    def __init__(self, result: Failure) -> None:
        super().__init__(result.message)
        self.failure = result


class Downloader:
    """Downloads tasks; thread-safe, one pooled HTTP session per thread."""

    def __init__(
        self,
        settings: DownloadSettings,
        url_policy: UrlPolicy,
        cache_dir: str,
        breakers: BreakerRegistry | None = None,
        resolver: Resolver = socket.getaddrinfo,
    ) -> None:
        self.settings = settings
        self.url_policy = url_policy
        self.content_policy = ContentPolicy.from_settings(settings)
        self.cache_dir = os.path.abspath(cache_dir)
        self.breakers = breakers or shared_registry(
            "download", settings.breaker.failure_threshold, settings.breaker.open_seconds
        )
        self.resolver = resolver
        self._local = threading.local()

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: object) -> Downloader:
        return cls(settings.download, UrlPolicy.from_settings(settings.url_policy), settings.cache_dir, **kwargs)  # type: ignore[arg-type]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = guarded_session(self.url_policy, self.resolver)
        return session

    def download(self, task: DownloadTask, now: datetime | None = None) -> DownloadOutcome:
        started = now or datetime.now(UTC)
        # Checks that need no request.
        try:
            host, _port = self.url_policy.check_url(task.url)
            self.content_policy.check_extension(task.blob_path)
        except UrlRefused as exc:
            return self._outcome(task, started, failure("policy", f"URL refused ({exc.rule}): {exc}"), requested=False)
        except ContentRefused as exc:
            return self._outcome(task, started, failure("content_type", str(exc)), requested=False)
        expired = expiry_problem(task.url, started, self.settings.expiry_margin_seconds)
        if expired:
            return self._outcome(task, started, failure("expired", expired), requested=False)
        breaker = self.breakers.get(host.lower())
        if not breaker.allow():
            message = f"circuit breaker for {host} is open after repeated failures; no request made"
            refused = Failure("circuit_open", True, message, retry_after_seconds=breaker.seconds_until_probe())
            return self._outcome(task, started, refused, requested=False)

        # Every path records the outcome with the breaker, so a half-open probe is never left out:
        # an unexpected exception (the per-record guard makes it an `internal` dead letter) says
        # nothing about the host and counts as neutral.
        recorded = False
        try:
            try:
                cached = self._fetch(task, started)
            except _Stop as stop:
                result = stop.failure
                opened = False
                if result.category in HOST_HEALTH_CATEGORIES:
                    opened = breaker.record_failure()
                else:
                    breaker.record_neutral()
                recorded = True
                return self._outcome(task, started, result, breaker_opened=opened)
            breaker.record_success()
            recorded = True
        finally:
            if not recorded:
                breaker.record_neutral()
        return DownloadOutcome(task, started, datetime.now(UTC), cached=cached)

    def _outcome(
        self,
        task: DownloadTask,
        started: datetime,
        result: Failure,
        *,
        requested: bool = True,
        breaker_opened: bool = False,
    ) -> DownloadOutcome:
        return DownloadOutcome(
            task,
            started,
            datetime.now(UTC),
            failure=result,
            breaker_opened=breaker_opened,
            requested=requested,
        )

    def _fetch(self, task: DownloadTask, started: datetime) -> CachedAttachment:
        s = self.settings
        with deadline_scope(s.total_timeout_seconds) as limit:
            url = task.url.strip()  # as UrlPolicy.check_url read it
            response = None
            reading = "the response"
            try:
                for hop in range(s.max_redirects + 1):
                    if hop:
                        self._check_hop(url)
                    self._check_deadline(limit)
                    left = limit.remaining()
                    timeout = (min(s.connect_timeout_seconds, left), min(s.read_timeout_seconds, left))
                    response = send_get(self._session(), url, timeout)
                    location = response.headers.get("location")
                    if not (response.status in REDIRECT_STATUSES and location):
                        break
                    url = _redirect_target(url, location)
                    response.close()
                    response = None
                else:
                    raise _Stop(failure("policy", f"more than download.max_redirects ({s.max_redirects}) redirects"))
                assert response is not None
                if response.status != 200:
                    raise _Stop(
                        classify_status(
                            response.status,
                            retry_after=response.headers.get("retry-after"),
                            auth_transient=s.auth_errors_transient,
                        )
                    )
                reading = "the body"
                cached = self._store(task, response, limit)
                response.release_conn()  # read to the end: the connection goes back to the pool
                response = None
                return cached
            except _Stop as stop:
                if limit.fired and stop.failure.category == "truncated":  # an end of body we caused
                    raise _Stop(_TOTAL_TIMEOUT) from None
                raise
            except (UrlRefused, LocationValueError, MalformedResponse, InvalidHeader) as exc:
                raise _Stop(_refused(exc)) from None
            except (HTTPError, HTTPException, OSError) as exc:
                raise _Stop(_TOTAL_TIMEOUT if limit.expired() else _network_failure(exc, reading)) from None
            finally:
                if response is not None:
                    response.close()

    def _open_temp(self, temp: Path) -> BinaryIO:
        with self._cache_errors():
            try:
                return open(temp, "wb")  # closed by _store
            except FileNotFoundError:  # first file of this folder, or the cache was cleaned up
                temp.parent.mkdir(parents=True, exist_ok=True)
                return open(temp, "wb")

    @contextmanager
    def _cache_errors(self) -> Iterator[None]:
        """Local cache I/O errors are transient and say nothing about the source host."""
        try:
            yield
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _Stop(failure("disk_full", f"the download cache {self.cache_dir} is full: {exc}")) from None
            raise _Stop(failure("cache_io", f"cannot write the download cache {self.cache_dir}: {exc}")) from None

    def _check_hop(self, url: str) -> None:
        self.url_policy.check_url(url)

    @staticmethod
    def _check_deadline(limit: Deadline) -> None:
        if limit.expired():
            raise _Stop(_TOTAL_TIMEOUT)

    def _store(self, task: DownloadTask, response: BaseHTTPResponse, limit: Deadline) -> CachedAttachment:
        s = self.settings
        headers = response.headers
        check_transfer_encoding(headers)
        declared = content_length(headers)
        encoded = content_encoded(headers)
        if declared is not None and declared > s.max_bytes:
            raise _Stop(failure("too_large", f"Content-Length {declared} exceeds download.max_bytes ({s.max_bytes})"))
        content_type = headers.get("content-type")
        try:
            self.content_policy.check_content_type(task.blob_path, content_type)
        except ContentRefused as exc:
            raise _Stop(failure("content_type", str(exc))) from None

        final = cache_path(self.cache_dir, task.task_id)
        temp = part_path(final)
        digest = hashlib.sha256()
        count = 0
        raw = response
        out = self._open_temp(temp)
        try:
            while True:
                # read1: whatever has arrived (up to a chunk), so a slow drip still reaches the
                # deadline check; decoded, so max_bytes counts what Content-Encoding expands to.
                chunk = raw.read1(s.chunk_bytes, decode_content=True)
                if not chunk:
                    break
                count += len(chunk)
                if count > s.max_bytes:
                    message = f"the body exceeds download.max_bytes ({s.max_bytes}) after {count} bytes"
                    raise _Stop(failure("too_large", message))
                digest.update(chunk)
                with self._cache_errors():
                    out.write(chunk)
                # Let go of this chunk before the next read allocates one: otherwise each download
                # thread holds two (up to 2 x chunk_bytes) while it waits for the socket.
                del chunk
                self._check_deadline(limit)
            # The watchdog shuts the socket down at the deadline, which reads as an end of body.
            self._check_deadline(limit)
            with self._cache_errors():
                out.close()
            if declared is not None and not encoded and count != declared:
                raise _Stop(failure("truncated", f"got {count} bytes of the {declared} announced"))
            if encoded and declared != 0 and not coding_complete(response):
                coding = headers.get("content-encoding")
                raise _Stop(failure("truncated", f"the {coding} body ended before the end of its coded stream"))
            with self._cache_errors():
                os.replace(temp, final)
        finally:
            out.close()
            if temp.exists():
                temp.unlink()
        return CachedAttachment(
            task=task.to_dict(),
            cache_uri=final.as_uri(),  # cache_dir is absolute (Settings.cache_dir)
            bytes=count,
            sha256=digest.hexdigest(),
            content_type=_stored_content_type(content_type),
            downloaded_at=iso_utc(datetime.now(UTC)),
        )


_TOTAL_TIMEOUT = failure("timeout", "download.total_timeout_seconds passed")


def _redirect_target(url: str, location: object) -> str:
    """The absolute URL a redirect's Location names; policy refusal when it cannot be read."""
    if not isinstance(location, str):
        raise UrlRefused("syntax", f"the redirect Location is not text: {type(location).__name__}")
    try:
        return urljoin(url, location.strip())
    except ValueError as exc:  # e.g. "http://[::1": an unbalanced IPv6 bracket
        raise UrlRefused("syntax", f"the redirect Location cannot be parsed ({exc}): {location[:200]!r}") from None


def _refused(exc: Exception) -> Failure:
    """A URL or a response the pipeline will not use: permanent."""
    if isinstance(exc, UrlRefused):
        if exc.rule == "dns":
            return failure("connection", str(exc))
        return failure("policy", f"redirect or address refused ({exc.rule}): {exc}")
    if isinstance(exc, LocationValueError):  # urllib3 cannot use a host the policy let through
        return failure("policy", f"redirect or address refused (syntax): {_short(exc)}")
    return failure("http_permanent", f"malformed response: {_short(exc)}")


def _network_failure(exc: BaseException, reading: str) -> Failure:
    """A failure of the connection or of the bytes on it (transient: it says the host is unwell)."""
    if isinstance(exc, NewConnectionError):  # before ConnectTimeoutError: urllib3 derives it from that
        return failure("connection", f"could not connect: {_short(exc)}")
    if isinstance(exc, (TimeoutError, ConnectTimeoutError, ReadTimeoutError)):
        return failure("timeout", f"timed out: {_short(exc)}")
    if isinstance(exc, ProtocolError):
        if any(isinstance(arg, IncompleteRead) for arg in exc.args) or "IncompleteRead" in repr(exc):
            return failure("truncated", f"the connection broke while reading {reading}: {_short(exc)}")
        return failure("connection", f"the connection broke while reading {reading}: {_short(exc)}")
    if isinstance(exc, DecodeError):
        return failure("truncated", f"the encoded body could not be decoded: {_short(exc)}")
    if isinstance(exc, HTTPException):  # a status line or header http.client cannot read
        return failure("connection", f"{reading} could not be read: {_short(exc)}")
    if isinstance(exc, HTTPError):  # any other urllib3 failure (TLS, proxy, ...)
        return failure("connection", f"could not connect: {_short(exc)}")
    return failure("connection", f"I/O error: {_short(exc)}")  # socket-level errors urllib3 did not wrap


def _stored_content_type(value: str | None) -> str | None:
    """The Content-Type as the cached message carries it: printable ASCII, bounded; else its media
    type alone (which the content policy has checked)."""
    if not value:
        return None
    if len(value) <= 255 and value.isascii() and value.isprintable():
        return value
    media = value.split(";")[0].strip().lower()
    return media if media and len(media) <= 255 and media.isascii() and media.isprintable() else None


def _short(exc: BaseException) -> str:
    """An exception as one line (Failure redacts it: urllib3 messages repeat the URL)."""
    return f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400]
