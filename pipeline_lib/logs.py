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
