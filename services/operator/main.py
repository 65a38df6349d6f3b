"""`python -m services.operator`: kopf in-process, standalone, watching one namespace."""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf

from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen
from services.operator.config import OperatorConfig, load_config
from services.operator.handlers import Databases, build_registry, make_settings
from services.operator.health import ApiProbe, login, operator_identity, serve_probes


class OwnedSessions:
    """The Kubernetes API sessions, owned by us rather than by kopf's credentials vault.

    What made the process test flaky: when the API server closes an idle keep-alive connection, kopf's next
    request on it fails with "TCP closed; will re-authenticate", and kopf invalidates the credentials, logs
    in again and builds a new `APIContext` with a new `aiohttp.ClientSession` (kopf 1.45,
    `Vault.invalidate`/`Vault.extended`). A session built or used around the shutdown was then left unclosed,
    and aiohttp logged "Unclosed connector" when the interpreter collected it, after our last log line.
    Here the login hands kopf a session we create (`kopf.AiohttpSession`), every re-login included, and
    `close()` closes all of them after kopf returned, on the still-running event loop.
    """

    def __init__(self, on_login: Callable[[kopf.ConnectionInfo], None] | None = None) -> None:
        self.sessions: list[aiohttp.ClientSession] = []
        self.on_login = on_login

    async def login(self, **kwargs: Any) -> kopf.AiohttpSession | None:
        # async: kopf runs it on the operator's event loop, where the session must live (a sync login would run
        # in a worker thread without a loop).
        info = login(**kwargs)  # kopf's own: the pod's service account in a cluster, else the kubeconfig
        if info is None:
            return None
        if self.on_login is not None:
            self.on_login(info)
        with warnings.catch_warnings():  # as kopf's own APIContext does for its credentials
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="kopf")
            auth = info.as_aiohttp_basic_auth()
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=info.as_ssl_context()),
            headers=info.as_http_headers(),
            auth=auth,
            proxy=info.proxy_url,
            trust_env=info.trust_env,
        )
        self.sessions.append(session)
        return kopf.AiohttpSession(
            server=info.server,
            default_namespace=info.default_namespace,
            expiration=info.expiration,
            priority=info.priority,
            aiohttp_session=session,
        )

    async def close(self) -> None:
        for session in self.sessions:
            if not session.closed:
                await session.close()
        self.sessions.clear()


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
    # kopf logs in through our sessions (closed by us at shutdown); the readiness probe asks the API with
    # the same credentials.
    sessions = OwnedSessions(on_login=probe.remember)
    registry = build_registry(config, databases, login=sessions.login)
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
        asyncio.run(run(config, registry, probe, identity, sessions))
    finally:
        databases.close()
        log.info("operator stopped")
    return 0


async def run(
    config: OperatorConfig, registry: kopf.OperatorRegistry, probe: ApiProbe, identity: str, sessions: OwnedSessions
) -> None:
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
        await sessions.close()
        await runner.cleanup()
