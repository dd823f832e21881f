"""Where uploaded attachments go: the lake's Files area, behind one small interface, two backends.

    storage = lake_storage(settings)                  # storage.lake.backend: local | onelake
    stored = storage.put(chunks, "documentsReceived/A1/T1/A1_report_ab12.pdf", size=..., sha256=..., content_type=...)
    same = storage.find_stored("documentsReceived/...", size=..., sha256=...)   # StoredFile or None

`put` streams `chunks` (an iterator of bytes, so memory does not grow with the file) to a temporary
name beside the final path, verifies what was written, then renames it onto the final path:
readers never see a partial file and a re-run overwrites the same path. It raises:

- CacheProblem from the chunk iterator (verified_chunks): ChunksChanged when the cached bytes do
  not match their size or sha256, CacheUnreadable when reading the cache failed (an OSError).
  Nothing is renamed; the caller sends the task back for a fresh download. It is never reported
  as a failure of the lake;
- StorageFailure with a category from failures.py (transient or permanent) for the service.

`find_stored` answers whether the final path already holds exactly these bytes (same size and
sha256): the upload uses it when its cache file is gone, so a duplicate message of a completed
upload is reported completed instead of being downloaded again. It raises StorageFailure when the
lake cannot be asked.

Paths are relative to the lake's files prefix; one with an empty, `.` or `..` segment, a leading
`/`, a backslash or a control character is refused (StorageFailure, category internal) before
any I/O, so a message cannot write or read outside the lake. So is one beyond the bounds of
paths.py (a segment over 255 bytes of UTF-8, more than 768 bytes or 16 segments), which no store
could take: refused by name, not by the service's or the file system's own error.

The temporary name is `.{16 hex of the final name's sha256}.{16 random hex}.tmp`: 38 bytes whatever
the final name (which may take all of its 255 bytes), so it fits wherever the final name does, and
a leftover one still names its final path (the hash) without colliding with another upload's.

Backends:
- LocalLake: a directory playing the lakehouse Files area (the demo and tests); sha256 is stored
  as the `user.sha256` extended attribute where the file system supports it.
- OneLakeStorage: azure-storage-file-datalake against OneLake (file system = workspace, paths under
  `<lakehouse>.Lakehouse/Files/`) or any ADLS Gen2 account. What is verified, and how:
  - create the temporary path with our sha256 in its metadata;
  - append each chunk with a transactional Content-MD5 of that chunk (the SDK's
    validate_content="md5"): the service checks it against the bytes it received and answers
    400 Md5Mismatch otherwise, so every byte that reaches the service is checked in transit. The
    chunks are the cached bytes, re-hashed (sha256) as they are read, and nothing is flushed
    unless that sha256 matches;
  - flush at the total length (the service refuses a flush position that is not the end of
    contiguous appended data) with the whole file's MD5 in x-ms-content-md5. The service does
    NOT check that value against the data: it only stores it as the file's Content-MD5 property;
  - rename onto the final path, then read the properties back and compare the size, our sha256
    metadata and the stored Content-MD5 with what was sent. The size is the service's own count;
    the metadata and the MD5 are values we wrote, so reading them back proves that the final path
    holds the file this upload created (not another writer's), not that the service re-hashed
    the content. Nothing here re-reads the content itself.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline_lib.config import ConfigError, Settings
from pipeline_lib.errors import PipelineError
from pipeline_lib.failures import Failure, failure
from pipeline_lib.paths import MAX_COMPONENT, MAX_PATH_BYTES, MAX_PATH_SEGMENTS, MAX_ROOT_BYTES
from pipeline_lib.secrets import read_secret


class CacheProblem(PipelineError):
    """The cached source of an upload cannot be used (raised by the chunk source, never by the lake)."""


class ChunksChanged(CacheProblem):
    """The source bytes did not match their expected size or sha256."""


class CacheUnreadable(CacheProblem):
    """Opening or reading the cached file failed (an OSError)."""


class StorageFailure(PipelineError):
    """The storage service refused or failed a write; `failure` classifies it (failures.py)."""

    def __init__(self, result: Failure) -> None:
        super().__init__(result.message)
        self.failure = result


@dataclass(frozen=True)
class StoredFile:
    uri: str  # where the file is now: a local path or an abfss:// URI
    bytes: int
    sha256: str
    service_checksum: bool  # the service checked a checksum of every byte this upload sent (per-append MD5)


class LakeStorage(Protocol):
    endpoint: str  # the circuit breaker's key

    def put(
        self, chunks: Iterable[bytes], path: str, *, size: int, sha256: str, content_type: str | None
    ) -> StoredFile: ...

    def find_stored(self, path: str, *, size: int, sha256: str) -> StoredFile | None:
        """The file at `path` when it holds exactly `size` bytes with this sha256, else None."""
        ...


_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\\]")
TEMP_NAME_BYTES = 38  # len(temp_name(...)): `.` + 16 hex + `.` + 16 hex + `.tmp`


def _refuse(path: object, why: str) -> StorageFailure:
    shown = repr(path)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return StorageFailure(failure("internal", f"blob path {shown} {why}: nothing read or written"))


def check_blob_path(path: object) -> str:
    """`path` if it is a plain relative path inside the lake within the bounds of paths.py, else
    StorageFailure (internal)."""
    if not isinstance(path, str) or not path or path.startswith("/") or _UNSAFE_PATH.search(path):
        raise _refuse(path, "is not a relative path inside the lake")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise _refuse(path, "is not a relative path inside the lake")
    size = len(path.encode("utf-8", "surrogatepass"))
    if size > MAX_PATH_BYTES or len(parts) > MAX_PATH_SEGMENTS:
        raise _refuse(
            path,
            f"takes {size} bytes in {len(parts)} segments, more than the lake's "
            f"{MAX_PATH_BYTES} bytes in {MAX_PATH_SEGMENTS} segments (paths.py)",
        )
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_COMPONENT for part in parts):
        raise _refuse(path, f"has a segment longer than {MAX_COMPONENT} bytes of UTF-8 (paths.py)")
    return path


def temp_name(final_name: str) -> str:
    """A fresh temporary name for an upload to `final_name` in the same folder: TEMP_NAME_BYTES long
    whatever the final name, hidden (a leading dot), and traceable to it (its sha256's first 16 hex)."""
    digest = hashlib.sha256(final_name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f".{digest}.{uuid.uuid4().hex[:16]}.tmp"


def verified_chunks(source: Path, size: int, sha256: str, chunk_bytes: int) -> Generator[bytes, None, None]:
    """Read `source` in chunks, hashing as it goes; ChunksChanged if size or sha256 differ at the
    end (before the caller commits anything), CacheUnreadable if opening or reading it fails."""
    digest = hashlib.sha256()
    count = 0
    try:
        f = open(source, "rb")  # closed by the with below; OSError from open and read alike
    except OSError as exc:
        raise CacheUnreadable(f"the cached file {source} cannot be opened: {exc}") from None
    with f:
        while True:
            try:
                chunk = f.read(chunk_bytes)
            except OSError as exc:
                raise CacheUnreadable(f"reading the cached file {source} failed after {count} bytes: {exc}") from None
            if not chunk:
                break
            count += len(chunk)
            if count > size:
                raise ChunksChanged(f"the cached file is longer than the {size} bytes downloaded")
            digest.update(chunk)
            yield chunk
    if count != size or digest.hexdigest() != sha256:
        raise ChunksChanged(f"the cached file ({count} bytes) does not match the downloaded {size} bytes / sha256")


def _file_sha256(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


class LocalLake:
    """The lakehouse Files area as a local directory."""

    def __init__(self, root: str | Path, files_prefix: str) -> None:
        self.base = Path(root) / files_prefix
        self.endpoint = f"local:{self.base}"

    def put(
        self, chunks: Iterable[bytes], path: str, *, size: int, sha256: str, content_type: str | None
    ) -> StoredFile:
        final = self.base / check_blob_path(path)
        temp = final.with_name(temp_name(final.name))
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            written = 0
            with open(temp, "wb") as out:
                for chunk in chunks:
                    out.write(chunk)
                    written += len(chunk)
            if written != size or temp.stat().st_size != size:
                raise StorageFailure(failure("truncated", f"wrote {written} of {size} bytes to {temp}"))
            try:
                os.setxattr(temp, "user.sha256", sha256.encode())
            except OSError:  # no user xattrs on this file system: the results row still has it
                pass
            os.replace(temp, final)
        except OSError as exc:
            raise StorageFailure(
                failure("cache_io" if exc.errno != 28 else "disk_full", f"local lake: {exc}")
            ) from None
        finally:
            try:  # best effort, and never an OSError of its own (it used to escape as `internal`)
                temp.unlink(missing_ok=True)
            except OSError:
                pass  # a leftover temporary name is hidden (dot name) and harmless
        return StoredFile(str(final), size, sha256, service_checksum=False)

    def find_stored(self, path: str, *, size: int, sha256: str) -> StoredFile | None:
        """stat (a regular file of `size` bytes), then the `user.sha256` xattr when there is one,
        else the file's own sha256."""
        final = self.base / check_blob_path(path)
        try:
            st = os.stat(final, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                return None
            try:
                stored = os.getxattr(final, "user.sha256", follow_symlinks=False).decode("ascii", "replace")
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    raise
                stored = _file_sha256(final)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            raise StorageFailure(failure("cache_io", f"local lake: cannot check {final}: {exc}")) from None
        return StoredFile(str(final), size, sha256, service_checksum=False) if stored == sha256 else None


class CallableTokenCredential:
    """An azure-core TokenCredential around a `() -> (token, expires_on)` function (a Fabric
    notebook's token helper, for example), refreshed `margin` seconds before it expires."""

    def __init__(self, provider: Callable[[], tuple[str, int]], margin: float = 300) -> None:
        self._provider, self._margin = provider, margin
        self._token: Any = None

    def invalidate(self) -> None:
        """Forget the cached token (the service refused it): the next request fetches a new one."""
        self._token = None

    def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        from azure.core.credentials import AccessToken

        if self._token is None or self._token.expires_on - time.time() < self._margin:
            token, expires_on = self._provider()
            self._token = AccessToken(token, int(expires_on))
        return self._token


def credential_for(settings: Settings) -> Any:
    """The credential named by storage.lake.onelake.auth; secrets are read where their references say."""
    onelake = settings.storage.lake.onelake
    if onelake.auth == "service_principal":
        from azure.identity import ClientSecretCredential

        key, purpose = "storage.lake.onelake", "OneLake service principal"
        return ClientSecretCredential(
            read_secret(onelake.tenant_id, key=f"{key}.tenant_id", purpose=purpose),
            read_secret(onelake.client_id, key=f"{key}.client_id", purpose=purpose),
            read_secret(onelake.client_secret, key=f"{key}.client_secret", purpose=purpose),
        )
    if onelake.auth == "token_provider":
        module, _, name = str(onelake.token_provider).partition(":")
        try:
            provider = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"storage.lake.onelake.token_provider {onelake.token_provider!r} cannot be loaded: {exc}"
            ) from None
        return CallableTokenCredential(provider)
    from azure.identity import DefaultAzureCredential

    return DefaultAzureCredential()  # refreshes its tokens itself


def _classify_azure(exc: Exception) -> Failure:
    from azure.core.exceptions import (
        ClientAuthenticationError,
        HttpResponseError,
        ServiceRequestError,
        ServiceResponseError,
    )

    from pipeline_lib.failures import classify_status

    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return failure("connection", f"storage endpoint unreachable: {exc}")
    status = getattr(exc, "status_code", None)
    if isinstance(exc, HttpResponseError) and status:
        raw_code = getattr(exc, "error_code", None)  # a StorageErrorCode (a str enum) or a plain str
        code = str(getattr(raw_code, "value", raw_code) or "")
        if status == 400 and code == "Md5Mismatch":  # an appended chunk arrived damaged: send it again
            return Failure(
                "truncated", True, f"storage returned 400 {code}: an appended chunk did not match its Content-MD5", 400
            )
        if status == 401:  # an expired or not yet refreshed token
            return Failure(
                "auth", True, f"storage returned 401 {code}: the token is refreshed on the next attempt", 401
            )
        if status == 409:  # a concurrent writer or a rename race on the same path
            return Failure("http_transient", True, f"storage returned 409 {code}", 409)
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        result = classify_status(status, retry_after=headers.get("retry-after"))
        return Failure(
            result.category,
            result.transient,
            f"storage returned {status} {code}: {exc.message}",
            status,
            result.retry_after_seconds,
        )
    if isinstance(exc, ClientAuthenticationError):
        return failure("connection", f"could not get a token for the storage endpoint: {exc}")
    if str(exc).startswith("MD5 mismatch"):  # the SDK's own check of a Content-MD5 the service echoed
        return failure("truncated", f"storage: {exc}")
    return failure("connection", f"{type(exc).__name__}: {exc}")


class OneLakeStorage:
    """OneLake (or any ADLS Gen2 account) through azure-storage-file-datalake."""

    def __init__(
        self,
        account_url: str,
        file_system: str,
        root: str,
        credential: Any,
        *,
        sdk_retries: int = 2,
        timeout: float = 120,
        **client_kwargs: Any,
    ) -> None:
        from azure.storage.filedatalake import DataLakeServiceClient

        self.endpoint = account_url
        self.credential = credential
        self.file_system = file_system
        self.root = root.strip("/")
        # Microsoft, "Naming and Referencing Containers, Blobs, and Metadata": a blob name, counted
        # from the file system (so with this root), is at most 1,024 characters in at most 254
        # segments. Paths are bounded to MAX_PATH_BYTES and MAX_PATH_SEGMENTS (paths.py) so that
        # root + "/" + path fits whenever the root takes at most MAX_ROOT_BYTES; a longer root is
        # refused here, at start, rather than every upload failing. (256 bytes hold at most 128
        # segments, so root and path stay far below 254 segments too.)
        if len(self.root.encode("utf-8")) + 1 > MAX_ROOT_BYTES:
            raise ConfigError(
                f"the OneLake root {self.root[:80]!r} (<lakehouse>.Lakehouse/Files/<storage.lake.files_prefix>) "
                f"takes {len(self.root.encode('utf-8'))} bytes; at most {MAX_ROOT_BYTES - 1} leave room for the "
                "attachment paths within OneLake's 1,024-character path: shorten storage.lake.files_prefix"
            )
        service = DataLakeServiceClient(
            account_url,
            credential=credential,
            retry_total=sdk_retries,
            connection_timeout=timeout,
            read_timeout=timeout,
            **client_kwargs,
        )
        self.client = service.get_file_system_client(file_system)

    @classmethod
    def from_settings(cls, settings: Settings, **client_kwargs: Any) -> OneLakeStorage:
        lake = settings.storage.lake
        o = lake.onelake
        root = "/".join(p for p in (f"{o.lakehouse}.Lakehouse/Files" if o.lakehouse else "", lake.files_prefix) if p)
        return cls(
            o.account_url,
            str(o.workspace),
            root,
            credential_for(settings),
            sdk_retries=o.sdk_retries,
            timeout=o.timeout_seconds,
            **client_kwargs,
        )

    def _final(self, path: str) -> str:
        check_blob_path(path)
        return f"{self.root}/{path}" if self.root else path

    def _uri(self, final: str) -> str:
        return f"abfss://{self.file_system}@{_host(self.endpoint)}/{final}"

    def _storage_failure(self, exc: Exception) -> StorageFailure:
        result = _classify_azure(exc)
        if result.http_status == 401 and hasattr(self.credential, "invalidate"):
            self.credential.invalidate()  # a refused token is not reused by the retry
        return StorageFailure(result)

    def put(
        self, chunks: Iterable[bytes], path: str, *, size: int, sha256: str, content_type: str | None
    ) -> StoredFile:
        from azure.core.exceptions import AzureError
        from azure.storage.filedatalake import ContentSettings

        final = self._final(path)
        head, _, name = final.rpartition("/")
        temp = f"{head}/{temp_name(name)}" if head else temp_name(name)
        temp_client = self.client.get_file_client(temp)
        created = False
        try:
            temp_client.create_file(
                content_settings=ContentSettings(content_type=content_type), metadata={"sha256": sha256}
            )
            created = True
            md5 = hashlib.md5()  # the whole file's MD5, stored as its Content-MD5 (integrity, not security)
            offset = 0
            for chunk in chunks:
                # validate_content="md5": the SDK sends this chunk's MD5 as Content-MD5, which the
                # service checks against the bytes it received (400 Md5Mismatch otherwise).
                temp_client.append_data(chunk, offset=offset, length=len(chunk), validate_content="md5")
                md5.update(chunk)
                offset += len(chunk)
            # x-ms-content-md5 on flush is stored as the Content-MD5 property, not checked.
            settings = ContentSettings(content_type=content_type, content_md5=bytearray(md5.digest()))
            temp_client.flush_data(offset, content_settings=settings)
            renamed = temp_client.rename_file(f"{self.file_system}/{final}")
            created = False
            props = renamed.get_file_properties()
        except CacheProblem:
            raise
        except AzureError as exc:
            raise self._storage_failure(exc) from None
        finally:
            if created:
                self._delete_quietly(temp_client)
        if props.size != size:
            raise StorageFailure(
                failure("truncated", f"{final}: the service holds {props.size} bytes, expected {size}")
            )
        stored_sha256 = (props.metadata or {}).get("sha256")
        if stored_sha256 != sha256:
            raise StorageFailure(
                failure(
                    "truncated",
                    f"{final}: the file's sha256 metadata is {stored_sha256!r}, not the uploaded {sha256} "
                    "(another writer replaced it, or the metadata was lost)",
                )
            )
        served_md5 = props.content_settings.content_md5
        if served_md5 and bytes(served_md5) != md5.digest():
            raise StorageFailure(failure("truncated", f"{final}: the stored Content-MD5 is not the MD5 sent on flush"))
        return StoredFile(self._uri(final), size, sha256, service_checksum=True)

    def find_stored(self, path: str, *, size: int, sha256: str) -> StoredFile | None:
        """get_file_properties: the size and our sha256 metadata (the Content-MD5 property is the
        value we sent, so it adds nothing here). A missing path is None."""
        from azure.core.exceptions import AzureError, ResourceNotFoundError

        final = self._final(path)
        try:
            props = self.client.get_file_client(final).get_file_properties()
        except ResourceNotFoundError:
            return None
        except AzureError as exc:
            raise self._storage_failure(exc) from None
        if props.size != size or (props.metadata or {}).get("sha256") != sha256:
            return None
        return StoredFile(self._uri(final), size, sha256, service_checksum=False)

    @staticmethod
    def _delete_quietly(client: Any) -> None:
        try:
            client.delete_file()
        except Exception:  # noqa: BLE001 - best effort: a leftover temp file is hidden (dot name) and harmless
            pass


def _host(url: str) -> str:
    return url.split("://", 1)[-1].split("/", 1)[0]


def lake_storage(settings: Settings, **client_kwargs: Any) -> LakeStorage:
    lake = settings.storage.lake
    if lake.backend == "onelake":
        return OneLakeStorage.from_settings(settings, **client_kwargs)
    return LocalLake(settings.storage.resolve(lake.local_root), lake.files_prefix)
