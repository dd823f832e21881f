"""A requests Session whose every new connection goes through the URL policy (invariant 6).

The check sits where the socket is opened: the host is resolved once, every address it maps to
is checked, and the socket connects to a checked address, never to a second lookup (so DNS
rebinding between check and connect is not possible). A refused address therefore never
receives a connection. This holds for redirect hops and for every new pooled connection.
TLS still verifies the certificate against the host name.

Proxies from the environment are ignored (trust_env = False): a proxy would connect on our
behalf to addresses we never checked.

Every connection also keeps the download's total deadline (deadline.py): DNS is waited for at
most the time left, the connect timeout is at most the time left, and every socket it opens or
reuses is watched, so the watchdog can shut it down at the deadline; a connection it shut down
never goes back to the pool.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.response import BaseHTTPResponse, GzipDecoderState, HTTPResponse, MultiDecoder
from urllib3.util import Timeout
from urllib3.util import connection as urllib3_connection

from pipeline_lib.bounds import ascii_int
from pipeline_lib.download import deadline
from pipeline_lib.errors import PipelineError
from pipeline_lib.url_policy import UrlPolicy, UrlRefused

Resolver = Callable[..., list]


class IncompleteHead(http.client.IncompleteRead):
    """The connection ended inside the status line or header block. http.client takes an end of
    stream there for the end of the headers, so a response cut after "HTTP/1.1 200 OK" would
    otherwise read as a complete one with an empty body."""

    def __init__(self) -> None:
        super().__init__(b"")

    def __repr__(self) -> str:
        return "IncompleteHead(the connection ended inside the response headers)"

    __str__ = __repr__


class _HeadReader:
    """http.client's file while it reads the head of a response: notices a line cut short."""

    __slots__ = ("_fp", "ended")

    def __init__(self, fp: Any) -> None:
        self._fp, self.ended = fp, False

    def readline(self, limit: int = -1) -> bytes:
        line = self._fp.readline(limit)
        if not line.endswith(b"\n"):
            self.ended = True  # the end of the stream (or an over-long line, which http.client refuses)
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


class _HeadCheckedResponse(http.client.HTTPResponse):
    def begin(self) -> None:
        if self.headers is not None:
            return
        body = self.fp
        head = self.fp = _HeadReader(body)  # type: ignore[assignment]
        try:
            super().begin()
        finally:
            if self.fp is head:
                self.fp = body  # the body is read from the real file: nothing added per chunk
        if head.ended:
            raise IncompleteHead()


