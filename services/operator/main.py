"""`python -m services.operator`: kopf in-process, standalone, watching one namespace."""

from __future__ import annotations

import asyncio
import logging
import time

import kopf

from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen
from services.operator.config import OperatorConfig, load_config
from services.operator.handlers import Databases, build_registry, make_settings
from services.operator.health import ApiProbe, operator_identity, serve_probes


def main() -> int:
    config = load_config()
    # The probe server would fail deep inside aiohttp with a long traceback: one line naming the variable.
    ensure_can_listen(
        config.health_host, config.health_port, host_var="OPERATOR_HEALTH_HOST", port_var="OPERATOR_HEALTH_PORT"
    )
    log = setup_logging("operator")
    # kopf logs every handler run at INFO; keep its chatter at WARNING unless debugging.
    if config.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    databases = Databases(config)
    probe = ApiProbe(config.namespace)
    registry = build_registry(config, databases, login=probe.login_handler)
    identity = operator_identity()
    log.info(
        "operator starting",
        extra={
            "fields": {
                "namespace": config.namespace,
                "health": f"http://{config.health_host}:{config.health_port}/healthz",
                "ready": f"http://{config.health_host}:{config.health_port}/readyz",
                "identity": identity,
                "sync_interval_s": config.sync_interval,
                "database": config.default_database,
            }
        },
    )
    try:
        # kopf installs SIGTERM/SIGINT handlers: a signal stops the watchers and handlers cleanly.
        asyncio.run(run(config, registry, probe, identity))
    finally:
        databases.close()
        log.info("operator stopped")
    return 0


async def run(config: OperatorConfig, registry: kopf.OperatorRegistry, probe: ApiProbe, identity: str) -> None:
    """The probes (services/operator/health.py) and kopf, in one event loop."""
    runner = await serve_probes(config.health_host, config.health_port, probe, time.monotonic())
    try:
        await kopf.operator(
            registry=registry,
            settings=make_settings(),
            standalone=True,
            namespaces=[config.namespace],
            identity=identity,  # never kopf's getpass.getuser(): the image's UID has no passwd entry
        )
    finally:
        await runner.cleanup()
