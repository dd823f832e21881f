"""Whatever a source sends (status line, headers, body) ends as a classified Failure or a correct
cached file, never as an exception out of Downloader.download (invariant 8), and numbers from its
headers are read as ASCII integers in range (invariant 7)."""

from __future__ import annotations

import gzip
import socket
import zlib

import pytest

from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.download.downloader import Downloader
from pipeline_lib.local.samples import sample_task
from tests.unit.download.raw_server import download


@pytest.fixture
def settings(download_settings):
    return download_settings(read_timeout_seconds=1, total_timeout_seconds=3)


def response(status: bytes = b"HTTP/1.1 200 OK", *headers: bytes, body: bytes = b"") -> bytes:
    return status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n" + body


def fetch(settings, raw_server, answer, **kwargs):
    outcome = download(settings, raw_server.url(answer), **kwargs)
    assert (outcome.cached is None) != (outcome.failure is None)
    return outcome


@pytest.mark.parametrize(
    "value",
    [
        b"\xb2",  # "²" in latin-1: str.isdigit() says yes, int() says no (this used to kill the query)
        b"\xc2\xb2",
        b"1e3",
        b"0x10",
        b"-1",
        b"+5",
        b"5, 5",  # http.client reads it as no length, urllib3 as 5: they would disagree
        b"5, 6",
        b"99999999999999999999999",
        b"",
    ],
)
def test_a_content_length_that_is_not_one_ascii_integer_is_a_permanent_failure(settings, raw_server, value):
    outcome = fetch(settings, raw_server, response(b"HTTP/1.1 200 OK", b"Content-Length: " + value, body=b"hello"))
    assert (outcome.failure.category, outcome.failure.transient) == ("http_permanent", False)
    assert "Content-Length" in outcome.failure.message


def test_two_content_length_headers_are_refused(settings, raw_server):
    outcome = fetch(
        settings, raw_server, response(b"HTTP/1.1 200 OK", b"Content-Length: 5", b"Content-Length: 5", body=b"hello")
    )
    assert outcome.failure.category == "http_permanent"


def test_a_huge_content_length_is_too_large_before_any_byte_is_read(settings, raw_server):
    outcome = fetch(settings, raw_server, response(b"HTTP/1.1 200 OK", b"Content-Length: 9223372036854775807"))
    assert outcome.failure.category == "too_large"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"\xb2", None),
        (b"9" * 40, None),
        (b"-5", None),
        (b"1.5", None),
        (b"soon", None),
        (b"Fri, 31 Dec 9999 23:59:59 GMT", None),  # past bounds.LATEST
        (b"120", 120.0),
        (b" 7 ", 7.0),
    ],
)
def test_retry_after_garbage_is_ignored_never_raised(settings, raw_server, value, expected):
    outcome = fetch(
        settings, raw_server, response(b"HTTP/1.1 503 Busy", b"Retry-After: " + value, b"Content-Length: 0")
    )
    assert (outcome.failure.category, outcome.failure.retry_after_seconds) == ("http_transient", expected)


@pytest.mark.parametrize(
    ("location", "category"),
    [
        (b"http://[::1", "policy"),  # urljoin raises ValueError: Invalid IPv6 URL
        (b"http://[::1]:99999/x.pdf", "policy"),
        (b"http://" + b"a" * 70 + b".test/x.pdf", "policy"),  # a label IDNA cannot encode (> 63)
        (b"http://a .test/x.pdf", "policy"),  # urllib3 refuses the host
        (b"http://\xff\xfe/x.pdf", "connection"),  # IDNA: xn--vdab, which does not resolve
        (b"ftp://127.0.0.1/x.pdf", "policy"),
        (b"http://user:pw@127.0.0.1/x.pdf", "policy"),
        (b"http://10.0.0.1/x.pdf", "policy"),
        (b"http://169.254.169.254/latest/meta-data.pdf", "policy"),
        (b"javascript:alert(1)", "policy"),
        (b"", "http_permanent"),  # a redirect without a Location: an unexpected 3xx
    ],
)
def test_a_redirect_location_that_cannot_be_used_is_classified(settings, raw_server, location, category):
    outcome = fetch(
        settings, raw_server, response(b"HTTP/1.1 302 Found", b"Location: " + location, b"Content-Length: 0")
    )
    assert outcome.failure.category == category, outcome.failure.message


