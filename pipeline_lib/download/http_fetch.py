"""A requests Session whose every new connection goes through the URL policy (invariant 6).

The check sits where the socket is opened: the host is resolved once, every address it maps to
is checked, and the socket connects to a checked address, never to a second lookup (so DNS
rebinding between check and connect is not possible). A refused address therefore never
receives a connection. This holds for redirect hops and for every new pooled connection.
TLS still verifies the certificate against the host name.

Proxies from the environment are ignored (trust_env = False): a proxy would connect on our
behalf to addresses we never checked.
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

from pipeline_lib.url_policy import UrlPolicy

Resolver = Callable[..., list]


def _guarded_connection(base: type[HTTPConnection], policy: UrlPolicy, resolver: Resolver) -> type[HTTPConnection]:
    class GuardedConnection(base):  # type: ignore[valid-type, misc]
        def _new_conn(self) -> socket.socket:
            try:
                # UrlRefused (a refused address) propagates unchanged: it is a policy decision.
                addresses = policy.resolve(self.host, self.port, resolver)
            except OSError as exc:  # pragma: no cover - resolve() turns gaierror into UrlRefused("dns")
                raise NameResolutionError(self.host, self, exc) from exc  # type: ignore[arg-type]
            last: OSError | None = None
            for address in addresses:
                try:
                    return urllib3_connection.create_connection(
                        (address, self.port),
                        self.timeout,
                        source_address=self.source_address,
                        socket_options=self.socket_options,
                    )
                except TimeoutError as exc:
                    raise ConnectTimeoutError(
                        self, f"connection to {self.host} ({address}) timed out (connect timeout={self.timeout})"
                    ) from exc
                except OSError as exc:
                    last = exc
            raise NewConnectionError(self, f"failed to connect to {self.host}: {last}")

    return GuardedConnection


class GuardedAdapter(HTTPAdapter):
    """An HTTPAdapter whose connection pools open only policy-checked connections."""

    def __init__(self, policy: UrlPolicy, resolver: Resolver = socket.getaddrinfo, pool_size: int = 10) -> None:
        self._policy, self._resolver = policy, resolver
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        policy, resolver = self._policy, self._resolver

        class GuardedHTTPPool(HTTPConnectionPool):
            ConnectionCls = _guarded_connection(HTTPConnection, policy, resolver)

        class GuardedHTTPSPool(HTTPSConnectionPool):
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
