"""One total deadline per download that covers DNS, connect, TLS, the response headers and the
body (invariant 7), however slowly a server drips bytes.

Socket timeouts bound each read, not their sum: a server that sends one header byte just inside
the read timeout would hold a download thread for as long as it likes. So:

    with deadline_scope(settings.total_timeout_seconds) as limit:
        ...                        # every socket the guarded connections open or reuse is watched
        limit.expired()            # True once the time is up

- While a download runs, its `Deadline` is the thread's current one. The guarded connection
  (http_fetch.py) calls `watch(conn, sock)` for every socket it opens (before the TLS handshake,
  and again for the TLS socket) and for a pooled connection it reuses.
- One watchdog thread per process sleeps until the earliest deadline of the downloads in
  flight. When one passes, it marks it fired and shuts its sockets down (SHUT_RDWR), so a blocked
  recv returns at once and the download ends as `timeout`. Nothing happens per chunk: a
  download registers once, and each request once.
- A connection whose socket was shut down never goes back to the pool: `release(conn)` (the
  pool's `_put_conn`) says so, atomically with the watchdog. A connection that does go back is
  no longer watched, so this download's deadline cannot touch the socket of its next user.
- DNS: `getaddrinfo` cannot be interrupted, so `resolve_within` runs it on a small shared pool of
  daemon threads and waits at most the time left.

A socket shut down reads as an early end of the body (or as a complete one when the server sent
no Content-Length), so the downloader asks `expired()` before it trusts an end of body.

Known limit: the watchdog may shut down a socket that urllib3 closed a moment before (while the
download still runs); that is harmless (EBADF) unless, in the few instructions between CPython
reading the socket's descriptor and calling shutdown(2), another thread closed it and a third
opened a new socket under the same number. Sockets that go back to the pool are never affected.
"""

from __future__ import annotations

import os
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any


class Deadline:
    """The moment (time.monotonic) a download must have ended by, and the sockets it uses."""

    __slots__ = ("at", "fired", "_watched")

    def __init__(self, at: float) -> None:
        self.at = at
        self.fired = False  # set by the watchdog, under its lock, before it shuts sockets down
        self._watched: list[tuple[Any, socket.socket]] = []  # (connection, socket)

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expired(self) -> bool:
        return self.fired or time.monotonic() >= self.at


class _Watchdog:
    """The process's one watchdog thread and the deadlines of the downloads in flight."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active: set[Deadline] = set()
        self._target: float | None = None  # when the thread wakes up next (None: when notified)
        self._thread: threading.Thread | None = None
        self.firings = 0  # deadlines that fired, for tests

    def add(self, deadline: Deadline) -> None:
        with self._cond:
            self._active.add(deadline)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="download-deadlines", daemon=True)
                self._thread.start()
            elif self._target is None or deadline.at < self._target:
                self._cond.notify()
            # else: the thread wakes up earlier anyway, and then looks at this one.

    def remove(self, deadline: Deadline) -> None:
        """The download ended: its sockets are no longer watched. (No wake-up: the thread finds
        it gone when it next wakes.)"""
        with self._cond:
            self._active.discard(deadline)
            deadline._watched.clear()

    def watch(self, deadline: Deadline, conn: Any, sock: socket.socket) -> None:
        with self._cond:
            conn._deadline = deadline
            if deadline.fired:
                _shut(conn, sock)  # opened after the deadline passed: it never gets to read
            elif deadline in self._active and not any(s is sock for _, s in deadline._watched):
                deadline._watched.append((conn, sock))

    def release(self, conn: Any) -> bool:
        """May `conn` go back to its pool? False if the watchdog shut its socket down. Otherwise
        it is no longer watched (its next user watches it under its own deadline)."""
        with self._cond:
            if getattr(conn, "_deadline_shut", False):
                return False
            deadline = getattr(conn, "_deadline", None)
            if deadline is not None:
                deadline._watched[:] = [(c, s) for c, s in deadline._watched if c is not conn]
                conn._deadline = None
            return True

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for deadline in [d for d in self._active if d.at <= now]:
                    self._active.discard(deadline)
                    deadline.fired = True
                    self.firings += 1
                    for conn, sock in deadline._watched:
                        _shut(conn, sock)
                    deadline._watched.clear()
                self._target = min((d.at for d in self._active), default=None)
                self._cond.wait(None if self._target is None else max(self._target - now, 0.001))


def _shut(conn: Any, sock: socket.socket) -> None:
    conn._deadline_shut = True
    try:
        # The plain socket's shutdown, also for an SSLSocket: ssl's own shutdown() drops the TLS
        # object under the feet of the thread that is reading.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed, or not connected yet


class _ResolverPool:
    """Daemon threads for blocking DNS lookups: grows on demand up to `size` (as
    ThreadPoolExecutor does), but its threads are never joined at exit: a lookup stuck in the C
    library must not hold up the interpreter's exit."""

    def __init__(self, size: int = 16) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]]] = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads = 0

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn))
        if not self._idle.acquire(blocking=False):
            with self._lock:
                if self._threads < self._size:
                    self._threads += 1
                    threading.Thread(target=self._work, name="download-dns", daemon=True).start()
        return future

    def _work(self) -> None:
        while True:
            future, fn = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except Exception as exc:  # noqa: BLE001 - handed to the waiting thread, which re-raises it
                    future.set_exception(exc)
            del future, fn
            self._idle.release()


_watchdog = _Watchdog()
_resolvers = _ResolverPool()
_local = threading.local()


def _after_fork_in_child() -> None:
    """A forked child (PySpark forks its Python workers) has no watchdog or resolver threads."""
    global _watchdog, _resolvers
    _watchdog = _Watchdog()
    _resolvers = _ResolverPool()


os.register_at_fork(after_in_child=_after_fork_in_child)


@contextmanager
def deadline_scope(seconds: float) -> Iterator[Deadline]:
    """The current thread's download must end within `seconds` from now."""
    deadline = Deadline(time.monotonic() + seconds)
    outer = getattr(_local, "deadline", None)
    watchdog = _watchdog
    watchdog.add(deadline)
    _local.deadline = deadline
    try:
        yield deadline
    finally:
        _local.deadline = outer
        watchdog.remove(deadline)


def current() -> Deadline | None:
    """The deadline of the download running on this thread, if any."""
    return getattr(_local, "deadline", None)


def watch(conn: Any, sock: socket.socket | None) -> None:
    """Watch `conn`'s socket under the current thread's deadline (nothing outside a download)."""
    deadline = getattr(_local, "deadline", None)
    if deadline is not None and sock is not None:
        _watchdog.watch(deadline, conn, sock)


def release(conn: Any) -> bool:
    """For a pool's `_put_conn`: False when the connection must be closed instead."""
    return _watchdog.release(conn)


def firings() -> int:
    """How many deadlines fired in this process (the watchdog's count)."""
    return _watchdog.firings


def resolve_within(seconds: float, resolver: Callable[..., list], *args: Any, **kwargs: Any) -> list:
    """`resolver(*args, **kwargs)`, waiting at most `seconds`; TimeoutError after that."""
    if seconds <= 0:
        raise TimeoutError("no time left to resolve the host name")
    future = _resolvers.submit(lambda: resolver(*args, **kwargs))
    try:
        return future.result(timeout=seconds)
    except TimeoutError:
        if future.done():
            raise  # the resolver's own
        future.cancel()  # still queued: it never runs; running: its result is dropped
        raise TimeoutError(f"the host name did not resolve within {seconds:.1f}s") from None
