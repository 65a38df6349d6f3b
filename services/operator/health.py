"""The operator's identity, its login to the Kubernetes API, and its probes.

Identity: kopf names the running operator (peering, annotations) with `kopf.operator(identity=...)`; when
none is given it calls `getpass.getuser()` (kopf/_core/engines/peering.py, detect_own_id), which raises
KeyError for a UID without a passwd entry, as in the image (USER 10001). `operator_identity` never looks
the user up: POD_ID (the chart sets it from the pod's metadata.name through the downward API), else the
host name (the container's name under Docker) and the process id.

Login: kopf's own handlers, the pod's service account first, else a kubeconfig (KUBECONFIG or
~/.kube/config); kopf.login_via_client, its default, would need the 120 MB `kubernetes` client for
nothing else.

Probes (one small aiohttp server in the operator's event loop, OPERATOR_HEALTH_HOST:OPERATOR_HEALTH_PORT):
  /healthz  200 while the event loop runs. Never depends on the Kubernetes API or the database, so a
            liveness probe does not restart the operator for an outage it cannot fix.
  /readyz   200 when the Kubernetes API answers a list of StreamTables in the watched namespace (the call
            the operator lives on), 503 with "cannot reach the Kubernetes API: ..." (or "not logged in",
            or the API's refusal, e.g. 403) otherwise. Checked at most every READY_CACHE_S seconds.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import ssl
import tempfile
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import kopf
from aiohttp import web

from services.operator.spec import GROUP, PLURAL, VERSION

READY_CACHE_S = 2.0
API_TIMEOUT_S = 3.0


def operator_identity(env: dict[str, str] | None = None) -> str:
    """POD_ID when set (the pod's name), else `<hostname>/<pid>`: no passwd lookup."""
    env = os.environ if env is None else env
    pod = (env.get("POD_ID") or "").strip()
    if pod:
        return pod
    return f"{socket.gethostname()}/{os.getpid()}"


def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """kopf's own minimal login handlers: the service account in a pod, else the kubeconfig."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


class ApiProbe:
    """Remembers the credentials kopf logged in with and asks the API, on demand, whether it answers."""

    def __init__(self, namespace: str, *, login_handler: Callable[..., Any] = login):
        self.namespace = namespace
        self._login = login_handler
        self.info: kopf.ConnectionInfo | None = None
        self._checked_at = 0.0
        self._result: tuple[bool, str] = (False, "not logged in to the Kubernetes API yet")
        self._lock = asyncio.Lock()

    def remember(self, info: kopf.ConnectionInfo) -> None:
        """The credentials kopf logged in with (when another login handler does the logging in)."""
        self.info = info

    async def login_handler(self, **kwargs: Any) -> Any:
        """Registered as the kopf login handler: kopf calls it at start and again on a 401."""
        info = self._login(**kwargs)
        if asyncio.iscoroutine(info):
            info = await info
        self.info = info
        return info

    async def ready(self) -> tuple[bool, str]:
        async with self._lock:
            if time.monotonic() - self._checked_at >= READY_CACHE_S:
                self._result = await self._check()
                self._checked_at = time.monotonic()
            return self._result

    async def _check(self) -> tuple[bool, str]:
        info = self.info
        if info is None or not info.server:
            return False, "not logged in to the Kubernetes API yet"
        url = f"{info.server.rstrip('/')}/apis/{GROUP}/{VERSION}/namespaces/{self.namespace}/{PLURAL}"
        headers = {"Accept": "application/json"}
        auth = None
        if info.token:
            headers["Authorization"] = f"{info.scheme or 'Bearer'} {info.token}"
        elif info.username and info.password:
            auth = aiohttp.BasicAuth(info.username, info.password)
        try:
            ssl_context = _ssl_context(info) if url.startswith("https:") else None
            timeout = aiohttp.ClientTimeout(total=API_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=bool(info.trust_env)) as session,
                session.get(
                    url, params={"limit": "1"}, headers=headers, auth=auth, ssl=ssl_context, proxy=info.proxy_url
                ) as response,
            ):
                if response.status == 200:
                    return True, f"the Kubernetes API at {info.server} answers"
                reason = (await response.text())[:200]
                return (
                    False,
                    f"the Kubernetes API at {info.server} refused to list {PLURAL}: {response.status} {reason}",
                )
        except (aiohttp.ClientError, TimeoutError, OSError, ssl.SSLError, ValueError) as exc:
            detail = str(exc) or type(exc).__name__
            return False, f"cannot reach the Kubernetes API at {info.server}: {detail}"


def _ssl_context(info: kopf.ConnectionInfo) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=info.ca_path)
    if info.ca_data:
        context.load_verify_locations(cadata=_pem(info.ca_data))
    if info.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if info.certificate_path or info.certificate_data:
        with tempfile.TemporaryDirectory() as tmp:  # ssl loads client keys from files only
            cert = info.certificate_path or _write(tmp, "cert.pem", info.certificate_data)
            key = info.private_key_path or (
                _write(tmp, "key.pem", info.private_key_data) if info.private_key_data else None
            )
            context.load_cert_chain(cert, key)
    return context


def _pem(data: str | bytes) -> str:
    raw = data if isinstance(data, bytes) else data.encode()
    return raw.decode() if raw.lstrip().startswith(b"-----") else base64.b64decode(raw).decode()


def _write(directory: str, name: str, data: str | bytes | None) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="ascii") as handle:
        handle.write(_pem(data or b""))
    return path


async def serve_probes(host: str, port: int, probe: ApiProbe, started: float) -> web.AppRunner:
    """Starts /healthz and /readyz on host:port in the running loop; the caller cleans the runner up."""

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "uptime_s": round(time.monotonic() - started, 1)})

    async def readyz(_request: web.Request) -> web.Response:
        ok, detail = await probe.ready()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "detail": detail}, status=200 if ok else 503
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
