"""A local HTTPS server that speaks the part of the ADLS Gen2 (OneLake) DFS REST API the upload
uses, so the real azure-storage-file-datalake client can run against it. No emulator supports the
DFS endpoint (Azurite does not), hence this.

Operations: create file (PUT ?resource=file, metadata from x-ms-properties), append (PATCH
?action=append&position=N), flush (PATCH ?action=flush&position=N, with x-ms-content-md5 /
x-ms-content-type), rename (PUT with x-ms-rename-source), get properties (HEAD, answered as the blob
endpoint does: size, Content-MD5, x-ms-meta-*), delete (DELETE). Every request must carry a bearer
token. TLS uses a self-signed certificate made at start (`ca_file` is what the client must trust).

Checksums, as the service documents them: a Content-MD5 on an append is transactional, checked
against the bytes received (400 Md5Mismatch otherwise) and not stored; the x-ms-content-md5 of a
flush is stored as the file's Content-MD5 without being checked against the data.

Names, as the service documents them ("Naming and Referencing Containers, Blobs, and Metadata"): a
path below the file system of more than 1,024 characters or 254 segments is refused (400
InvalidResourceName). The server is stricter than that page in one way, on purpose: it also
refuses a segment over `max_segment_bytes` (255) bytes of UTF-8, the bound the pipeline keeps for
every store (local file systems, Windows tools), so a derived name that would not fit everywhere
(a temporary name, say) fails here too. `DfsServer(folder, max_segment_bytes=None)` lifts it.

Fault modes, consumed in order: `server.fail("append", 503, times=1)`, `fail("any", 401)`,
`fail("rename", 409)`, `slow("flush", 2.0)`, `corrupt("append")` (the body is damaged on arrival,
as by a faulty network path: the MD5 check catches it, or the damage is stored without one), and
`mutate("rename", fn)` (fn(entry) runs on the path after the operation, e.g. another writer
replacing the file or a service dropping metadata).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def make_certificate(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "dfs.crt", folder / "dfs.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


@dataclass
class PathEntry:
    data: bytearray = field(default_factory=bytearray)
    committed: int = 0
    content_type: str | None = None
    content_md5: str | None = None  # base64
    metadata: dict[str, str] = field(default_factory=dict)
    etag: str = field(default_factory=lambda: f'"0x{uuid.uuid4().hex[:16].upper()}"')


@dataclass
class Fault:
    op: str  # create | append | flush | rename | properties | delete | any
    status: int = 0
    delay: float = 0.0
    times: int = 1
    corrupt: bool = False  # damage the request body on arrival
    mutate: Callable[[PathEntry], None] | None = None  # applied to the path after the operation


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DfsServer
    _corrupt: bool = False  # set per request by _guard from a fault
    _mutate: Callable[[PathEntry], None] | None = None

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _path(self) -> tuple[str, dict[str, str]]:
        parts = urlsplit(self.path)
        return unquote(parts.path).lstrip("/"), {k: v[0] for k, v in parse_qs(parts.query).items()}

    def _reply(self, status: int, headers: dict[str, str] | None = None, body: bytes = b"") -> None:
        self.send_response(status)
        now = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime())
        base = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-version": "2025-01-05", "Date": now}
        for k, v in {**base, **(headers or {})}.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def _error(self, status: int, code: str) -> None:
        body = f'{{"error":{{"code":"{code}","message":"{code} (test DFS server)"}}}}'.encode()
        self._reply(status, {"Content-Type": "application/json", "x-ms-error-code": code}, body)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _guard(self, op: str) -> bool:
        """Auth and fault injection; False when a response was already sent."""
        self._corrupt, self._mutate = False, None
        self.server.log.append((op, self.command, self.path))
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._body()
            self._error(401, "NoAuthenticationInformation")
            return False
        self.server.tokens.append(auth.removeprefix("Bearer "))
        if time.monotonic() < self.server.unavailable_until:  # an outage: every call is refused
            self._body()
            self._error(503, "ServerBusy")
            return False
        fault = self.server.take_fault(op)
        if fault is not None:
            self._corrupt, self._mutate = fault.corrupt, fault.mutate
            if fault.delay:
                time.sleep(fault.delay)
            if fault.status:
                self._body()
                codes = {
                    401: "InvalidAuthenticationInfo",
                    409: "PathConflict",
                    503: "ServerBusy",
                    403: "AuthorizationPermissionMismatch",
                }
                self._error(fault.status, codes.get(fault.status, "InjectedFault"))
                return False
        return True

    def _name_refused(self, path: str) -> bool:
        """Refuse (400 InvalidResourceName) a path the service would not take; True when refused."""
        name = path.partition("/")[2]  # the blob name: below the file system
        segments = name.split("/")
        limit = self.server.max_segment_bytes
        if (
            len(name) > 1024
            or len(segments) > 254
            or (limit is not None and any(len(s.encode("utf-8", "surrogatepass")) > limit for s in segments))
        ):
            self._error(400, "InvalidResourceName")
            return True
        return False

    def do_PUT(self) -> None:
        path, query = self._path()
        source = self.headers.get("x-ms-rename-source")
        op = "rename" if source else "create"
        if not self._guard(op):
            return
        self._body()
        if self._name_refused(path):
            return
        files = self.server.files
        if source:
            src = unquote(urlsplit(source).path).lstrip("/")
            if src not in files:
                self._error(404, "SourcePathNotFound")
                return
            files[path] = files.pop(src)
            self._after(files[path])
            self._reply(201, {"ETag": files[path].etag, "Last-Modified": self.date_time_string()})
            return
        if query.get("resource") != "file":
            self._error(400, "InvalidQueryParameterValue")
            return
        entry = PathEntry(content_type=self.headers.get("x-ms-content-type"))
        for pair in filter(None, (self.headers.get("x-ms-properties") or "").split(",")):
            k, _, v = pair.partition("=")
            entry.metadata[k.strip()] = base64.b64decode(v).decode()
        files[path] = entry
        self._reply(201, {"ETag": entry.etag, "Last-Modified": self.date_time_string()})

    def do_PATCH(self) -> None:
        path, query = self._path()
        action = query.get("action", "")
        if not self._guard(action):
            return
        body = self._body()
        entry = self.server.files.get(path)
        if entry is None:
            self._error(404, "PathNotFound")
            return
        position = int(query.get("position", "0"))
        if action == "append":
            if self._corrupt and body:
                body = bytes([body[0] ^ 0xFF]) + body[1:]
            sent = self.headers.get("Content-MD5")
            self.server.append_md5s.append(sent)
            received = base64.b64encode(hashlib.md5(body, usedforsecurity=False).digest()).decode()
            if sent is not None and sent != received:
                self._error(400, "Md5Mismatch")  # transactional: checked, never stored
                return
            if position != len(entry.data):
                self._error(400, "InvalidFlushPosition")
                return
            entry.data.extend(body)
            self._after(entry)
            self._reply(202)
        elif action == "flush":
            if position != len(entry.data):
                self._error(400, "InvalidFlushPosition")
                return
            entry.committed = position
            # Stored as the file's Content-MD5 property; the service does not check it.
            entry.content_md5 = self.headers.get("x-ms-content-md5") or entry.content_md5
            entry.content_type = self.headers.get("x-ms-content-type") or entry.content_type
            entry.etag = f'"0x{uuid.uuid4().hex[:16].upper()}"'
            self._after(entry)
            self._reply(
                200,
                {
                    "ETag": entry.etag,
                    "Last-Modified": self.date_time_string(),
                    "x-ms-request-server-encrypted": "false",
                },
            )
        else:
            self._error(400, "InvalidQueryParameterValue")

    def _after(self, entry: PathEntry) -> None:
        if self._mutate is not None:
            self._mutate(entry)

    def do_HEAD(self) -> None:
        path, _ = self._path()
        if not self._guard("properties"):
            return
        entry = self.server.files.get(path)
        if entry is None:
            self.send_response(404)
            self.send_header("x-ms-error-code", "BlobNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        headers = {
            "ETag": entry.etag,
            "Last-Modified": self.date_time_string(),
            "x-ms-blob-type": "BlockBlob",
            "x-ms-creation-time": self.date_time_string(),
            "x-ms-resource-type": "file",
            "Content-Type": entry.content_type or "application/octet-stream",
            "x-ms-server-encrypted": "false",
            **({"Content-MD5": entry.content_md5} if entry.content_md5 else {}),
            **{f"x-ms-meta-{k}": v for k, v in entry.metadata.items()},
        }
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(entry.committed))
        self.end_headers()

    def do_DELETE(self) -> None:
        path, _ = self._path()
        if not self._guard("delete"):
            return
        self._body()
        self.server.files.pop(path, None)
        self._reply(200)


class DfsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, folder: Path, max_segment_bytes: int | None = 255) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.max_segment_bytes = max_segment_bytes  # stricter than the service: see the module docstring
        cert, key = make_certificate(folder)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.ca_file = str(cert)
        self.files: dict[str, PathEntry] = {}
        self.faults: list[Fault] = []
        self.log: list[tuple[str, str, str]] = []
        self.tokens: list[str] = []
        self.append_md5s: list[str | None] = []  # the Content-MD5 of every append, None when absent
        self.unavailable_until = 0.0  # time.monotonic() until which every call answers 503 (outage)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server_address[1]}"

    def fail(self, op: str, status: int, times: int = 1) -> None:
        self.faults.append(Fault(op, status=status, times=times))

    def outage(self, seconds: float) -> None:
        """Answer every call with 503 ServerBusy for `seconds` from now (the lake unwritable)."""
        self.unavailable_until = time.monotonic() + seconds

    def slow(self, op: str, delay: float, times: int = 1) -> None:
        self.faults.append(Fault(op, delay=delay, times=times))

    def corrupt(self, op: str = "append", times: int = 1) -> None:
        self.faults.append(Fault(op, corrupt=True, times=times))

    def mutate(self, op: str, fn: Callable[[PathEntry], None], times: int = 1) -> None:
        self.faults.append(Fault(op, mutate=fn, times=times))

    def take_fault(self, op: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.op in (op, "any") and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def handle_error(self, request: object, client_address: object) -> None:
        pass

    def __enter__(self) -> DfsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def any_token() -> tuple[str, int]:
    """A token provider for storage.lake.onelake.token_provider against this server (it accepts any
    bearer token): `pipeline_lib.local.dfs_server:any_token`, for drills and local trials."""
    return "local-dfs-test-token", int(time.time()) + 3600