def test_a_relative_redirect_is_followed(settings, raw_server):
    target = raw_server.url(response(b"HTTP/1.1 200 OK", b"Content-Length: 5", body=b"hello"))
    path = target.split(str(raw_server.port), 1)[1]
    outcome = fetch(
        settings, raw_server, response(b"HTTP/1.1 301 Moved", b"Location: " + path.encode(), b"Content-Length: 0")
    )
    assert outcome.cached is not None and outcome.cached.bytes == 5


@pytest.mark.parametrize(
    "status",
    [
        b"HTTP/1.1 abc OK",
        b"HTTP/1.1 -1 Minus",
        b"HTTP/1.1 2000 Big",
        b"HTTP/2 200 OK",
        b"ICY 200 OK",
        b"<html>no status line</html>",
        b"HTTP/1.1 200 " + b"R" * 70_000,
    ],
)
def test_a_status_line_http_client_refuses_is_a_connection_failure(settings, raw_server, status):
    outcome = fetch(settings, raw_server, response(status, b"Content-Length: 5", body=b"hello"))
    assert (outcome.failure.category, outcome.failure.transient) == ("connection", True)


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (b"HTTP/1.1 999 Odd", "http_permanent"),
        (b"HTTP/1.1 103 Early Hints", "http_permanent"),
        (b"HTTP/1.1 206 Partial", "http_permanent"),
        (b"HTTP/1.0 200 OK", None),
        (b"HTTP/0.9 200 OK", None),
    ],
)
def test_odd_but_readable_status_lines(settings, raw_server, status, category):
    outcome = fetch(settings, raw_server, response(status, b"Content-Length: 5", body=b"hello"))
    assert (outcome.failure.category if outcome.failure else None) == category


@pytest.mark.parametrize(
    "header",
    [
        b"X-Long: " + b"a" * 70_000,  # http.client's LineTooLong
        b"\r\n".join(b"X-Many-%d: 1" % i for i in range(150)),  # more than 100 headers
    ],
)
def test_header_blocks_http_client_refuses_are_connection_failures(settings, raw_server, header):
    outcome = fetch(settings, raw_server, response(b"HTTP/1.1 200 OK", header, b"Content-Length: 5", body=b"hello"))
    assert outcome.failure.category == "connection"


@pytest.mark.parametrize("header", [b"X-Latin: \xe9\xe8\xff", b"X-Nul: a\x00b", b"No colon", b"\xff\xfe: v", b":"])
def test_odd_header_bytes_are_tolerated(settings, raw_server, header):
    outcome = fetch(settings, raw_server, response(b"HTTP/1.1 200 OK", header, b"Content-Length: 5", body=b"hello"))
    assert outcome.cached is not None and outcome.cached.bytes == 5


@pytest.mark.parametrize(
    "cut",
    [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 200 OK\r\nContent-Type:", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"],
)
def test_a_connection_that_ends_inside_the_headers_is_truncated_not_an_empty_file(settings, raw_server, cut):
    # http.client takes the end of the stream for the end of the headers; the body would then be
    # "everything until close": nothing. Before the fix this cached an empty file.
    outcome = fetch(settings, raw_server, cut)
    assert (outcome.failure.category, outcome.failure.transient) == ("truncated", True)


def test_a_body_cut_short_of_its_content_length_is_truncated(settings, raw_server):
    outcome = fetch(settings, raw_server, response(b"HTTP/1.1 200 OK", b"Content-Length: 10", body=b"hello"))
    assert outcome.failure.category == "truncated"


@pytest.mark.parametrize(
    "size",
    [b"zz", b"-1", b"ffffffffffffffffffff", b"\xb2", b"f" * 70_000],
)
def test_bad_chunk_sizes_are_transient_failures(settings, raw_server, size):
    body = b"5\r\nhello\r\n" + size + b"\r\nxxxxx\r\n0\r\n\r\n"
    outcome = fetch(settings, raw_server, response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", body=body))
    assert outcome.failure is not None and outcome.failure.transient, outcome


def test_a_chunked_body_is_stored_dechunked(settings, raw_server):
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: chunked", b"Content-Length: 3", body=body),
    )
    assert outcome.cached.bytes == 11  # chunked overrides Content-Length


@pytest.mark.parametrize("value", [b"gzip, chunked", b"chunked ", b"chunked, chunked", b"identity", b""])
def test_a_transfer_encoding_other_than_chunked_is_refused(settings, raw_server, value):
    # "chunked " (trailing space): http.client does not de-chunk it, urllib3 thinks it does; the
    # chunk framing would be stored as the file.
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Transfer-Encoding: " + value, body=b"5\r\nhello\r\n0\r\n\r\n"),
    )
    assert outcome.failure.category == "http_permanent"


