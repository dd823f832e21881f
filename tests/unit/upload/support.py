"""Helpers of the upload tests: a cached attachment as the download leaves it, an uploader with its
own breakers, and OneLake storage on the local DFS server."""

from __future__ import annotations

import hashlib
import time

from pipeline_lib.cache import cache_path
from pipeline_lib.circuit_breaker import BreakerRegistry
from pipeline_lib.contracts import CachedAttachment
from pipeline_lib.local.samples import sample_task
from pipeline_lib.upload.storage import CallableTokenCredential, OneLakeStorage
from pipeline_lib.upload.uploader import Uploader


def cache(settings, name: str, data: bytes, **task_fields) -> CachedAttachment:
    """`data` in the cache where the download puts it, and the cached message it sends."""
    task = sample_task(f"https://files.example.com/{name}?sig=SECRET", name, **task_fields)
    path = cache_path(settings.cache_dir, task.task_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return CachedAttachment(
        task=task.to_dict(),
        cache_uri=path.as_uri(),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        content_type="application/pdf",
        downloaded_at="2026-11-27T10:00:00.000Z",
    )


def uploader(settings, storage=None) -> Uploader:
    return Uploader(settings, storage, breakers=BreakerRegistry(3, 60))


def onelake(dfs, tokens=None, retries=0) -> OneLakeStorage:
    def provider():
        if tokens is not None:
            tokens.append(time.time())
        return f"token-{len(tokens or [])}", int(time.time()) + 3600

    return OneLakeStorage(
        dfs.url,
        "ws",
        "lh.Lakehouse/Files/xact/attachments",
        CallableTokenCredential(provider),
        sdk_retries=retries,
        connection_verify=dfs.ca_file,
        initial_backoff=0.1,
        random_jitter_range=0.05,
    )
