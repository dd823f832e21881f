"""A raw TCP server that answers with exact bytes (status lines and headers no HTTP library would
write), and a one-call download for the download tests."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Callable
from typing import Any

from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.config import Settings
from pipeline_lib.download.downloader import Downloader, DownloadOutcome
from pipeline_lib.local.samples import sample_task

Answer = bytes | Callable[[socket.socket], None]


class RawServer:
    """Loopback HTTP-ish server: each request gets the bytes (or the behaviour) registered for its
    path, then the connection closes. Unknown paths get a 404."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._answers: dict[str, Answer] = {}
        self.connections = 0
        threading.Thread(target=self._serve, name="raw-server", daemon=True).start()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    def url(self, answer: Answer, name: str = "file.pdf") -> str:
        path = f"/{uuid.uuid4().hex[:12]}/{name}"
        self._answers[path] = answer
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self._sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            try:
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 65536:
                    data = conn.recv(4096)
                    if not data:
                        return
                    request += data
                path = request.split(b" ", 2)[1].decode("latin-1")
                answer = self._answers.get(path, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
                if callable(answer):
                    answer(conn)
                else:
                    conn.sendall(answer)
            except OSError:
                pass  # the client gave up


def download(settings: Settings, url: str, name: str = "file.pdf", **kwargs: Any) -> DownloadOutcome:
    kwargs.setdefault("breakers", BreakerRegistry(100, 60))
    return Downloader.from_settings(settings, **kwargs).download(sample_task(url, name))
