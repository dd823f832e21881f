"""A local HTTP server of sample attachments with fault modes, for the demo, tests and benchmarks
(loopback only).

    with SampleFileServer() as server:
        server.url("photo_1.jpg", size=65536)                     # 200, deterministic bytes
        server.url("a.pdf", mode="status", status=429, retry_after=7)
        server.url("a.pdf", mode="drip", drip_bytes=10, drip_interval=0.5)

Query parameters (all optional):

| parameter         | effect                                                                 |
| ----------------- | ---------------------------------------------------------------------- |
| size=N            | body size in bytes (default 64 KiB)                                    |
| latency_ms=N      | wait before the response, every request                               |
| type=T            | Content-Type to send (default: guessed from the name)                 |
| mode=ok           | the file                                                               |
| mode=slow_first_byte&delay=S | wait S seconds before the status line                       |
| mode=drip&drip_bytes=B&drip_interval=S | headers, then B bytes every S seconds              |
| mode=truncate     | Content-Length N, then half the body and close                         |
| mode=reset        | half the body, then a TCP reset                                        |
| mode=status&status=C[&retry_after=V] | an error status C (with Retry-After V)              |
| mode=redirect&hops=N | N redirects (302) on this server, then the file                     |
| mode=redirect&to=URL | one redirect to URL                                                 |
| mode=gzip         | Content-Encoding gzip: N zero bytes compressed (a tiny response)       |
| mode=flaky&fail=K[&status=C] | status C (default 503) for the first K requests of this URL, then the file |
| mode=header_drip&drip_bytes=B&drip_interval=S | status line, then B header bytes, one every S seconds |
| mode=hostile&seed=N | a randomised hostile response, the same for the same N (`hostile_plan`, below) |

`mode=hostile` picks one fault per request from many: odd or invalid status lines (999, not a
number, HTTP/0.9-style garbage, 70 KB long), 1xx before or instead of the answer, 2xx/3xx/4xx/5xx
statuses with garbage Retry-After, redirects whose Location is garbage, relative, refused or
another hostile seed (a chain), Content-Length absent, huge, negative, superscript, duplicated or
not matching the body (on a kept-alive connection too), chunked bodies with bad chunk sizes,
Content-Encoding gzip/deflate/br/zstd/unknown over garbage, truncated or bomb bodies, long or
many or malformed or non-ASCII header lines, contradicting Content-Types, early closes and
resets, a slow first byte and header or body drips (at most about 1.5 s), and clean responses
(plain, chunked, close-delimited, gzip/deflate) of up to 300 KB. `HostilePlan.intended` is the
body a correct client stores for a clean one.

Content is deterministic (derived from the name), so a checksum can be predicted with
`sample_sha256`; it is generated chunk by chunk, so a 2 GiB file costs no memory.
`requests_for(name)` counts the requests a name received (e.g. none for an expired URL).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import random
import socket
import struct
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlencode, urlsplit

DEFAULT_SIZE = 64 * 1024
_BLOCK = 64 * 1024


def _block(name: str) -> bytes:
    seed = hashlib.sha256(name.encode()).digest()  # 32 bytes; _BLOCK is a multiple of it
    return seed * (_BLOCK // len(seed))


def _chunks(name: str, size: int):
    block = _block(name)
    for start in range(0, size, _BLOCK):
        yield block[: min(_BLOCK, size - start)]


def sample_bytes(name: str, size: int) -> bytes:
    """The content served for `name` (small sizes only: it is built in memory)."""
    return b"".join(_chunks(name, size))


def sample_sha256(name: str, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(name, size):
        digest.update(chunk)
    return digest.hexdigest()


# --- mode=hostile: randomised, deterministic per seed --------------------------------------------

_HOSTILE_SIZES = (0, 1, 100, 4096, 65536, 200_000, 300_000)
_STATUS_LINES = (
    b"HTTP/1.1 999 Odd",
    b"HTTP/1.1 abc OK",
    b"HTTP/1.1 -1 Minus",
    b"HTTP/1.1 2000 Big",
    b"HTTP/1.1 099 Low",
    b"HTTP/1.1 \xc2\xb2\xc2\xb2\xc2\xb2 Superscript",
    b"HTTP/1.1 200",
    b"HTTP/1.1  200  OK",
    b"HTTP/1.0 200 OK",
    b"HTTP/0.9 200 OK",
    b"HTTP/2 200 OK",
    b"HTTP/1.1200 OK",
    b"ICY 200 OK",
    b"<html><body>HTTP/0.9 style: no status line at all</body></html>",
    b"\x00\xff\xfe garbage",
    b"",
    b"HTTP/1.1 200 " + b"R" * 70_000,
    b"HTTP/1.1 200 \xff\xfe non-ASCII reason",
)
_LOCATIONS = (
    "http://[::1",
    "http://[::1]:99999/x.pdf",
    "",
    " ",
    "\x00",
    "http://",
    "//",
    "///x.pdf",
    "http://127.0.0.1:99999/x.pdf",
    "ftp://127.0.0.1/x.pdf",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "http://user:pw@127.0.0.1/x.pdf",
    "http://10.0.0.1/x.pdf",
    "http://169.254.169.254/latest/meta-data.pdf",
    "http://[::ffff:127.0.0.1]/x.pdf",
    "http://" + "a" * 70 + ".test/x.pdf",
    "http://xn--/x.pdf",
    "http://ex\xe4mple.test/x.pdf",
    "http://a .test/x.pdf",
    "http://\u00ff\u00fe/x.pdf",
    "/" + "p" * 9000,
    "x.pdf?mode=ok",
    "../../x.pdf",
)
_CONTENT_LENGTHS = (
    b"\xc2\xb2",  # "²" as UTF-8 bytes (latin-1 text: "Â²")
    b"\xb2",  # "²" in latin-1
    b"1e3",
    b"0x10",
    b"-1",
    b"+5",
    b"99999999999999999999999999999999",
    b"9223372036854775808",
    b"9223372036854775807",
    b"5, 5",
    b"5, 6",
    b"",
    b" ",
    b"\xd9\xa3",  # an Arabic-Indic digit in UTF-8
)
_CHUNK_SIZES = (
    b"zz",
    b"-1",
    b"-0",
    b"ffffffffffffffffffff",
    b"1;" + b"x" * 100,
    b"   5",
    b"5" + b" " * 10,
    b"0x5",
    b"\xc2\xb2",
    b"f" * 70_000,
)
_TRANSFER_ENCODINGS = (b"gzip, chunked", b"chunked ", b"Chunked", b"chunked, chunked", b"identity", b"foo", b"")
_CONTENT_ENCODINGS = (
    b"gzip",
    b"deflate",
    b"br",
    b"zstd",
    b"x-gzip",
    b"gzip, gzip",
    b"gzip," * 6,
    b"foo",
    b"identity",
    b"gzip ",
    b"GZIP",
    b"gzip,",
    b",",
    b"\xff",
)
_RETRY_AFTERS = (
    b"\xc2\xb2",
    b"\xb2",
    b"9" * 40,
    b"-5",
    b"1.5",
    b"120",
    b"0",
    b"Fri, 31 Dec 9999 23:59:59 GMT",
    b"Mon, 01 Jan 1900 00:00:00 GMT",
    b"Thu, 01 Jan 2015 00:00:00 GMT",
    b"Sun, 06 Nov 2044 08:49:37 GMT",
    b"Sun, 06 Nov 1994 08:49:37 +9999",
    b"Mon, 32 Foo 2026 25:61:61 GMT",
    b"soon",
    b"\xff\xfe",
    b"",
)
_CONTENT_TYPES = (
    b"text/html",
    b"application/pdf; charset=\xff",
    b"",
    b"/",
    b"application/" + b"x" * 10_000,
    b"image/png",
    b"application/octet-stream",
    b"APPLICATION/PDF",
    b"application/pdf\x00",
    b"\xe9\xe9/\xe9",
)
_STATUSES = (201, 202, 204, 206, 300, 304, 400, 401, 403, 404, 408, 410, 418, 425, 429, 451, 500, 502, 503, 504, 599)


@dataclass
class HostilePlan:
    """What the server does for one seed: write each piece then wait its delay, then end."""

    fault: str
    pieces: list[tuple[bytes, float]] = field(default_factory=list)
    end: str = "close"  # close | reset | keep (keep-alive: the next request on it is served)
    intended: bytes | None = None  # the body a correct client stores (clean plans only)

    def write(self, data: bytes, delay: float = 0.0) -> None:
        self.pieces.append((data, delay))


def _head(status: bytes, headers: list[bytes]) -> bytes:
    return status + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"


def _chunked(rng: random.Random, body: bytes) -> bytes:
    out, start = [], 0
    while start < len(body):
        step = rng.choice((1, 7, 1000, 65536))
        part = body[start : start + step]
        out.append(b"%x\r\n%s\r\n" % (len(part), part))
        start += step
    return b"".join(out) + b"0\r\n\r\n"


def _deflate(body: bytes, raw: bool) -> bytes:
    c = zlib.compressobj(6, zlib.DEFLATED, -15 if raw else 15)
    return c.compress(body) + c.flush()


def hostile_plan(seed: int, name: str = "hostile.pdf") -> HostilePlan:
    """The response of `mode=hostile&seed=N`: the same for the same seed, whatever the time."""
    rng = random.Random(seed)
    fault = rng.choice(_HOSTILE_FAULTS)
    plan = HostilePlan(fault.__name__.removeprefix("_h_"))
    fault(rng, plan, name)
    return plan


def _body(rng: random.Random) -> bytes:
    return rng.randbytes(rng.choice(_HOSTILE_SIZES))


def _type(rng: random.Random) -> bytes:
    return b"Content-Type: " + rng.choice((b"application/pdf", b"application/octet-stream"))


def _h_ok(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)
    framing = rng.choice(("length", "chunked", "close"))
    headers = [_type(rng)]
    if framing == "length":
        headers.append(b"Content-Length: %d" % len(body))
        plan.end = rng.choice(("close", "keep"))
        wire = body
    elif framing == "chunked":
        headers.append(b"Transfer-Encoding: chunked")
        plan.end = rng.choice(("close", "keep"))
        wire = _chunked(rng, body)
    else:
        headers.append(b"Connection: close")
        wire = body
    plan.write(_head(b"HTTP/1.1 200 OK", headers) + wire)
    plan.intended = body


def _h_ok_encoded(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)
    coding = rng.choice((b"gzip", b"x-gzip", b"deflate", b"deflate-raw"))
    if coding == b"deflate-raw":
        coding, wire = b"deflate", _deflate(body, raw=True)
    elif coding == b"deflate":
        wire = _deflate(body, raw=False)
    else:
        wire = gzip.compress(body)
    plan.write(
        _head(b"HTTP/1.1 200 OK", [_type(rng), b"Content-Encoding: " + coding, b"Content-Length: %d" % len(wire)])
        + wire
    )
    plan.intended = body


def _h_status_line(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)[:1000]
    line = rng.choice(_STATUS_LINES)
    plan.write(_head(line, [_type(rng), b"Content-Length: %d" % len(body)]) + body)


def _h_informational(rng: random.Random, plan: HostilePlan, name: str) -> None:
    first = rng.choice(
        (
            b"HTTP/1.1 100 Continue",
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload",
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c",
            b"HTTP/1.1 102 Processing",
        )
    )
    body = _body(rng)
    plan.write(first + b"\r\n\r\n", rng.choice((0.0, 0.05)))
    plan.write(_head(b"HTTP/1.1 200 OK", [_type(rng), b"Content-Length: %d" % len(body)]) + body)
    if first.startswith(b"HTTP/1.1 100 "):
        plan.intended = body  # http.client skips a 100 Continue


def _h_status(rng: random.Random, plan: HostilePlan, name: str) -> None:
    status = rng.choice(_STATUSES)
    body = rng.choice((b"", b"error\n", _body(rng)))
    headers = [b"Content-Type: text/plain", b"Content-Length: %d" % len(body)]
    if rng.random() < 0.5:
        headers.append(b"Retry-After: " + rng.choice(_RETRY_AFTERS))
    plan.write(_head(b"HTTP/1.1 %d Status" % status, headers) + body)
    plan.end = rng.choice(("close", "keep"))


def _h_redirect(rng: random.Random, plan: HostilePlan, name: str) -> None:
    status = rng.choice((301, 302, 303, 307, 308, 300, 304))
    kind = rng.random()
    if kind < 0.4:
        location = rng.choice(_LOCATIONS).encode("latin-1")
    elif kind < 0.8:  # another hostile response on this server: a chain of them
        location = b"/files/%s?mode=hostile&seed=%d" % (quote(name).encode(), rng.randrange(10**6))
    else:
        location = b"?mode=hostile&seed=%d" % rng.randrange(10**6)
    headers = [b"Location: " + location, b"Content-Length: 0"]
    if rng.random() < 0.1:
        headers.append(b"Location: /files/other.pdf")
    if rng.random() < 0.1:
        headers = [b"Content-Length: 0"]  # a redirect without a Location
    plan.write(_head(b"HTTP/1.1 %d Moved" % status, headers))
    plan.end = rng.choice(("close", "keep"))


def _h_content_length(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)
    case = rng.choice(("value", "twice", "short_close", "short_keep", "long_keep", "absent_keep"))
    headers = [_type(rng)]
    if case == "value":
        headers.append(b"Content-Length: " + rng.choice(_CONTENT_LENGTHS))
    elif case == "twice":
        headers += [b"Content-Length: %d" % len(body), b"Content-Length: %d" % (len(body) + rng.choice((0, 1)))]
    elif case in ("short_close", "short_keep"):  # announces more than it sends
        headers.append(b"Content-Length: %d" % (len(body) + rng.choice((1, 1000, 10**6))))
    elif case == "long_keep":  # sends more than it announces, on a kept-alive connection
        headers.append(b"Content-Length: %d" % (len(body) // 2))
    plan.write(_head(b"HTTP/1.1 200 OK", headers) + body)
    plan.end = "keep" if case.endswith("keep") else rng.choice(("close", "reset"))


def _h_chunked(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)[:70_000]
    case = rng.choice(("size", "size", "no_last", "overlong", "te", "te_and_length"))
    te = b"chunked"
    if case == "size":
        wire = b"5\r\nhello\r\n" + rng.choice(_CHUNK_SIZES) + b"\r\n" + body + b"\r\n0\r\n\r\n"
    elif case == "no_last":
        wire = _chunked(rng, body)[:-5]
    elif case == "overlong":
        wire = b"3\r\n" + body + b"\r\n0\r\n\r\n"
    elif case == "te":
        te = rng.choice(_TRANSFER_ENCODINGS)
        wire = _chunked(rng, body)
    else:
        wire = _chunked(rng, body)
    headers = [_type(rng), b"Transfer-Encoding: " + te]
    if case == "te_and_length":
        headers.append(b"Content-Length: %d" % rng.choice((0, 5, len(wire))))
    plan.write(_head(b"HTTP/1.1 200 OK", headers) + wire)
    plan.end = rng.choice(("close", "keep"))


def _h_content_encoding(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)
    kind = rng.choice(("garbage", "truncated", "bomb", "plain"))
    if kind == "garbage":
        wire = rng.randbytes(rng.choice((1, 10, 5000)))
    elif kind == "truncated":
        wire = gzip.compress(body)[: rng.choice((1, 10, 100))]
    elif kind == "bomb":  # a few KiB that expand to 20 MB
        wire = gzip.compress(b"\0" * 20_000_000, compresslevel=9)
    else:
        wire = body
    coding = rng.choice(_CONTENT_ENCODINGS)
    plan.write(
        _head(b"HTTP/1.1 200 OK", [_type(rng), b"Content-Encoding: " + coding, b"Content-Length: %d" % len(wire)])
        + wire
    )


def _h_headers(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)[:5000]
    bad = rng.choice(
        (
            b"X-Long: " + b"a" * 70_000,
            b"\r\n".join(b"X-Many-%d: 1" % i for i in range(150)),
            b"No colon here",
            b" folded: continuation",
            b"X-Folded: a\r\n b\r\n\tc",
            b"Bad Name: 1",
            b"X-Nul: a\x00b",
            b"X-Latin: \xe9\xe8\xff",
            b"X-Bad-UTF8: \xc3\x28\xa0\xa1",
            b"\xff\xfe: value",
            b"X-Bare-LF: 1\nX-Other: 2",
            b"X-Bare-CR: 1\rX-Other: 2",
            b"Content-Type: application/pdf\r\nContent-Type: text/html",
            b":",
        )
    )
    plan.write(_head(b"HTTP/1.1 200 OK", [_type(rng), bad, b"Content-Length: %d" % len(body)]) + body)


def _h_retry_after(rng: random.Random, plan: HostilePlan, name: str) -> None:
    status = rng.choice((429, 503, 500))
    plan.write(
        _head(b"HTTP/1.1 %d Busy" % status, [b"Retry-After: " + rng.choice(_RETRY_AFTERS), b"Content-Length: 0"])
    )
    plan.end = rng.choice(("close", "keep"))


def _h_content_type(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng)[:5000]
    plan.write(
        _head(b"HTTP/1.1 200 OK", [b"Content-Type: " + rng.choice(_CONTENT_TYPES), b"Content-Length: %d" % len(body)])
        + body
    )


def _h_early_close(rng: random.Random, plan: HostilePlan, name: str) -> None:
    body = _body(rng) or b"x" * 1000
    whole = _head(b"HTTP/1.1 200 OK", [_type(rng), b"Content-Length: %d" % len(body)]) + body
    cut = rng.choice((0, 5, 17, 30, len(whole) - len(body) // 2, len(whole) - 1))
    plan.write(whole[:cut])
    plan.end = rng.choice(("close", "reset"))


def _h_slow(rng: random.Random, plan: HostilePlan, name: str) -> None:
    """Bounded: at most about 1.5 s in all, so a test over many seeds stays quick."""
    body = _body(rng)[:20_000]
    head = _head(b"HTTP/1.1 200 OK", [_type(rng), b"Content-Length: %d" % len(body)])
    kind = rng.choice(("first_byte", "header_drip", "body_drip"))
    if kind == "first_byte":
        plan.write(b"", rng.choice((0.1, 0.5, 1.5)))
        plan.write(head + body)
    elif kind == "header_drip":
        interval = rng.choice((0.01, 0.05, 0.1))
        for i in range(min(len(head), int(1.5 / interval))):
            plan.write(head[i : i + 1], interval)
        plan.write(head[int(1.5 / interval) :] + body)
    else:
        interval = rng.choice((0.01, 0.05, 0.1))
        plan.write(head)
        steps = int(1.5 / interval)
        size = max(1, -(-len(body) // steps))
        for start in range(0, len(body), size):
            plan.write(body[start : start + size], interval)
    plan.intended = body


_HOSTILE_FAULTS = (
    _h_ok,
    _h_ok,
    _h_ok_encoded,
    _h_status_line,
    _h_informational,
    _h_status,
    _h_redirect,
    _h_redirect,
    _h_content_length,
    _h_content_length,
    _h_chunked,
    _h_chunked,
    _h_content_encoding,
    _h_headers,
    _h_headers,
    _h_retry_after,
    _h_content_type,
    _h_early_close,
    _h_slow,
)


class _Handler(BaseHTTPRequestHandler):
    server_version = "xact-sample-server/1"
    protocol_version = "HTTP/1.1"  # keep-alive, as real object stores do
    # TCP_NODELAY, as production web servers set it: with Nagle, a body's last partial segment
    # waits for the client's delayed ACK (up to 40 ms), which the latency benchmark would count.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        if not parts.path.startswith("/files/"):
            self._error(404)
            return
        name = parts.path.removeprefix("/files/")
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        self.server.record(name)
        if "latency_ms" in q:
            time.sleep(int(q["latency_ms"]) / 1000)
        size = int(q.get("size", DEFAULT_SIZE))
        mode = q.get("mode", "ok")
        if mode == "slow_first_byte":
            time.sleep(float(q.get("delay", 5)))
        elif mode == "status":
            self._error(int(q.get("status", 500)), q.get("retry_after"))
            return
        elif mode == "hostile":
            self._hostile(hostile_plan(int(q.get("seed", 0)), name))
            return
        elif mode == "header_drip":
            self._header_drip(name, size, int(q.get("drip_bytes", 100)), float(q.get("drip_interval", 0.5)))
            return
        elif mode == "flaky" and self.server.record(f"flaky:{self.path}") <= int(q.get("fail", 1)):
            self._error(int(q.get("status", 503)), q.get("retry_after"))
            return
        elif mode == "redirect":
            target = q.get("to")
            if target is None:
                hops = int(q.get("hops", 1))
                rest = {k: v for k, v in q.items() if k not in ("hops", "mode")}
                if hops > 1:
                    rest.update(mode="redirect", hops=str(hops - 1))
                target = f"/files/{quote(name)}?{urlencode(rest)}"
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return

        content_type = q.get("type") or mimetypes.guess_type(name)[0] or "application/octet-stream"
        if mode == "gzip":
            body = gzip.compress(b"\0" * size, compresslevel=9)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        if mode in ("truncate", "reset"):
            self.wfile.write(sample_bytes(name, size)[: size // 2])
            self.wfile.flush()
            if mode == "reset":
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        if mode == "drip":
            step, interval = int(q.get("drip_bytes", 100)), float(q.get("drip_interval", 0.5))
            data = sample_bytes(name, size)
            for start in range(0, size, step):
                self.wfile.write(data[start : start + step])
                self.wfile.flush()
                time.sleep(interval)
            return
        for chunk in _chunks(name, size):
            self.wfile.write(chunk)

    def _hostile(self, plan: HostilePlan) -> None:
        self.close_connection = plan.end != "keep"
        try:
            for data, delay in plan.pieces:
                if data:
                    self.wfile.write(data)
                if delay:
                    time.sleep(delay)
        except OSError:  # the client gave up (a timeout, a refused response)
            self.close_connection = True
            return
        if plan.end == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def _header_drip(self, name: str, size: int, count: int, interval: float) -> None:
        """The status line, then `count` header bytes one at a time every `interval` seconds."""
        self.close_connection = True
        header = b"X-Drip: " + b"a" * max(count - 10, 0) + b"\r\n"
        try:
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(len(header)):
                self.wfile.write(header[i : i + 1])
                time.sleep(interval)
            self.wfile.write(b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n" % size)
            for chunk in _chunks(name, size):
                self.wfile.write(chunk)
        except OSError:
            pass

    def _error(self, status: int, retry_after: str | None = None) -> None:
        body = f"error {status}\n".encode()
        self.send_response(status)
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int]) -> None:
        super().__init__(address, _Handler)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def record(self, key: str) -> int:
        with self._lock:
            self.counts[key] += 1
            return self.counts[key]

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (a refused redirect, a timeout) is expected here


class SampleFileServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port))
        self._thread = threading.Thread(target=self._server.serve_forever, name="sample-files", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str, size: int = DEFAULT_SIZE, **params: object) -> str:
        query = urlencode({"size": size, **{k: str(v) for k, v in params.items()}})
        return f"{self.base_url}/files/{quote(name)}?{query}"

    def requests_for(self, name: str) -> int:
        return self._server.counts[name]

    def start(self) -> SampleFileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SampleFileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    """Serve on loopback until killed; prints the base URL (benchmarks run it in its own process)."""
    import argparse

    parser = argparse.ArgumentParser(description="sample attachment server with fault modes (loopback)")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    server = SampleFileServer(port=args.port)
    print(server.base_url, flush=True)
    server._server.serve_forever()


if __name__ == "__main__":
    main()
