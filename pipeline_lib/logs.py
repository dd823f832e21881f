"""One logging setup for every job and command: readable text by default, JSON lines as an option,
and a filter that redacts secrets from every record before any handler sees it."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from pipeline_lib.redaction import redact

LOGGER_NAME = "xact"


class RedactingFilter(logging.Filter):
    """Renders each record's message once and redacts it, so no handler can print a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            payload["exception"] = record.exc_text
        for key in ("job", "batch_id"):
            if hasattr(record, key):
                payload[key] = getattr(record, key)
        return json.dumps(payload, default=str)


def setup_logging(level: str = "INFO", fmt: str = "text", stream=None) -> logging.Logger:
    """Configure the `xact` logger tree; idempotent, so jobs and tests may call it again."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
    return logger


def get_logger(name: str) -> logging.Logger:
    """A child of the `xact` logger, e.g. get_logger("ingest") -> xact.ingest."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}")


# pyspark's worker daemon (pyspark/daemon.py) prints this, then a traceback, when its last flush to
# the executor fails; a stop that cancels a task mid-flight closes that socket, so the flush meets a
# closed pipe. The batch is abandoned and runs again: nothing is lost, and the trace says nothing.
DAEMON_FLUSH_HEADER = "PySpark daemon failed to flush the output to the worker process:"
_PEER_GONE = ("BrokenPipeError", "ConnectionResetError")
_MAX_HELD_LINES = 64  # a longer block is not the daemon's: forward it as it is
_TRACEBACK = "Traceback (most recent call last):"


class StopNoiseFilter:
    """Forwards the lines a Spark JVM and its Python workers print, less known noise.

    Drops lines that start with one of `noise`, and drops a whole traceback whose frames are all
    in pyspark's daemon.py and which ends in a closed peer (BrokenPipeError, ConnectionResetError),
    with the daemon's header line and, when it has one, the blank line after it. Every other line
    passes, in order: a held block that turns out to be anything else is forwarded whole. `feed`
    returns the lines to write now.
    """

    def __init__(self, noise: tuple[str, ...] = ()):
        self.noise = noise
        self.held: list[str] = []
        self.in_traceback = False
        self.frames = 0
        self.after_drop = False

    def feed(self, line: str) -> list[str]:
        if self.after_drop:  # the blank line after the daemon's header and trace
            self.after_drop = False
            if not line.strip("\r\n"):
                return []
        if not self.held:
            return self._start(line)
        text = line.rstrip("\r\n")
        if not self.in_traceback:  # after the header: only the daemon's traceback may follow
            if text == _TRACEBACK:
                return self._hold(line, traceback=True)
            return self.flush() + self._start(line)
        if text.startswith("  File "):
            if "pyspark" in text and "daemon.py" in text:
                self.frames += 1
                return self._hold(line)
            return self.flush() + [line]
        if self.frames and (text.startswith("    ") or (text.startswith("  ") and set(text.strip()) <= set("^~"))):
            return self._hold(line)  # a frame's source line, or its caret marks
        if self.frames and text.startswith(_PEER_GONE):
            # the daemon's trace at a closed peer: dropped whole (its print() adds a blank line)
            self.after_drop = self.held[0].rstrip("\r\n") == DAEMON_FLUSH_HEADER
            self.flush()
            return []
        return self.flush() + self._start(line)

    def flush(self) -> list[str]:
        """The held lines, to write as they are (at a block that is not the daemon's, or at the end)."""
        held, self.held, self.in_traceback, self.frames = self.held, [], False, 0
        return held

    def _start(self, line: str) -> list[str]:
        if line.startswith(self.noise):
            return []
        text = line.rstrip("\r\n")
        if text == DAEMON_FLUSH_HEADER:
            return self._hold(line)
        if text == _TRACEBACK:
            return self._hold(line, traceback=True)
        return [line]

    def _hold(self, line: str, traceback: bool = False) -> list[str]:
        self.held.append(line)
        self.in_traceback = self.in_traceback or traceback
        return self.flush() if len(self.held) > _MAX_HELD_LINES else []
