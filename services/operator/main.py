"""`python -m services.operator`: kopf in-process, standalone, watching one namespace."""

from __future__ import annotations

import asyncio
import logging

import kopf

from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen
from services.operator.config import load_config
from services.operator.handlers import Databases, build_registry, make_settings


def main() -> int:
    config = load_config()
    # kopf's health server would fail deep inside aiohttp with a long traceback: one line naming the variable.
    ensure_can_listen(
        config.health_host, config.health_port, host_var="OPERATOR_HEALTH_HOST", port_var="OPERATOR_HEALTH_PORT"
    )
    log = setup_logging("operator")
    # kopf logs every handler run at INFO; keep its chatter at WARNING unless debugging.
    if config.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    databases = Databases(config)
    registry = build_registry(config, databases)
    log.info(
        "operator starting",
        extra={
            "fields": {
                "namespace": config.namespace,
                "health": f"http://{config.health_host}:{config.health_port}/healthz",
                "sync_interval_s": config.sync_interval,
                "database": config.default_database,
            }
        },
    )
    try:
        # kopf installs SIGTERM/SIGINT handlers: a signal stops the watchers and handlers cleanly.
        asyncio.run(
            kopf.operator(
                registry=registry,
                settings=make_settings(),
                standalone=True,
                namespaces=[config.namespace],
                liveness_endpoint=f"http://{config.health_host}:{config.health_port}/healthz",
            )
        )
    finally:
        databases.close()
        log.info("operator stopped")
    return 0
