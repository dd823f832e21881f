"""A StreamingQueryListener that logs `format_progress` once per micro-batch for each named query."""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from pipeline_lib.logs import get_logger
from pipeline_lib.progress import format_progress

log = get_logger("progress")


class ProgressListener(StreamingQueryListener):
    def onQueryStarted(self, event) -> None:  # noqa: ANN001, N802 - Spark's callback names
        log.info("[%s] started (id %s)", event.name or "query", event.id)

    def onQueryProgress(self, event) -> None:  # noqa: ANN001, N802
        progress = json.loads(event.progress.json)
        log.info(format_progress(progress.get("name") or "query", progress))

    def onQueryIdle(self, event) -> None:  # noqa: ANN001, N802
        pass

    def onQueryTerminated(self, event) -> None:  # noqa: ANN001, N802
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)
        else:
            log.info("query %s stopped", event.id)


_installed: set[int] = set()


def install_progress_listener(spark: SparkSession) -> None:
    """Register the listener once per session."""
    key = id(spark)
    if key not in _installed:
        spark.streams.addListener(ProgressListener())
        _installed.add(key)
