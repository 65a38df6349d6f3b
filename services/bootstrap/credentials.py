"""python -m services.bootstrap.credentials: create the chart's credentials Secret once, inside the cluster.

The Helm chart never renders passwords (a render without cluster access, as Argo CD does, would produce new ones
each time and they would stop matching the database volume). Instead this one-shot Job creates the Secret
CREDENTIALS_NAME with four random passwords if it does not exist yet, and leaves an existing one exactly as it
is (HTTP 409 from the API server: nothing is read, nothing is overwritten). The Secret belongs to no Helm release
and no Argo CD application, so no upgrade, sync or uninstall ever touches it.

It talks to the Kubernetes API with the pod's ServiceAccount token over HTTPS (the standard library only; no
kubectl): POST /api/v1/namespaces/<ns>/secrets. Its Role allows `create` on Secrets and nothing else.

Environment:
  CREDENTIALS_NAME        name of the Secret to create (required)
  CREDENTIALS_NAMESPACE   namespace (default: the pod's, from the ServiceAccount mount)
  CREDENTIALS_LABELS      JSON object of labels for the Secret (default {})
  KUBERNETES_API_URL      API server URL (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)
  KUBERNETES_SA_DIR       ServiceAccount mount (default /var/run/secrets/kubernetes.io/serviceaccount)
Exit 0 when the Secret exists afterwards (created or already there), 2 on bad configuration, 1 when the API
server refuses.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from services.common.cli import FatalError, run_main
from services.common.settings import ConfigError

KEYS = ("postgres-password", "demo-password", "demo-writer-password", "demo-reader-password")
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TIMEOUT = 15.0


def new_password() -> str:
    """32 URL-safe characters from the OS's CSPRNG (about 190 bits)."""
    return secrets.token_urlsafe(24)


def secret_manifest(name: str, namespace: str, labels: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels,
            "annotations": {"pgtrickle.io/created-by": "credentials-job (never updated: must match the volume)"},
        },
        "type": "Opaque",
        "data": {key: base64.b64encode(new_password().encode()).decode() for key in KEYS},
    }


def _labels(env) -> dict[str, str]:
    raw = env.get("CREDENTIALS_LABELS") or "{}"
    try:
        labels = json.loads(raw)
    except ValueError as exc:
        raise ConfigError(f"CREDENTIALS_LABELS is not a JSON object: {exc}") from None
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        raise ConfigError("CREDENTIALS_LABELS must be a JSON object of string values")
    return labels


def ensure_secret(environ=None) -> str:
    """Create the Secret unless it exists; returns "created" or "exists"."""
    env = os.environ if environ is None else environ
    name = env.get("CREDENTIALS_NAME", "")
    if not name:
        raise ConfigError("CREDENTIALS_NAME is not set (the name of the Secret to create)")
    sa_dir = Path(env.get("KUBERNETES_SA_DIR", SA_DIR))
    namespace = env.get("CREDENTIALS_NAMESPACE") or _read(sa_dir / "namespace", "CREDENTIALS_NAMESPACE")
    url = env.get("KUBERNETES_API_URL")
    if not url:
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT", "443")
        if not host:
            raise ConfigError("KUBERNETES_API_URL is not set and there is no KUBERNETES_SERVICE_HOST (not in a pod?)")
        url = f"https://[{host}]:{port}" if ":" in host else f"https://{host}:{port}"
    parsed = urllib.parse.urlsplit(url)
    loopback = parsed.hostname in {"127.0.0.1", "::1", "localhost"}
    if parsed.scheme != "https" and not (parsed.scheme == "http" and loopback):
        raise ConfigError(f"KUBERNETES_API_URL={url!r} must be https:// (plain http only to a loopback address)")
    token = _read(sa_dir / "token", "KUBERNETES_SA_DIR")
    context = None
    if url.startswith("https://"):
        ca = sa_dir / "ca.crt"
        context = ssl.create_default_context(cafile=str(ca)) if ca.exists() else ssl.create_default_context()
    body = json.dumps(secret_manifest(name, namespace, _labels(env)))
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked above
        f"{url.rstrip('/')}/api/v1/namespaces/{namespace}/secrets",
        data=body.encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT, context=context) as response:  # noqa: S310
            response.read()
        return "created"
    except urllib.error.HTTPError as exc:
        if exc.code == 409:  # AlreadyExists: keep it exactly as it is
            return "exists"
        detail = exc.read().decode(errors="replace")[:300]
        raise FatalError(
            f"the API server refused to create Secret {namespace}/{name}: HTTP {exc.code} {detail}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise FatalError(f"cannot reach the Kubernetes API at {url}: {exc}") from None


def _read(path: Path, variable: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ConfigError(f"cannot read {path} ({exc.strerror}); set {variable}") from None


def main() -> int:
    name = os.environ.get("CREDENTIALS_NAME", "")
    outcome = ensure_secret()
    if outcome == "created":
        print(f"credentials: created Secret {name} with new random passwords", flush=True)
    else:
        print(f"credentials: Secret {name} already exists; left unchanged", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main, "credentials")
