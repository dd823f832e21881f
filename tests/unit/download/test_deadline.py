"""One total deadline covers DNS, connect, TLS, headers and body (invariant 7): a slow source ends as
`timeout` at download.total_timeout_seconds (plus a small margin), however it stalls.

Every source here stalls with pauses shorter than the read timeout (or with timeouts longer than
the total), so only the total deadline can end it; each test measures how long past it the
download took.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pipeline_lib.download import deadline
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.local.samples import sample_task
from tests.unit.download.raw_server import download

TOTAL = 1.0
MARGIN = 0.4  # measured: 2-20 ms on an idle machine; the rest is for a busy CI host
TIMED_OUT = ("timeout", "download.total_timeout_seconds passed")


@pytest.fixture
def settings(download_settings):
    # Per-read and connect timeouts far above the total: only the total deadline can end these.
    return download_settings(total_timeout_seconds=TOTAL, read_timeout_seconds=5, connect_timeout_seconds=5)


def timed(fn):
    started = time.monotonic()
    outcome = fn()
    return outcome, time.monotonic() - started


def assert_ends_at_the_deadline(outcome, elapsed):
    assert (outcome.failure.category, outcome.failure.message) == TIMED_OUT
    assert TOTAL - 0.05 <= elapsed <= TOTAL + MARGIN, f"ended {elapsed - TOTAL:+.3f}s from the deadline"


def test_a_header_drip_ends_at_the_deadline(settings, sample_server):
    # One header byte every 0.1 s: each read succeeds, the header block would take 30 s.
    url = sample_server.url("drip.pdf", mode="header_drip", drip_bytes=300, drip_interval=0.1)
    outcome, elapsed = timed(lambda: download(settings, url, "drip.pdf"))
    assert_ends_at_the_deadline(outcome, elapsed)


def test_a_body_drip_ends_at_the_deadline(settings, sample_server):
    url = sample_server.url("drip.pdf", 10_000, mode="drip", drip_bytes=10, drip_interval=0.3)
    outcome, elapsed = timed(lambda: download(settings, url, "drip.pdf"))
    assert_ends_at_the_deadline(outcome, elapsed)
    assert outcome.failure.transient


def test_a_slow_first_byte_ends_at_the_deadline(settings, sample_server):
    url = sample_server.url("late.pdf", mode="slow_first_byte", delay=4)
    outcome, elapsed = timed(lambda: download(settings, url, "late.pdf"))
    assert_ends_at_the_deadline(outcome, elapsed)


def test_a_slow_resolver_ends_at_the_deadline(settings):
    # getaddrinfo cannot be interrupted: it runs on the resolver pool and the download waits at
    # most the time left.
    release = threading.Event()

    def slow_resolver(host, port, **kwargs):
        release.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    try:
        url = "http://slow-dns.test/a.pdf"
        outcome, elapsed = timed(lambda: download(settings, url, "a.pdf", resolver=slow_resolver))
    finally:
        release.set()
    assert_ends_at_the_deadline(outcome, elapsed)


def test_a_connect_that_never_completes_ends_at_the_deadline(settings):
    # A listener whose accept queue is full drops new SYNs: connect() hangs (connect timeout 5 s).
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(3):
            s = socket.socket()
            s.settimeout(0.2)
            try:
                s.connect(("127.0.0.1", port))
            except TimeoutError:
                pass
            fillers.append(s)
        outcome, elapsed = timed(lambda: download(settings, f"http://127.0.0.1:{port}/a.pdf", "a.pdf"))
    finally:
        for s in [*fillers, listener]:
            s.close()
    assert_ends_at_the_deadline(outcome, elapsed)


def test_a_tls_handshake_that_stalls_ends_at_the_deadline(settings, raw_server):
    # The server accepts and never answers the ClientHello: the handshake reads from the plain
    # socket, which is watched from the moment it is connected.
    def silent(conn: socket.socket) -> None:
        time.sleep(5)

    https = raw_server.url(silent).replace("http://", "https://")
    outcome, elapsed = timed(lambda: download(settings, https))
    assert_ends_at_the_deadline(outcome, elapsed)


def test_a_reused_pooled_connection_is_watched_too(settings, sample_server):
    # The second download reuses the first one's keep-alive connection (no new socket is opened),
    # so it is watched when its request starts.
    downloader = Downloader.from_settings(settings)
    first = downloader.download(sample_task(sample_server.url("one.pdf", 1000), "one.pdf"))
    assert first.cached is not None
    url = sample_server.url("two.pdf", mode="header_drip", drip_bytes=300, drip_interval=0.1)
    outcome, elapsed = timed(lambda: downloader.download(sample_task(url, "two.pdf")))
    assert_ends_at_the_deadline(outcome, elapsed)


def test_before_the_fix_a_header_drip_outlived_the_deadline_by_the_drip(settings, sample_server, monkeypatch):
    """The control: without the watchdog (a no-op watch) the same drip runs far past the total."""
    monkeypatch.setattr(deadline, "watch", lambda conn, sock: None)
    url = sample_server.url("drip.pdf", mode="header_drip", drip_bytes=25, drip_interval=0.1)
    outcome, elapsed = timed(lambda: download(settings, url, "drip.pdf"))
    assert outcome.failure.category == "timeout"
    assert elapsed >= 2.5 - 0.05  # every header byte arrived before the deadline could be checked


def test_a_download_registers_once_per_request_not_per_chunk(download_settings, sample_server, monkeypatch):
    calls = []
    real = deadline._watchdog.watch
    monkeypatch.setattr(deadline._watchdog, "watch", lambda *args: (calls.append(1), real(*args)))
    settings = download_settings(chunk_bytes=4096, max_bytes=10_000_000)
    outcome = download(settings, sample_server.url("big.pdf", 4_000_000), "big.pdf")
    assert outcome.cached is not None and outcome.cached.bytes == 4_000_000
    assert len(calls) <= 3  # the new socket (twice: before and after connect) and the request


def test_a_shut_down_connection_never_goes_back_to_the_pool(settings):
    """If the deadline fires between the last read and release_conn, the pool gets None, not the
    connection whose socket was shut down."""
    session = Downloader.from_settings(settings)._session()
    pool = session.get_adapter("http://127.0.0.1/").poolmanager.connection_from_host("127.0.0.1", 80, "http")
    ours, theirs = socket.socketpair()
    conn = pool._get_conn()  # takes a slot of the pool, as urlopen does
    with deadline.deadline_scope(0.05):
        conn.sock = ours
        deadline.watch(conn, ours)
        time.sleep(0.3)  # the watchdog fires
        assert ours.recv(10) == b""  # shut down: a blocked read would have returned at once
        pool._put_conn(conn)
    assert conn.sock is None  # closed
    assert all(c is not conn for c in pool.pool.queue)  # and its slot back as None
    theirs.close()


def test_a_connection_back_in_the_pool_is_no_longer_watched(settings):
    session = Downloader.from_settings(settings)._session()
    pool = session.get_adapter("http://127.0.0.1/").poolmanager.connection_from_host("127.0.0.1", 80, "http")
    ours, theirs = socket.socketpair()
    conn = pool._get_conn()
    with deadline.deadline_scope(0.2):
        conn.sock = ours
        deadline.watch(conn, ours)
        pool._put_conn(conn)  # released before the deadline: the next user owns it
        time.sleep(0.4)  # the deadline fires with nothing left to shut
    theirs.sendall(b"still open")
    assert ours.recv(10) == b"still open" and pool.pool.queue[-1] is conn
    ours.close()
    theirs.close()


def test_one_watchdog_thread_serves_concurrent_downloads(settings, sample_server):
    urls = [sample_server.url(f"d{i}.pdf", mode="header_drip", drip_bytes=300, drip_interval=0.1) for i in range(6)]
    downloader = Downloader.from_settings(settings)
    results: list = []
    started = time.monotonic()
    threads = [
        threading.Thread(target=lambda u=u, i=i: results.append(downloader.download(sample_task(u, f"d{i}.pdf"))))
        for i, u in enumerate(urls)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert [o.failure.message for o in results] == [TIMED_OUT[1]] * 6
    assert elapsed <= TOTAL + MARGIN
    assert [t.name for t in threading.enumerate()].count("download-deadlines") == 1


def test_resolve_within_gives_up_but_returns_results_in_time():
    assert deadline.resolve_within(1.0, lambda x: [x], 7) == [7]
    with pytest.raises(TimeoutError):
        deadline.resolve_within(0.05, lambda: time.sleep(1))
    with pytest.raises(TimeoutError):
        deadline.resolve_within(0, lambda: [])
    with pytest.raises(socket.gaierror):  # the resolver's own errors come through unchanged

        def fails():
            raise socket.gaierror(socket.EAI_NONAME, "no")

        deadline.resolve_within(1.0, fails)
