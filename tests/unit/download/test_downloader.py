"""The pure-Python downloader against a real HTTP server on loopback, one fault mode per test."""

from __future__ import annotations

import hashlib
import socket
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from pipeline_lib.cache import cache_path
from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.config import load_settings
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.local.sample_server import sample_sha256
from pipeline_lib.local.samples import presigned, sample_task


@pytest.fixture
def server(sample_server):
    return sample_server


@pytest.fixture
def settings(tmp_path):
    return load_settings(
        "local",
        overrides={
            "storage": {"root": str(tmp_path)},
            "url_policy": {"allow_private_addresses": False, "allowed_networks": ["127.0.0.1/32"]},
            "download": {"read_timeout_seconds": 1, "total_timeout_seconds": 3, "max_bytes": 1_000_000},
        },
    )


def downloader(settings, **kwargs) -> Downloader:
    kwargs.setdefault("breakers", BreakerRegistry(3, 60))
    return Downloader.from_settings(settings, **kwargs)


def fetch(settings, url, **kwargs):
    name = unquote(urlsplit(url).path.rsplit("/", 1)[1])
    return downloader(settings, **kwargs).download(sample_task(url, name))


def test_ok_streams_to_the_cache_path_with_sha256_and_size(settings, server):
    url = server.url("report.pdf", 300_000)
    outcome = fetch(settings, url)
    cached = outcome.cached
    assert outcome.failure is None
    assert (cached.bytes, cached.sha256, cached.content_type) == (
        300_000,
        sample_sha256("report.pdf", 300_000),
        "application/pdf",
    )
    path = cache_path(settings.cache_dir, outcome.task.task_id)
    assert cached.cache_uri == path.as_uri()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == cached.sha256
    assert not list(path.parent.glob("*.part"))  # the temp file was renamed, not left behind
    assert cached.download_task == outcome.task  # the upload gets the whole task


def test_a_second_download_of_the_same_task_overwrites_the_same_file(settings, server):
    first = fetch(settings, server.url("again.pdf", 1000))
    second = fetch(settings, server.url("again.pdf", 1000))
    assert first.cached.cache_uri == second.cached.cache_uri
    assert len(list(Path(settings.cache_dir).rglob("*"))) == 2  # one folder, one file


@pytest.mark.parametrize(
    ("params", "category", "transient", "status"),
    [
        ({"mode": "slow_first_byte", "delay": 3}, "timeout", True, None),
        ({"mode": "truncate"}, "truncated", True, None),
        ({"mode": "reset", "size": 900_000}, None, True, None),  # truncated or connection: both transient
        ({"mode": "status", "status": 404}, "http_permanent", False, 404),
        ({"mode": "status", "status": 403}, "auth", False, 403),
        ({"mode": "status", "status": 500}, "http_transient", True, 500),
        ({"mode": "status", "status": 503}, "http_transient", True, 503),
        ({"size": 2_000_000}, "too_large", False, None),  # Content-Length above max_bytes
        ({"mode": "gzip", "size": 50_000_000}, "too_large", False, None),  # decoded bytes counted
        ({"type": "text/html"}, "content_type", False, None),
        ({"mode": "redirect", "hops": 6}, "policy", False, None),  # more than max_redirects (5)
    ],
)
def test_fault_modes_are_classified(settings, server, params, category, transient, status):
    outcome = fetch(settings, server.url("f.pdf", **params))
    f = outcome.failure
    assert f is not None and outcome.cached is None
    assert f.transient is transient and f.http_status == status
    if category:
        assert f.category == category, f.message
    assert not list(Path(settings.cache_dir).rglob("*.part"))


def test_slow_drip_hits_the_total_deadline(settings, server):
    outcome = fetch(settings, server.url("drip.pdf", 10_000, mode="drip", drip_bytes=10, drip_interval=0.2))
    assert (outcome.failure.category, outcome.failure.message) == ("timeout", "download.total_timeout_seconds passed")


def test_429_keeps_its_retry_after(settings, server):
    outcome = fetch(settings, server.url("busy.pdf", mode="status", status=429, retry_after=42))
    assert (outcome.failure.category, outcome.failure.retry_after_seconds) == ("http_transient", 42)


def test_a_redirect_chain_is_followed_and_a_docx_served_as_octet_stream_is_fine(settings, server):
    outcome = fetch(settings, server.url("memo.docx", 5000, mode="redirect", hops=3, type="application/octet-stream"))
    assert outcome.failure is None and outcome.cached.sha256 == sample_sha256("memo.docx", 5000)


