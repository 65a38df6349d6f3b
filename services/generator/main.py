"""Wiring: settings -> logging -> scenario -> engine + HTTP server (ops endpoints and control API)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence

from services.common.cli import FatalError, stop_on_signals
from services.common.logs import setup_logging
from services.common.opsserver import OpsServer, create_ops_app
from services.generator.config import parse_config
from services.generator.control import control_blueprint
from services.generator.engine import Engine
from services.generator.scenarios import load_scenario

SERVICE = "generator"
STOP_GRACE_SECONDS = 3.0  # then the statement in flight is cancelled
STOP_DEADLINE_SECONDS = 4.5  # then the process exits (the open transaction dies with the connection)


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
    """Makes sure a stop request ends the process within 5 s, even if the database hangs."""
    engine.stop.wait()
    if finished.wait(STOP_GRACE_SECONDS):
        return
    log.warning("stop is taking long; cancelling the statement in flight")
    engine.cancel_inflight()
    if finished.wait(STOP_DEADLINE_SECONDS - STOP_GRACE_SECONDS):
        return
    log.error("stop deadline reached; exiting without waiting for the database")
    logging.shutdown()
    os._exit(0)


def main(argv: Sequence[str] | None = None) -> int:
    stop = threading.Event()
    config, engine, app = build(argv, stop)
    os.environ["LOG_LEVEL"] = config.log_level  # the flag wins over the variable
    log = setup_logging(SERVICE)
    stop_on_signals(stop, log)
    if not config.seed_given:
        log.info("no GENERATOR_SEED given; using a random seed", extra={"fields": {"seed": config.seed}})
    try:
        server = OpsServer(app, config.http_host, config.http_port).start()
    except OSError as exc:
        raise FatalError(f"cannot listen on {config.http_host}:{config.http_port}: {exc.strerror or exc}") from None
    finished = threading.Event()
    threading.Thread(target=_watchdog, args=(engine, finished, log), name="stop-watchdog", daemon=True).start()
    try:
        engine.run()
    finally:
        finished.set()
        server.stop()
    return 0
