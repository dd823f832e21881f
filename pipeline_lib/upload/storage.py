"""Where uploaded attachments go: the lake's Files area, behind one small interface, two backends.

    storage = lake_storage(settings)                  # storage.lake.backend: local | onelake
    stored = storage.put(chunks, "documentsReceived/A1/T1/A1_report_ab12.pdf", size=..., sha256=..., content_type=...)

`put` streams `chunks` (an iterator of bytes, so memory does not grow with the file) to a temporary
name beside the final path, verifies what was written, then renames it onto the final path:
readers never see a partial file and a re-run overwrites the same path. It raises:

- ChunksChanged (from the chunk iterator) when the cached bytes do not match their checksum:
  nothing is renamed; the caller sends the task back for a fresh download;
- StorageFailure with a category from failures.py (transient or permanent) for the service.

Backends:
- LocalLake: a directory playing the lakehouse Files area (the demo and tests); sha256 is stored
  as the `user.sha256` extended attribute where the file system supports it.
- OneLakeStorage: azure-storage-file-datalake against OneLake (file system = workspace, paths under
  `<lakehouse>.Lakehouse/Files/`) or any ADLS Gen2 account: create, append, flush (with
  Content-MD5), rename, then get properties to verify size and MD5; sha256 goes in the metadata.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pipeline_lib.config import ConfigError, Settings, secret_from_env
from pipeline_lib.errors import PipelineError
from pipeline_lib.failures import Failure, failure


class ChunksChanged(PipelineError):
    """The source bytes did not match their expected size or sha256 (raised by the chunk source)."""


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
    service_checksum: bool  # the service reported a checksum and it matched


class LakeStorage(Protocol):
    endpoint: str  # the circuit breaker's key

    def put(
        self, chunks: Iterable[bytes], path: str, *, size: int, sha256: str, content_type: str | None
    ) -> StoredFile: ...


def verified_chunks(source: Path, size: int, sha256: str, chunk_bytes: int) -> Iterable[bytes]:
    """Read `source` in chunks, hashing as it goes; ChunksChanged if size or sha256 differ at the end."""
    digest = hashlib.sha256()
    count = 0
    with open(source, "rb") as f:
        while chunk := f.read(chunk_bytes):
            count += len(chunk)
            if count > size:
                raise ChunksChanged(f"the cached file is longer than the {size} bytes downloaded")
            digest.update(chunk)
            yield chunk
    if count != size or digest.hexdigest() != sha256:
        raise ChunksChanged(f"the cached file ({count} bytes) does not match the downloaded {size} bytes / sha256")


class LocalLake:
    """The lakehouse Files area as a local directory."""

    def __init__(self, root: str | Path, files_prefix: str) -> None:
        self.base = Path(root) / files_prefix
        self.endpoint = f"local:{self.base}"

    def put(
        self, chunks: Iterable[bytes], path: str, *, size: int, sha256: str, content_type: str | None
    ) -> StoredFile:
        final = self.base / path
        temp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
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
            if temp.exists():
                temp.unlink()
        return StoredFile(str(final), size, sha256, service_checksum=False)


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
    """The credential named by storage.lake.onelake.auth; secrets come from the environment."""
    onelake = settings.storage.lake.onelake
    if onelake.auth == "service_principal":
        from azure.identity import ClientSecretCredential

        key = "storage.lake.onelake"
        return ClientSecretCredential(
            secret_from_env(onelake.tenant_id_env, purpose="OneLake service principal", key=f"{key}.tenant_id_env"),
            secret_from_env(onelake.client_id_env, purpose="OneLake service principal", key=f"{key}.client_id_env"),
            secret_from_env(
                onelake.client_secret_env, purpose="OneLake service principal", key=f"{key}.client_secret_env"
            ),
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
        code = getattr(exc, "error_code", None) or ""
        if status == 401:  # an expired or not yet refreshed token
            return Failure(
                "auth", True, f"storage returned 401 {code}: the token is refreshed on the next attempt", 401
            )
        if status == 409:  # a concurrent writer or a rename race on the same path
            return Failure("http_transient", True, f"storage returned 409 {code}", 409)
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        result = classify_status(status, retry_after=headers.get("retry-after"))
        return Failure(result.category, result.transient, f"storage returned {status} {code}: {exc.message}", status,
                       result.retry_after_seconds)  # fmt: skip
    if isinstance(exc, ClientAuthenticationError):
        return failure("connection", f"could not get a token for the storage endpoint: {exc}")
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
        service = DataLakeServiceClient(
            account_url, credential=credential, retry_total=sdk_retries, connection_timeout=timeout,
            read_timeout=timeout, **client_kwargs,
        )  # fmt: skip
        self.client = service.get_file_system_client(file_system)

    @classmethod
    def from_settings(cls, settings: Settings, **client_kwargs: Any) -> OneLakeStorage:
        lake = settings.storage.lake
        o = lake.onelake
        root = "/".join(p for p in (f"{o.lakehouse}.Lakehouse/Files" if o.lakehouse else "", lake.files_prefix) if p)
        return cls(o.account_url, str(o.workspace), root, credential_for(settings), sdk_retries=o.sdk_retries,
                   timeout=o.timeout_seconds, **client_kwargs)  # fmt: skip

    def put(
        self, chunks: Iterable[bytes], path: str, *, size: int, sha256: str, content_type: str | None
    ) -> StoredFile:
        from azure.core.exceptions import AzureError
        from azure.storage.filedatalake import ContentSettings

        final = f"{self.root}/{path}" if self.root else path
        head, _, name = final.rpartition("/")
        temp = f"{head}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if head else f".{name}.{uuid.uuid4().hex[:8]}.tmp"
        temp_client = self.client.get_file_client(temp)
        created = False
        try:
            temp_client.create_file(
                content_settings=ContentSettings(content_type=content_type), metadata={"sha256": sha256}
            )
            created = True
            md5 = hashlib.md5()  # the service's Content-MD5 integrity check, not security
            offset = 0
            for chunk in chunks:
                temp_client.append_data(chunk, offset=offset, length=len(chunk))
                md5.update(chunk)
                offset += len(chunk)
            settings = ContentSettings(content_type=content_type, content_md5=bytearray(md5.digest()))
            temp_client.flush_data(offset, content_settings=settings)
            renamed = temp_client.rename_file(f"{self.file_system}/{final}")
            created = False
            props = renamed.get_file_properties()
        except ChunksChanged:
            raise
        except AzureError as exc:
            result = _classify_azure(exc)
            if result.http_status == 401 and hasattr(self.credential, "invalidate"):
                self.credential.invalidate()  # a refused token is not reused by the retry
            raise StorageFailure(result) from None
        finally:
            if created:
                self._delete_quietly(temp_client)
        if props.size != size:
            raise StorageFailure(
                failure("truncated", f"{final}: the service holds {props.size} bytes, expected {size}")
            )
        served_md5 = props.content_settings.content_md5
        if served_md5 and bytes(served_md5) != md5.digest():
            raise StorageFailure(
                failure("truncated", f"{final}: the service's Content-MD5 does not match what was sent")
            )
        return StoredFile(f"abfss://{self.file_system}@{_host(self.endpoint)}/{final}", size, sha256, bool(served_md5))

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
