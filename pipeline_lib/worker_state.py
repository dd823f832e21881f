"""Objects that live as long as a Python worker process, not one micro-batch.

PySpark reuses its Python workers across tasks (spark.python.worker.reuse), so a stage built once
per worker keeps its HTTP connection pools, thread pool and circuit breakers warm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from pipeline_lib.config import Settings

T = TypeVar("T")
_instances: dict[tuple[Any, str], Any] = {}
_lock = threading.Lock()


def per_worker(factory: Callable[[Settings], T], settings: Settings) -> T:
    """`factory(settings)`, built once per process for equal settings."""
    key = (factory, settings.model_dump_json())
    with _lock:
        if key not in _instances:
            _instances[key] = factory(settings)
        return _instances[key]
