"""Wiring: settings -> logging -> read-only pool -> collector + background analyses -> HTTP (/metrics,
/healthz, /readyz) until SIGTERM/SIGINT."""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry

from services.common.cli import stop_on_signals
from services.common.db import make_pool
from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen, listen_error
from services.common.opsserver import OpsServer, create_ops_app
from services.common.settings import describe_conninfo
from services.exporter.analyses import AnalysesReader
from services.exporter.collector import PgTrickleCollector
from services.exporter.config import APPLICATION_NAME, ExporterConfig, load_config

SERVICE = "exporter"
STOP_DEADLINE_SECONDS = 5.0  # SIGTERM -> exit, measured from the signal, whatever the database does


def build(config: ExporterConfig, stop: threading.Event):
    """Pool, analyses reader, collector and the Flask app serving them (nothing started)."""
    pool = make_pool(
        config.conninfo,
        application_name=APPLICATION_NAME,
        statement_timeout_ms=int(config.scrape_timeout * 1000),
        min_size=1,
        max_size=3,
        read_only=True,
    )
    analyses = AnalysesReader(pool, config.advisor_interval, stop)
    collector = PgTrickleCollector(pool, config.scenario, config.scrape_timeout, analyses)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    app = create_ops_app(SERVICE, collector.ready, registry=registry)
    return pool, analyses, collector, app


def main() -> int:
    config = load_config()
    log = setup_logging(SERVICE)
    stop = threading.Event()
    stop_on_signals(stop, log)
    # werkzeug prints its own two lines and exits 1 on a busy port: check first, one line naming the variable.
    ensure_can_listen(config.host, config.port, host_var="EXPORTER_HOST", port_var="EXPORTER_PORT")
    pool, analyses, _collector, app = build(config, stop)
    try:
        server = OpsServer(app, config.host, config.port).start()
    except OSError as exc:  # one line naming the variable to change, exit code 2
        pool.close(timeout=0.1)
        raise listen_error(exc, config.host, config.port, host_var="EXPORTER_HOST", port_var="EXPORTER_PORT") from None
    log.info(
        "exporter started",
        extra={
            "fields": {
                "database": describe_conninfo(config.conninfo),
                "scenario": config.scenario,
                "scrape_timeout_s": config.scrape_timeout,
                "advisor_interval_s": config.advisor_interval,
            }
        },
    )
    pool.open(wait=False)
    analyses.start()
    try:
        stop.wait()
    finally:
        # Every step gets what is left of the 5 s budget; threads stuck on a frozen database are daemons.
        stop_at = time.monotonic()
        log.info("exporter stopping")
        server.stop()
        pool.close(timeout=max(0.1, min(2.0, stop_at + STOP_DEADLINE_SECONDS - 2.0 - time.monotonic())))
        analyses.join(max(0.0, stop_at + STOP_DEADLINE_SECONDS - 1.0 - time.monotonic()))
    return 0