def test_an_expired_presigned_url_is_dead_without_a_request(settings, server):
    issued = datetime.now(UTC) - timedelta(hours=2)
    outcome = fetch(settings, presigned(server.url("old.pdf"), issued, expires_seconds=3600))
    assert outcome.failure.category == "expired" and outcome.failure.message.startswith("expired:")
    assert outcome.requested is False and server.requests_for("old.pdf") == 0


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://127.0.0.1/a.pdf", "scheme"),
        ("http://user:pw@127.0.0.1/a.pdf", "credentials"),
        ("http://10.0.0.1/a.pdf", "address"),
        ("http://169.254.169.254/latest/meta-data.pdf", "address"),
        ("http://[::ffff:127.0.0.1]/a.pdf", "address"),
    ],
)
def test_policy_refusals_make_no_request(settings, url, rule):
    outcome = fetch(settings, url)
    assert outcome.failure.category == "policy" and f"({rule})" in outcome.failure.message
    assert outcome.requested is False


@pytest.fixture
def watcher():
    """A listener on 127.0.0.2 that counts the connections it receives."""
    sock = socket.socket()
    sock.bind(("127.0.0.2", 0))
    sock.listen(16)
    accepted: list[object] = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    yield sock.getsockname()[1], accepted
    sock.close()


def resolver_with(name: str, address: str):
    def resolve(host, port, type=0, **kw):
        if host == name:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]
        return socket.getaddrinfo(host, port, type=type)

    return resolve


def test_a_redirect_to_a_refused_address_never_connects_to_it(settings, server, watcher):
    port, accepted = watcher
    literal = fetch(settings, server.url("r1.pdf", mode="redirect", to=f"http://127.0.0.2:{port}/x.pdf"))
    assert literal.failure.category == "policy" and "127.0.0.2" in literal.failure.message
    # A host name that resolves to the refused address: checked after DNS, before connecting.
    resolve = resolver_with("internal.test", "127.0.0.2")
    by_name = fetch(
        settings, server.url("r2.pdf", mode="redirect", to=f"http://internal.test:{port}/x.pdf"), resolver=resolve
    )
    assert by_name.failure.category == "policy" and "(address)" in by_name.failure.message
    assert accepted == []


def test_the_watcher_would_have_seen_a_connection(tmp_path, server, watcher):
    port, accepted = watcher
    allowed = load_settings(
        "local",
        overrides={
            "storage": {"root": str(tmp_path)},
            "url_policy": {"allow_private_addresses": False, "allowed_networks": ["127.0.0.1/32", "127.0.0.2/32"]},
            "download": {"read_timeout_seconds": 1},
        },
    )
    fetch(allowed, server.url("r3.pdf", mode="redirect", to=f"http://127.0.0.2:{port}/x.pdf"))
    assert accepted  # the control: without the refusal the address is reached


def test_dns_failure_is_a_transient_connection_failure(settings):
    def no_dns(host, port, **kw):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    outcome = fetch(settings, "http://files.example.com/a.pdf", resolver=no_dns)
    assert (outcome.failure.category, outcome.failure.transient) == ("connection", True)


def test_the_breaker_opens_after_repeated_failures_and_then_skips_requests(settings, server):
    d = downloader(settings, breakers=BreakerRegistry(2, 60))
    url = server.url("down.pdf", mode="status", status=503)
    outcomes = [d.download(sample_task(url, "down.pdf")) for _ in range(4)]
    assert [o.failure.category for o in outcomes] == [
        "http_transient",
        "http_transient",
        "circuit_open",
        "circuit_open",
    ]
    assert [o.breaker_opened for o in outcomes] == [False, True, False, False]
    assert server.requests_for("down.pdf") == 2


def test_full_cache_disk_is_transient(settings, server, monkeypatch):
    import builtins
    import errno

    real_open = builtins.open

    def full_open(path, mode="r", *args, **kwargs):
        if str(path).endswith(".part"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)
    outcome = fetch(settings, server.url("full.pdf"))
    assert (outcome.failure.category, outcome.failure.transient) == ("disk_full", True)


def test_an_unwritable_cache_is_transient_and_does_not_count_against_the_host(settings, server):
    Path(settings.cache_dir).parent.mkdir(parents=True, exist_ok=True)
    Path(settings.cache_dir).write_text("a file where the cache folder should be")
    breakers = BreakerRegistry(1, 60)
    outcome = fetch(settings, server.url("nowhere.pdf"), breakers=breakers)
    assert (outcome.failure.category, outcome.failure.transient) == ("cache_io", True)
    assert breakers.states() == {"127.0.0.1": "closed"}
