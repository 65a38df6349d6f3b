"""The dashboard's Flask app factory: `services.dashboard.app:create_app` (gunicorn loads it).

  GET /               the page (static JS renders it from /api/snapshot every 2 s)
  GET /api/snapshot   everything the page shows (computed at most once a second per process)
  GET /api/dag        the DAG: nodes with a layered layout, edges from pgt_dependencies
  GET /api/internals  pgt_status, refresh feed, refresh_efficiency, Refresh Mode Advisor, health checks
  GET /healthz        200 while the process serves
  GET /readyz         200 when the database answers and the scenario's stream tables exist, else 503
  /api/control...     generator controls (see controls.py)
Errors are JSON {"error", "detail"} with the right status; no database text or stack trace leaves.
"""

from __future__ import annotations

import logging

import psycopg
from flask import Flask, jsonify, render_template
from psycopg_pool import PoolTimeout
from werkzeug.exceptions import HTTPException

from services.common import pgtrickle
from services.common.db import first_line, make_pool
from services.common.deadline import DeadlineExceeded, run_within
from services.common.httpguard import install_limits
from services.common.scenarios import get_scenario
from services.dashboard.config import APPLICATION_NAME, DashboardConfig, load_config
from services.dashboard.controls import controls_blueprint
from services.dashboard.sampler import Sampler
from services.dashboard.scenarios import load_view
from services.dashboard.snapshot import SnapshotService

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}


def _configure_connection(conn: psycopg.Connection) -> None:
    # One consistent view of all stream tables and the catalog per snapshot.
    conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ


def create_app(config: DashboardConfig | None = None) -> Flask:
    config = config or load_config()
    scenario = get_scenario(config.scenario)
    app = Flask(__name__)
    app.json.sort_keys = False
    app.config["DASHBOARD"] = config
    install_limits(app)  # 16 KiB bodies on every endpoint (413 as JSON)
    pool = make_pool(
        config.conninfo,
        application_name=APPLICATION_NAME,
        statement_timeout_ms=config.statement_timeout_ms,
        min_size=1,
        max_size=max(2, min(config.threads, 8)),
        read_only=True,
        configure=_configure_connection,
    )
    pool.open(wait=False)
    view = load_view(config.scenario)
    # A snapshot and a readiness probe answer within the statement timeout measured on the client, even when
    # the server is frozen and enforces nothing (issue 14).
    deadline = config.statement_timeout_ms / 1000 + 0.25
    snapshots = SnapshotService(pool, scenario, view, controls=config.generator_url is not None, deadline=deadline)
    app.extensions["dashboard"] = snapshots
    # History is sampled in the background from the worker's start, not only while someone polls.
    app.extensions["dashboard_sampler"] = Sampler(snapshots, config.sample_interval).start()

    def _snapshot_part(part: str | None):
        snap = snapshots.get()
        if not snap.ok:
            return app.response_class(snap.body, status=503, mimetype="application/json")
        if part is None:
            return app.response_class(snap.body, mimetype="application/json")
        return jsonify({"generated_at": snap.payload["generated_at"], part: snap.payload[part]})

    @app.get("/")
    def index():
        return render_template(
            "index.html", scenario=scenario, burst_label=view.burst_label, controls=config.generator_url is not None
        )

    @app.get("/api/snapshot")
    def snapshot():
        return _snapshot_part(None)

    @app.get("/api/dag")
    def dag():
        return _snapshot_part("dag")

    @app.get("/api/internals")
    def internals():
        return _snapshot_part("internals")

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", service="dashboard")

    expected = frozenset(scenario.stream_table_names)

    @app.get("/readyz")
    def readyz():
        # Ready = the database answers AND the scenario's stream tables are there for demo_reader to read
        # (DESIGN.md): a reachable but not yet bootstrapped database is not ready.
        def read() -> set[str]:
            with pool.connection(timeout=1.0) as conn:
                return {st.pgt_name for st in pgtrickle.stream_tables(conn) if st.pgt_schema == "public"}

        try:
            present = run_within(deadline, read, name="dashboard-ready")
        except psycopg.OperationalError as exc:
            log.info("not ready", extra={"fields": {"error": first_line(exc)}})
            return jsonify(ready=False, detail="the database is unreachable"), 503
        except psycopg.Error as exc:  # no pgtrickle catalog (or no grant on it) yet
            log.info("not ready", extra={"fields": {"error": first_line(exc)}})
            return jsonify(ready=False, detail="the pgtrickle catalog cannot be read"), 503
        except (PoolTimeout, DeadlineExceeded) as exc:
            log.info("not ready", extra={"fields": {"error": first_line(exc)}})
            return jsonify(ready=False, detail="the database is unreachable"), 503
        missing = len(expected - present)
        if missing:
            detail = f"{missing} of the scenario's {len(expected)} stream tables are missing"
            return jsonify(ready=False, detail=detail), 503
        return jsonify(ready=True, detail=f"database reachable, {len(expected)} stream tables present")

    app.register_blueprint(controls_blueprint())

    @app.after_request
    def headers(response):
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if response.mimetype == "application/json":
            response.headers["Cache-Control"] = "no-store"
        return response

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=exc.name, detail=exc.description), exc.code

    @app.errorhandler(Exception)
    def unexpected_error(exc: Exception):
        log.exception("unhandled error in a request")
        return jsonify(error="Internal Server Error", detail="see the dashboard's log"), 500

    return app


def close_app(app: Flask) -> None:
    """Closes the app's connection pool (gunicorn's worker_exit hook and tests call it)."""
    sampler = app.extensions.get("dashboard_sampler")
    if sampler is not None:
        sampler.stop()
    service = app.extensions.get("dashboard")
    if service is not None:
        service.pool.close(timeout=2)
