"""`python -m services.common.healthcheck`: the images' HEALTHCHECK. Asks the running service (DEMO_SERVICE)
on 127.0.0.1 at the port its own variable sets (so it follows a changed port, e.g. with host networking):
/healthz for the generator, dashboard and exporter; /readyz for the operator, whose /healthz stays up while
the Kubernetes API is unreachable (services/operator/health.py) and whose container should then not say
healthy. Exit 0 healthy, 1 not (what Docker expects); stdlib only."""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

# service: (port variable, default port, path)
PROBES = {
    "generator": ("GENERATOR_HTTP_PORT", 8000, "/healthz"),
    "dashboard": ("DASHBOARD_PORT", 8080, "/healthz"),
    "exporter": ("EXPORTER_PORT", 9188, "/healthz"),
    "operator": ("OPERATOR_HEALTH_PORT", 8081, "/readyz"),
}


def url_for(env: dict[str, str]) -> str | None:
    probe = PROBES.get(env.get("DEMO_SERVICE", ""))
    if probe is None:
        return None
    variable, default, path = probe
    port = env.get(variable, "").strip() or str(default)
    return f"http://127.0.0.1:{port}{path}"


def main() -> int:
    url = url_for(dict(os.environ))
    if url is None:
        print(f"healthcheck: DEMO_SERVICE={os.environ.get('DEMO_SERVICE', '')!r} has no HTTP probe", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(url, timeout=4) as response:  # noqa: S310 - a fixed http://127.0.0.1 URL
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
