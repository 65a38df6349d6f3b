"""`python -m services.operator`: kopf in-process, standalone, watching one namespace."""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import aiohttp
import kopf

from services.common.logs import setup_logging
from services.operator.config import load_config
from services.operator.handlers import Databases, build_registry, make_settings


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

    def __init__(self) -> None:
        self.sessions: list[aiohttp.ClientSession] = []

    async def login(self, **kwargs: Any) -> kopf.AiohttpSession | None:
        # async: kopf runs it on the operator's event loop, where the session must live (a sync login would run
        # in a worker thread without a loop).
        info = kopf.login_via_client(**kwargs)  # the pod's service account in a cluster, else the kubeconfig
        if info is None:
            return None
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


async def _operate(config, registry: kopf.OperatorRegistry, sessions: OwnedSessions) -> None:
    try:
        # kopf installs SIGTERM/SIGINT handlers: a signal stops the watchers and handlers cleanly.
        await kopf.operator(
            registry=registry,
            settings=make_settings(),
            standalone=True,
            namespaces=[config.namespace],
            liveness_endpoint=f"http://{config.health_host}:{config.health_port}/healthz",
        )
    finally:
        await sessions.close()


def main() -> int:
    config = load_config()
    log = setup_logging("operator")
    # kopf logs every handler run at INFO; keep its chatter at WARNING unless debugging.
    if config.log_level != "DEBUG":
        logging.getLogger("kopf").setLevel(logging.WARNING)
    databases = Databases(config)
    sessions = OwnedSessions()
    registry = build_registry(config, databases, login=sessions.login)
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
        asyncio.run(_operate(config, registry, sessions))
    finally:
        databases.close()
        log.info("operator stopped")
    return 0
