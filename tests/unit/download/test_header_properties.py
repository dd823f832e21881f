"""Property tests (Hypothesis) of the helpers that read what a source sends, and of a whole download
over arbitrary response bytes: total functions (invariant 8), bounded numbers (invariant 7), and
the downloader's reading of the framing headers agreeing with http.client's and urllib3's."""

from __future__ import annotations

import gzip
import io
import socket
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from urllib3.response import HTTPResponse

from pipeline_lib.bounds import LATEST
from pipeline_lib.config import load_settings
from pipeline_lib.download.downloader import _redirect_target, _stored_content_type
from pipeline_lib.download.http_fetch import (
    MalformedResponse,
    check_transfer_encoding,
    content_encoded,
    content_length,
)
from pipeline_lib.failures import parse_retry_after
from pipeline_lib.url_policy import UrlRefused
from tests.unit.download.raw_server import RawServer, download

QUICK = settings(max_examples=300, deadline=None, database=None)

# Header values as http.client hands them over: any bytes read as latin-1.
latin1 = st.binary(max_size=40).map(lambda b: b.decode("latin-1"))
header_text = st.one_of(
    st.text(max_size=40),
    latin1,
    st.sampled_from(
        [
            "5",
            " 5 ",
            "²",
            "5, 5",
            "-1",
            "0x10",
            "1e3",
            "+5",
            "9" * 25,
            "",
            "chunked",
            "Chunked",
            "chunked ",
            "gzip",
            "GZIP",
            "gzip, deflate",
            "gzip,",
            "br",
            "identity",
            "x-gzip",
        ]
    ),
)


@QUICK
@given(header_text)
@example("0\x1f")  # str.strip() took \x1c-\x1f as whitespace; http.client does not
@example("\x1c7")
def test_content_length_is_an_ascii_integer_in_range_or_malformed(value):
    try:
        length = content_length({"content-length": value})
    except MalformedResponse:
        return
    assert length is not None and 0 <= length <= 2**63 - 1
    assert value.strip().isascii() and value.strip().isdigit()
    assert int(value) == length  # http.client and urllib3 read the same length


@QUICK
@given(header_text)
def test_content_length_is_ignored_when_chunked(value):
    assert content_length({"content-length": value, "transfer-encoding": "chunked"}) is None


@QUICK
@given(header_text)
def test_content_encoded_agrees_with_urllib3s_decoder(value):
    response = HTTPResponse(body=io.BytesIO(b""), headers={"content-encoding": value}, preload_content=False)
    response._init_decoder()
    try:
        encoded = content_encoded({"content-encoding": value})
    except MalformedResponse:
        # Refused: urllib3 would pass it through undecoded, or decode a list with a token it does
        # not know (or an empty one) as deflate.
        return
    assert encoded == (response._decoder is not None)


@QUICK
@given(header_text)
def test_a_transfer_encoding_passes_only_when_both_parsers_see_chunked(value):
    try:
        check_transfer_encoding({"transfer-encoding": value})
    except MalformedResponse:
        return
    assert value.lower() == "chunked"  # http.client de-chunks exactly this
    assert "chunked" in [t.strip() for t in value.lower().split(",")]  # and urllib3 agrees


NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)


@QUICK
@given(st.one_of(header_text, st.binary(max_size=40), st.none(), st.integers(), st.floats()))
def test_parse_retry_after_never_raises_and_is_bounded(value):
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or 0 <= seconds <= (LATEST - NOW).total_seconds()


non_ascii_digits = st.text(
    alphabet=st.characters(categories=["Nd", "No"]).filter(lambda c: not "0" <= c <= "9"), min_size=1, max_size=3
)


@QUICK
@given(st.integers(0, 10**6), non_ascii_digits, st.integers(0, 7))
def test_parse_retry_after_reads_ascii_delta_seconds_only(number, digits, at):
    assert parse_retry_after(str(number), NOW) == number
    assert parse_retry_after(f" {number}\t", NOW) == number
    text = str(number)
    assert parse_retry_after(text[:at] + digits + text[at:], NOW) is None  # "²", "٣": digits, not ASCII


@QUICK
@given(st.one_of(header_text, st.text(max_size=80)))
def test_a_redirect_target_is_a_url_or_a_policy_refusal(location):
    try:
        target = _redirect_target("http://127.0.0.1:8000/files/a.pdf?x=1", location)
    except UrlRefused as exc:
        assert exc.rule == "syntax"
        return
    assert isinstance(target, str)


@QUICK
@given(st.one_of(st.none(), header_text, st.text(max_size=400)))
def test_the_stored_content_type_is_printable_ascii_and_bounded(value):
    stored = _stored_content_type(value)
    assert stored is None or (len(stored) <= 255 and stored.isascii() and stored.isprintable())


# --- whole responses -----------------------------------------------------------------------------

STATUS_LINES = [
    b"HTTP/1.1 200 OK",
    b"HTTP/1.0 200 OK",
    b"HTTP/1.1 302 Found",
    b"HTTP/1.1 503 Busy",
    b"HTTP/1.1 404 Gone",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK",
    b"HTTP/1.1 999 X",
    b"",
]
HEADER_NAMES = [
    b"Content-Length",
    b"Transfer-Encoding",
    b"Content-Encoding",
    b"Content-Type",
    b"Location",
    b"Retry-After",
    b"Connection",
]
HEADER_VALUES = [
    b"5",
    b"\xb2",
    b"-1",
    b"5, 6",
    b"9" * 30,
    b"chunked",
    b"gzip",
    b"deflate",
    b"br",
    b"application/pdf",
    b"text/html",
    b"/files/x.pdf",
    b"http://[::1",
    b"http://10.0.0.1/x.pdf",
    b"close",
    b"120",
]

responses = st.builds(
    lambda status, headers, body, gz: (
        status
        + b"\r\n"
        + b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        + b"\r\n"
        + (gzip.compress(body) if gz else body)
    ),
    st.one_of(st.sampled_from(STATUS_LINES), st.binary(max_size=30)),
    st.lists(
        st.tuples(
            st.one_of(st.sampled_from(HEADER_NAMES), st.binary(max_size=12)),
            st.one_of(st.sampled_from(HEADER_VALUES), st.binary(max_size=30)),
        ),
        max_size=6,
    ),
    st.binary(max_size=3000),
    st.booleans(),
)


@pytest.fixture(scope="module")
def server():
    raw = RawServer()
    yield raw
    raw.close()


@pytest.fixture(scope="module")
def fast_settings(tmp_path_factory):
    return load_settings(
        "local",
        overrides={
            "storage": {"root": str(tmp_path_factory.mktemp("props"))},
            "url_policy": {"allow_private_addresses": False, "allowed_networks": ["127.0.0.1/32"]},
            "download": {"read_timeout_seconds": 0.5, "total_timeout_seconds": 1, "max_bytes": 100_000},
        },
    )


def loopback_only(host, port, **kwargs):
    if host != "127.0.0.1":
        raise socket.gaierror(socket.EAI_NONAME, "only loopback in this test")
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=responses)
def test_any_response_bytes_end_as_an_outcome(server, fast_settings, raw):
    outcome = download(fast_settings, server.url(raw), resolver=loopback_only)
    assert (outcome.cached is None) != (outcome.failure is None)