@pytest.mark.parametrize("coding", [b"br", b"zstd", b"foo", b"gzip ", b"gzip,", b",", b"gzip," * 6, b"\xff"])
def test_a_content_encoding_urllib3_would_not_decode_is_refused(settings, raw_server, coding):
    # Without this the coded bytes would be stored as the file (urllib3 passes unknown codings through).
    wire = gzip.compress(b"hello")
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Content-Encoding: " + coding, b"Content-Length: %d" % len(wire), body=wire),
    )
    assert (outcome.failure.category, outcome.failure.transient) == ("http_permanent", False)
    assert "cannot be decoded" in outcome.failure.message


@pytest.mark.parametrize(
    ("coding", "wire"),
    [
        (b"gzip", gzip.compress(b"hello" * 1000)),
        (b"x-gzip", gzip.compress(b"hello" * 1000)),
        (b"GZIP", gzip.compress(b"hello" * 1000)),
        (b"deflate", zlib.compress(b"hello" * 1000)),
        (b"gzip, gzip", gzip.compress(gzip.compress(b"hello" * 1000))),
        (b"identity", b"hello" * 1000),
    ],
)
def test_supported_content_encodings_are_decoded(settings, raw_server, coding, wire):
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Content-Encoding: " + coding, b"Content-Length: %d" % len(wire), body=wire),
    )
    assert outcome.cached is not None and outcome.cached.bytes == 5000


@pytest.mark.parametrize(
    ("coding", "wire"),
    [
        (b"gzip", gzip.compress(b"hello" * 1000)[:-20]),  # complete framing, truncated stream
        (b"gzip", gzip.compress(b"hello")[:10]),
        (b"deflate", zlib.compress(b"hello" * 1000)[:-10]),
    ],
)
def test_a_coded_stream_cut_short_is_truncated_not_stored(settings, raw_server, coding, wire):
    # urllib3 decodes whatever arrived without an error: this used to store a partial file.
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Content-Encoding: " + coding, b"Content-Length: %d" % len(wire), body=wire),
    )
    assert outcome.failure.category == "truncated", outcome


@pytest.mark.parametrize("wire", [b"\x00garbage", b"\x1f\x8b\x08garbage"])
def test_a_garbage_coded_body_is_a_classified_failure(settings, raw_server, wire):
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Content-Encoding: gzip", b"Content-Length: %d" % len(wire), body=wire),
    )
    assert outcome.failure.category == "truncated"


def test_a_gzip_bomb_stops_at_max_bytes(download_settings, raw_server):
    wire = gzip.compress(b"\0" * 5_000_000, compresslevel=9)
    outcome = fetch(
        download_settings(max_bytes=1_000_000),
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Content-Encoding: gzip", b"Content-Length: %d" % len(wire), body=wire),
    )
    assert outcome.failure.category == "too_large"


@pytest.mark.parametrize(
    ("content_type", "stored"),
    [
        (b"application/pdf; charset=\xff", "application/pdf"),
        (b"application/octet-stream" + b";x=" + b"y" * 400, "application/octet-stream"),
        (b"application/pdf", "application/pdf"),
        (b"", None),
    ],
)
def test_the_stored_content_type_is_printable_and_bounded(settings, raw_server, content_type, stored):
    outcome = fetch(
        settings,
        raw_server,
        response(b"HTTP/1.1 200 OK", b"Content-Type: " + content_type, b"Content-Length: 5", body=b"hello"),
    )
    assert outcome.cached.content_type == stored


def test_a_connection_reset_before_any_byte_is_a_connection_failure(settings, raw_server):
    def reset(conn: socket.socket) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    outcome = fetch(settings, raw_server, reset)
    assert outcome.failure.category == "connection"


def test_an_unexpected_exception_never_leaves_the_half_open_probe_out(settings, raw_server, monkeypatch):
    """A bug (an exception no handler expects) must not wedge the host's breaker half-open, where
    it would refuse every later task for that host as circuit_open, forever."""
    breakers = BreakerRegistry(1, 0)  # opens at the first failure; half-open again at once
    downloader = Downloader.from_settings(settings, breakers=breakers)
    url = raw_server.url(response(b"HTTP/1.1 503 Busy", b"Content-Length: 0"))
    assert downloader.download(sample_task(url, "file.pdf")).breaker_opened
    breaker = breakers.get("127.0.0.1")

    def boom(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(downloader, "_fetch", boom)
    with pytest.raises(RuntimeError):
        downloader.download(sample_task(url, "file.pdf"))  # the half-open probe
    assert breaker.allow()  # the probe is not still out
