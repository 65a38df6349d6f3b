"""Wiring: settings -> logging -> scenario -> engine + HTTP server (ops endpoints and control API)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence

from services.common.cli import stop_on_signals
from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen, listen_error
from services.common.opsserver import OpsServer, create_ops_app
from services.generator.config import parse_config
from services.generator.control import control_blueprint
from services.generator.engine import Engine
from services.generator.scenarios import load_scenario

SERVICE = "generator"
STOP_GRACE_SECONDS = 2.5  # after the signal: then the statement in flight is cancelled
STOP_DEADLINE_SECONDS = 4.0  # after the signal: then the process exits (the open transaction dies with it)


def build(argv: Sequence[str] | None = None, stop: threading.Event | None = None):
    """Settings, scenario and engine, plus the Flask app serving them (no thread started)."""
    config = parse_config(argv)
    scenario = load_scenario(config.scenario, config.seed)
    engine = Engine(config, scenario, stop or threading.Event())
    app = create_ops_app(
        SERVICE, engine.readiness, registry=engine.metrics.registry, blueprints=[control_blueprint(engine)]
    )
    return config, engine, app


def _watchdog(engine: Engine, finished: threading.Event, log: logging.Logger) -> None:
    """Makes sure a stop request ends the process within 5 s of the signal, even if the database hangs.

    Both deadlines are measured from the moment the stop was requested; the cancel request runs in its own
    thread, because sending it to a frozen server blocks too (it used to take the budget with it: 5.6 s).
    """
    engine.stop.wait()
    stop_at = time.monotonic()
    if finished.wait(STOP_GRACE_SECONDS):
        return
    log.warning("stop is taking long; cancelling the statement in flight")
    threading.Thread(target=engine.cancel_inflight, name="stop-cancel", daemon=True).start()
    if finished.wait(max(0.0, stop_at + STOP_DEADLINE_SECONDS - time.monotonic())):
        return
    log.error("stop deadline reached; exiting without waiting for the database")
    logging.shutdown()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    stop = threading.Event()
    config, engine, app = build(argv, stop)
    # werkzeug prints two lines and exits 1 on a busy port: check first (before any log line), one line instead.
    ensure_can_listen(
        config.http_host, config.http_port, host_var="GENERATOR_HTTP_HOST", port_var="GENERATOR_HTTP_PORT"
    )
    os.environ["LOG_LEVEL"] = config.log_level  # the flag wins over the variable
    log = setup_logging(SERVICE)
    stop_on_signals(stop, log)
    if not config.seed_given:
        log.info("no GENERATOR_SEED given; using a random seed", extra={"fields": {"seed": config.seed}})
    try:
        server = OpsServer(app, config.http_host, config.http_port).start()
    except OSError as exc:  # one line naming the variable to change, exit code 2
        raise listen_error(
            exc, config.http_host, config.http_port, host_var="GENERATOR_HTTP_HOST", port_var="GENERATOR_HTTP_PORT"
        ) from None
    finished = threading.Event()
    threading.Thread(target=_watchdog, args=(engine, finished, log), name="stop-watchdog", daemon=True).start()
    try:
        engine.run()
    finally:
        finished.set()
        server.stop()
    return 0
