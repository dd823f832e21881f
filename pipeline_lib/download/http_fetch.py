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

import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.response import BaseHTTPResponse
from urllib3.util import Timeout
from urllib3.util import connection as urllib3_connection

from pipeline_lib.download import deadline
from pipeline_lib.url_policy import UrlPolicy

Resolver = Callable[..., list]


def _guarded_connection(base: type[HTTPConnection], policy: UrlPolicy, resolver: Resolver) -> type[HTTPConnection]:
    class GuardedConnection(base):  # type: ignore[valid-type, misc]
        """Connects only to policy-checked addresses, within the download's deadline
        (deadline.py), and lets the deadline's watchdog shut every socket it uses down."""

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
            except TimeoutError as exc:
                raise ConnectTimeoutError(self, f"resolving {self.host}: {exc}") from None
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
    `close`.
    """
    adapter = session.get_adapter(url)
    pool = adapter.poolmanager.connection_from_url(url)  # type: ignore[attr-defined]
    parts = urlsplit(url)
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