def _guarded_connection(base: type[HTTPConnection], policy: UrlPolicy, resolver: Resolver) -> type[HTTPConnection]:
    class GuardedConnection(base):  # type: ignore[valid-type, misc]
        """Connects only to policy-checked addresses, within the download's deadline
        (deadline.py), and lets the deadline's watchdog shut every socket it uses down."""

        response_class = _HeadCheckedResponse

        def _new_conn(self) -> socket.socket:
            limit = deadline.current()
            remaining = limit.remaining() if limit is not None else None
            if remaining is not None and remaining <= 0:
                raise ConnectTimeoutError(self, "download.total_timeout_seconds passed before connecting")

            def lookup(*args: Any, **kwargs: Any) -> list:
                if limit is None:
                    return resolver(*args, **kwargs)
                return deadline.resolve_within(limit.remaining(), resolver, *args, **kwargs)

            try:
                # UrlRefused (a refused address) propagates unchanged: it is a policy decision.
                addresses = policy.resolve(self.host, self.port, lookup)
            except UrlRefused:
                raise
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"resolving {self.host}: {exc}") from None
            except ValueError as exc:  # UnicodeError: a host name IDNA cannot encode (a label > 63)
                raise UrlRefused("syntax", f"host {self.host!r} cannot be looked up: {exc}") from None
            except OSError as exc:  # pragma: no cover - resolve() turns gaierror into UrlRefused("dns")
                raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
            last: OSError | None = None
            for address in addresses:
                timeout = self.timeout
                if limit is not None:
                    left = limit.remaining()
                    if left <= 0:
                        raise ConnectTimeoutError(self, "download.total_timeout_seconds passed while connecting")
                    timeout = left if timeout is None else min(timeout, left)
                try:
                    sock = urllib3_connection.create_connection(
                        (address, self.port),
                        timeout,
                        source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except TimeoutError as exc:
                    raise ConnectTimeoutError(
                        self, f"connection to {self.host} ({address}) timed out (connect timeout={timeout:.1f}s)"
                    ) from exc
                except OSError as exc:
                    last = exc
                    continue
                self._deadline_shut = False
                deadline.watch(self, sock)  # before the TLS handshake, which reads from it
                return sock
            raise NewConnectionError(self, f"failed to connect to {self.host}: {last}")

        def connect(self) -> None:
            super().connect()
            deadline.watch(self, self.sock)  # for https, the TLS socket that replaced the plain one

        def request(self, *args: Any, **kwargs: Any) -> None:
            if self.sock is not None:  # a pooled connection, reused by this download
                deadline.watch(self, self.sock)
            super().request(*args, **kwargs)

    return GuardedConnection


def _deadline_aware(pool: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    class Pool(pool):  # type: ignore[valid-type, misc]
        def _put_conn(self, conn: Any) -> None:
            if conn is not None and not deadline.release(conn):
                conn.close()  # its socket was shut down at a deadline: never reused
                conn = None
            super()._put_conn(conn)

    return Pool


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connection pools open only policy-checked connections."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver = socket.getaddrinfo, pool_size: int = 10) -> None:
        self._policy, self._resolver = policy, resolver
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        policy, resolver = self._policy, self._resolver

        class GuardedHTTPPool(_deadline_aware(HTTPConnectionPool)):  # type: ignore[misc]
            ConnectionCls = _guarded_connection(HTTPConnection, policy, resolver)

        class GuardedHTTPSPool(_deadline_aware(HTTPSConnectionPool)):  # type: ignore[misc]
            ConnectionCls = _guarded_connection(HTTPSConnection, policy, resolver)  # type: ignore[assignment]

        self.poolmanager.pool_classes_by_scheme = {"http": GuardedHTTPPool, "https": GuardedHTTPSPool}

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("proxies are not supported: they would bypass the URL policy's address checks")


def guarded_session(
    policy: UrlPolicy, resolver: Resolver = socket.getaddrinfo, pool_size: int = 10
) -> requests.Session:
    """A pooled session for one worker thread; every connection it opens is policy-checked."""
    session = requests.Session()
    session.trust_env = False
    adapter = GuardedAdapter(policy, resolver, pool_size)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = "xact-pipeline/0.1 (attachment download)"
    return session


REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def send_get(session: requests.Session, url: str, timeout: tuple[float, float]) -> BaseHTTPResponse:
    """A streamed GET through the session's guarded connection pool; redirects are not followed.

    It goes to the pool of the adapter the session mounted (so every connection is still
    policy-checked) rather than through Session.request, whose per-call merging of cookies,
    environment settings and hooks, and requests' Response wrapper, cost about 30% of the
    throughput on 64 KiB files (benchmarks/download_throughput.py). The pipeline uses none of
    them. The caller reads the body with `read1` and then calls `release_conn` (keep-alive) or
    `close`. `url` must have passed `UrlPolicy.check_url`.
    """
    adapter = session.get_adapter(url)
    parts = urlsplit(url)
    # The pool of the host the URL policy checked: the same parser (urlsplit) picks both, so no
    # difference between two URL parsers can send the request to a host that was not checked.
    scheme = parts.scheme.lower()
    port = parts.port or (443 if scheme == "https" else 80)
    pool = adapter.poolmanager.connection_from_host(parts.hostname, port, scheme)  # type: ignore[attr-defined]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return pool.urlopen(
        "GET",
        target,
        headers=dict(session.headers),
        redirect=False,
        retries=False,
        preload_content=False,
        decode_content=True,
        assert_same_host=False,
        timeout=Timeout(connect=timeout[0], read=timeout[1]),
    )


class MalformedResponse(PipelineError, ValueError):
    """A response header the downloader cannot trust (framing or encoding): a permanent failure."""


def content_length(headers: Mapping[str, str]) -> int | None:
    """The body length the response announces: None when it announces none (or is chunked, which
    overrides Content-Length); MalformedResponse unless it is one ASCII integer in range.

    Stricter than http.client and urllib3 on purpose: "²" or "1, 1" or "-1" would make them
    disagree with each other about where the body ends (RFC 9112 section 6.3: an invalid
    Content-Length is an unrecoverable error).
    """
    if _chunked(headers):
        return None
    value = headers.get("content-length")
    if value is None:
        return None
    length = ascii_int(value)
    if length is None:
        raise MalformedResponse(f"invalid Content-Length {_quote(value)}: not one ASCII integer up to 2^63-1")
    return length


def content_encoded(headers: Mapping[str, str]) -> bool:
    """Is the body content-coded? MalformedResponse when urllib3 would not decode it exactly (an
    unknown coding, or an empty or extra token), which would store the coded bytes as the file."""
    value = headers.get("content-encoding")
    if value is None or value.strip().lower() in ("", "identity"):
        return False
    coding = value.lower()
    decoders = HTTPResponse.CONTENT_DECODERS
    tokens = [token.strip() for token in coding.split(",")]
    if coding in decoders or ("," in coding and len(tokens) <= _MAX_CODINGS and all(t in decoders for t in tokens)):
        return True
    raise MalformedResponse(
        f"Content-Encoding {_quote(value)} cannot be decoded (supported: {', '.join(decoders)}, "
        f"at most {_MAX_CODINGS} in a chain)"
    )


def coding_complete(response: BaseHTTPResponse) -> bool:
    """Did a content-coded body reach the end of its coded stream? urllib3 does not check: a gzip
    or deflate stream cut short decodes to whatever arrived, without an error. This reads
    urllib3's decoder objects (tests/unit/download pin it); True where it cannot tell (br)."""
    decoder = getattr(response, "_decoder", None)
    for part in getattr(decoder, "_decoders", None) or [decoder]:
        if getattr(part, "_state", None) == GzipDecoderState.SWALLOW_DATA:
            continue  # trailing garbage after complete members, which urllib3 ignores
        if getattr(getattr(part, "_obj", None), "eof", None) is False:
            return False
    return True


def check_transfer_encoding(headers: Mapping[str, str]) -> None:
    """Only `chunked` (or none): urllib3 and http.client disagree about any other list."""
    value = headers.get("transfer-encoding")
    if value is not None and not _chunked(headers):
        raise MalformedResponse(f"unsupported Transfer-Encoding {_quote(value)} (only chunked)")


def _chunked(headers: Mapping[str, str]) -> bool:
    # Exactly: http.client de-chunks only "chunked" (no spaces), urllib3 any list holding it.
    value = headers.get("transfer-encoding")
    return value is not None and value.lower() == "chunked"


def _quote(value: str) -> str:
    return repr(value[:80] + ("..." if len(value) > 80 else ""))


_MAX_CODINGS = MultiDecoder.max_decode_links
