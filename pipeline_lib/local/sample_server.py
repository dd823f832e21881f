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

Content is deterministic (derived from the name), so a checksum can be predicted with
`sample_sha256`; it is generated chunk by chunk, so a 2 GiB file costs no memory.
`requests_for(name)` counts the requests a name received (e.g. none for an expired URL).
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
import socket
import struct
import threading
import time
from collections import Counter
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
