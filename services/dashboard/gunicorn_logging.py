"""gunicorn's logger, speaking our JSON lines: error log and access log on stderr, one object per line."""

from __future__ import annotations

import logging
import sys

from gunicorn.glogging import Logger

from services.common.logs import JsonFormatter

SERVICE = "dashboard"


class JsonLogger(Logger):
    def setup(self, cfg) -> None:
        self.loglevel = self.LOG_LEVELS.get(cfg.loglevel.lower(), logging.INFO)
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter(SERVICE))
        for log, level in ((self.error_log, self.loglevel), (self.access_log, logging.INFO)):
            log.handlers[:] = [handler]
            log.setLevel(level)
            log.propagate = False

    def access(self, resp, req, environ, request_time) -> None:
        if not self.cfg.accesslog:  # DASHBOARD_ACCESS_LOG=false (make preview's default): a quiet terminal
            return
        wsgi = environ  # the request's WSGI environ (not the process environment)
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        fields = {
            "method": wsgi.get("REQUEST_METHOD"),
            "path": wsgi.get("PATH_INFO"),
            "status": int(status) if str(status).isdigit() else status,
            "duration_ms": round(request_time.total_seconds() * 1000, 2),
            "bytes": getattr(resp, "sent", None),
            "remote": wsgi.get("REMOTE_ADDR"),
            "user_agent": wsgi.get("HTTP_USER_AGENT"),
        }
        self.access_log.info("request", extra={"fields": fields})
