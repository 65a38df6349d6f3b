"""Opt-in end-to-end suite on a real kind cluster: `make test-kind` (marker k8s, never part of `make test`).

It builds the images, creates a throw-away kind cluster (own name, free localhost ports), installs the chart
with `make kind-up` (helm --wait --wait-for-jobs: the bootstrap is an ordinary Job), then checks that the
dashboard's /api/snapshot serves stream-table rows, that the exporter reports refreshes, and that `helm test`
passes, then that `helm upgrade` to the fraud scenario keeps the volume and serves fraud; it uninstalls and
deletes the cluster at the end. Where Docker, kind, helm or kubectl is missing it skips and says which.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request

import pytest
import yaml

from devenv.postgres import free_port
from tests.support import ROOT, missing_prerequisite

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

TOOLS = ("docker", "kind", "helm", "kubectl", "make")
REFRESH_METRIC = re.compile(r"^(pg_trickle_refreshes_total)(\{[^}]*\})?\s+([0-9.eE+-]+)$", re.MULTILINE)


def _require_cluster_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        missing_prerequisite(f"the kind suite needs {', '.join(missing)} on PATH (Docker engine, kind, helm, kubectl)")
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    if info.returncode != 0:
        missing_prerequisite(f"no Docker engine answers `docker info`: {info.stderr.strip()[:200]}")


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.status, response.read().decode()


def _wait_for(check, what: str, timeout: float = 300.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # connection refused while pods start
            last = exc
        time.sleep(3)
    pytest.fail(f"timed out waiting for {what} (last error: {last})")


@pytest.fixture(scope="module")
def kind_release(tmp_path_factory):
    _require_cluster_tools()
    cluster = f"pgtd-test-{os.getpid()}"
    namespace = "pgtd-test"
    ports = {30080: free_port(), 30188: free_port(), 30800: free_port()}
    config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    for mapping in config["nodes"][0]["extraPortMappings"]:
        mapping["hostPort"] = ports[mapping["containerPort"]]
    config_path = tmp_path_factory.mktemp("kind") / "kind-config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    make_vars = [f"KIND_CLUSTER={cluster}", f"KIND_CONFIG={config_path}", f"NAMESPACE={namespace}"]
    make_vars.append("SCENARIO=ecommerce")
    try:
        subprocess.run(["make", "kind-up", *make_vars], cwd=ROOT, check=True, timeout=1500)
        yield {
            "context": f"kind-{cluster}",
            "namespace": namespace,
            "dashboard": f"http://127.0.0.1:{ports[30080]}",
            "exporter": f"http://127.0.0.1:{ports[30188]}",
            "make_vars": [v for v in make_vars if not v.startswith("SCENARIO=")],
        }
    finally:
        subprocess.run(
            ["helm", "uninstall", "demo", "-n", namespace, "--kube-context", f"kind-{cluster}", "--wait"],
            cwd=ROOT,
            timeout=300,
            check=False,
        )
        subprocess.run(["make", "kind-down", f"KIND_CLUSTER={cluster}"], cwd=ROOT, timeout=300, check=False)


def _has_rows(node) -> bool:
    """True when the JSON holds a non-empty list of objects somewhere (a stream table's rows)."""
    if isinstance(node, list):
        return any(isinstance(item, dict) for item in node) or any(_has_rows(item) for item in node)
    if isinstance(node, dict):
        return any(_has_rows(value) for value in node.values())
    return False


def test_dashboard_api_has_data(kind_release):
    def has_rows():
        status, body = _get(kind_release["dashboard"] + "/api/snapshot")
        return status == 200 and _has_rows(json.loads(body))

    assert _wait_for(has_rows, "the dashboard's /api/snapshot to return stream-table rows")


def test_exporter_reports_refreshes(kind_release):
    def refreshed():
        status, body = _get(kind_release["exporter"] + "/metrics")
        values = [float(m[3]) for m in REFRESH_METRIC.finditer(body)]
        return status == 200 and any(v > 0 for v in values)

    assert _wait_for(refreshed, "a pg_trickle refresh counter above 0 on the exporter")


def test_helm_test_passes(kind_release):
    result = subprocess.run(
        ["helm", "test", "demo", "-n", kind_release["namespace"], "--kube-context", kind_release["context"]],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _pvc_uids(kind_release) -> set[str]:
    result = subprocess.run(
        ["kubectl", "--context", kind_release["context"], "-n", kind_release["namespace"], "get", "pvc", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return {item["metadata"]["uid"] for item in json.loads(result.stdout)["items"]}


def test_switching_scenario_with_helm_upgrade_keeps_the_volume(kind_release):
    """Last (it changes the release): `SCENARIO=fraud make kind-up` is `helm upgrade -f values-fraud.yaml`; the
    new bootstrap Job adds fraud_demo to the same volume and the services come back serving the fraud scenario."""
    volumes = _pvc_uids(kind_release)
    assert volumes, "the StatefulSet has a PersistentVolumeClaim"
    upgrade = ["make", "kind-up", *kind_release["make_vars"], "SCENARIO=fraud"]
    subprocess.run(upgrade, cwd=ROOT, check=True, timeout=1500)

    def serves_fraud():
        status, body = _get(kind_release["dashboard"] + "/api/snapshot")
        snapshot = json.loads(body)
        return status == 200 and snapshot.get("scenario", {}).get("name") == "fraud" and _has_rows(snapshot)

    assert _wait_for(serves_fraud, "the dashboard to serve the fraud scenario after the upgrade")
    assert _pvc_uids(kind_release) == volumes, "the upgrade kept the database volume"
