"""A local HTTP server of sample attachments for the demo and the tests (loopback only).

    with SampleFileServer() as server:
        url = server.url("photo_1.jpg", size=65536)   # http://127.0.0.1:<port>/files/photo_1.jpg?size=65536

Content is deterministic (derived from the name), so a checksum can be predicted.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

DEFAULT_SIZE = 64 * 1024
_CHUNK = 64 * 1024


def sample_bytes(name: str, size: int) -> bytes:
    """The content served for `name`: a repeated digest of the name, cut to `size`."""
    seed = hashlib.sha256(name.encode()).digest()
    return (seed * (size // len(seed) + 1))[:size]


class _Handler(BaseHTTPRequestHandler):
    server_version = "xact-sample-server/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        parts = urlsplit(self.path)
        if not parts.path.startswith("/files/"):
            self.send_error(404, "not a sample file")
            return
        name = parts.path.removeprefix("/files/")
        query = parse_qs(parts.query)
        size = int(query.get("size", [DEFAULT_SIZE])[0])
        body = sample_bytes(name, size)
        self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(name)[0] or "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for start in range(0, len(body), _CHUNK):
            self.wfile.write(body[start : start + _CHUNK])

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep test output quiet
        pass


class SampleFileServer:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sample-files", daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def url(self, name: str, size: int = DEFAULT_SIZE) -> str:
        return f"{self.base_url}/files/{quote(name)}?size={size}"

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
