"""Starting a job's query, and a listener that logs `format_progress` once per micro-batch."""

from __future__ import annotations

import json

from pyspark.sql import SparkSession
from pyspark.sql.streaming import DataStreamWriter, StreamingQuery, StreamingQueryListener

from pipeline_lib.config import Settings
from pipeline_lib.logs import get_logger
from pipeline_lib.progress import format_progress

log = get_logger("progress")


class ProgressListener(StreamingQueryListener):
    def onQueryStarted(self, event) -> None:
        log.info("[%s] started (id %s)", event.name or "query", event.id)

    def onQueryProgress(self, event) -> None:
        progress = json.loads(event.progress.json)
        log.info(format_progress(progress.get("name") or "query", progress))

    def onQueryIdle(self, event) -> None:
        pass

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)
        else:
            log.info("query %s stopped", event.id)


def start_query(writer: DataStreamWriter, settings: Settings, available_now: bool) -> StreamingQuery:
    """Start a job's query: drain what is there and stop (`available_now`), or every trigger interval."""
    if available_now:
        return writer.trigger(availableNow=True).start()
    return writer.trigger(processingTime=f"{settings.streaming.trigger_interval_seconds} seconds").start()


_installed: set[int] = set()


def install_progress_listener(spark: SparkSession) -> None:
    """Register the listener once per session."""
    key = id(spark)
    if key not in _installed:
        spark.streams.addListener(ProgressListener())
        _installed.add(key)
