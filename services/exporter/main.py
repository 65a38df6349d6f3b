"""Wiring: settings -> logging -> read-only pool -> collector + background analyses -> HTTP (/metrics,
/healthz, /readyz) until SIGTERM/SIGINT."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from services.common.cli import FatalError, stop_on_signals
from services.common.db import make_pool
from services.common.logs import setup_logging
from services.common.opsserver import OpsServer, create_ops_app
from services.common.settings import describe_conninfo
from services.exporter.analyses import AnalysesReader
from services.exporter.collector import PgTrickleCollector
from services.exporter.config import APPLICATION_NAME, ExporterConfig, load_config

SERVICE = "exporter"


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
    pool, analyses, _collector, app = build(config, stop)
    try:
        server = OpsServer(app, config.host, config.port).start()
    except OSError as exc:
        raise FatalError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
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
        log.info("exporter stopping")
        server.stop()
        pool.close(timeout=3)
        analyses.join(3)
    return 0
