"""JSON-lines logging to stderr, one object per line, level from LOG_LEVEL (default INFO).

Use `log.info("message", extra={"fields": {...}})` to attach structured fields.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from services.common.settings import env_choice

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup_logging(service: str) -> logging.Logger:
    level = env_choice("LOG_LEVEL", "INFO", LEVELS + tuple(lv.lower() for lv in LEVELS)).upper()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Library chatter (connection pool retries) is useful only when debugging.
    logging.getLogger("psycopg.pool").setLevel(max(logging.getLevelName(level), logging.WARNING))
    return logging.getLogger(service)
