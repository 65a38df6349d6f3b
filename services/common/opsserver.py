"""The small HTTP server every background service exposes: /healthz, /readyz, /metrics (+ extra routes).

A Flask app served by werkzeug's threaded WSGI server in a daemon thread, so the service's main loop stays
in the main thread and owns signal handling. The dashboard, a real web app, uses gunicorn instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from flask import Blueprint, Flask, jsonify
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from werkzeug.exceptions import HTTPException
from werkzeug.serving import make_server

from services.common.httpguard import install_limits

log = logging.getLogger(__name__)

# A readiness check returns (ready, detail). It must be quick and never raise.
ReadinessCheck = Callable[[], tuple[bool, str]]


def create_ops_app(
    service: str,
    readiness: ReadinessCheck,
    *,
    registry: CollectorRegistry = REGISTRY,
    blueprints: Iterable[Blueprint] = (),
) -> Flask:
    app = Flask(service)
    app.json.sort_keys = False
    install_limits(app)  # 16 KiB bodies on every endpoint (413 as JSON)

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", service=service)

    @app.get("/readyz")
    def readyz():
        try:
            ready, detail = readiness()
        except Exception as exc:  # a broken check means "not ready", never a 500 with a trace
            log.exception("readiness check failed")
            ready, detail = False, f"readiness check failed: {exc.__class__.__name__}"
        return jsonify(ready=ready, detail=detail), (200 if ready else 503)

    @app.get("/metrics")
    def metrics():
        return generate_latest(registry), 200, {"Content-Type": CONTENT_TYPE_LATEST}

    for blueprint in blueprints:
        app.register_blueprint(blueprint)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.name, detail=exc.description), exc.code

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unhandled error in HTTP handler")
        return jsonify(error="Internal Server Error", detail="see the service log"), 500

    return app


class OpsServer:
    """Runs an ops app on host:port in a background thread; `stop()` shuts it down."""

    def __init__(self, app: Flask, host: str, port: int):
        self._server = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self._server.server_port  # port 0 picks a free port (tests)
        self._thread = threading.Thread(target=self._server.serve_forever, name="ops-http", daemon=True)

    def start(self) -> OpsServer:
        self._thread.start()
        log.info("HTTP listening", extra={"fields": {"address": f"{self.host}:{self.port}"}})
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._thread.join(timeout=5)
