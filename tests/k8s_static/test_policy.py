"""Security and hygiene policy over everything the chart renders (every values file and combination) and the
committed plain manifests: non-root, read-only root filesystem, no privilege escalation, drop ALL, seccomp
RuntimeDefault, resources and probes, pinned images, no password literal, app.kubernetes.io labels."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy_support import CHART, COMBINATIONS, component, containers, pod_spec, render_objects
from tests.support import ROOT

REQUIRED_LABELS = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/version",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
)
# registry/path:tag (tag not latest), optionally @sha256 digest
PINNED = re.compile(
    r"^[a-z0-9.\-/_]+(:[0-9]+)?/?[a-z0-9.\-/_]*:(?!latest$)[A-Za-z0-9_][A-Za-z0-9_.\-]*(@sha256:[0-9a-f]{64})?$"
)
SECRET_WORDS = re.compile(r"(password|passwd|secret|token)", re.IGNORECASE)


def all_object_sets():
    for key, values in COMBINATIONS.items():
        yield key, render_objects(values)
    for path in sorted((ROOT / "k8s" / "rendered").glob("*.yaml")):
        yield f"k8s/rendered/{path.name}", [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def object_sets():
    return dict(all_object_sets())


def pod_security(obj: dict) -> dict:
    return pod_spec(obj).get("securityContext") or {}


def test_every_container_is_locked_down(object_sets):
    checked = 0
    for key, objects in object_sets.items():
        for obj in objects:
            if pod_spec(obj) is None:
                continue
            pod_sc = pod_security(obj)
            assert pod_sc.get("runAsNonRoot") is True, (key, obj["metadata"]["name"])
            assert pod_sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", (key, obj["metadata"]["name"])
            assert isinstance(pod_sc.get("runAsUser"), int) and pod_sc["runAsUser"] > 0
            for c in containers(obj):
                where = (key, obj["metadata"]["name"], c["name"])
                sc = c.get("securityContext") or {}
                assert sc.get("allowPrivilegeEscalation") is False, where
                assert sc.get("readOnlyRootFilesystem") is True, where
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
                assert not sc.get("capabilities", {}).get("add"), where
                assert sc.get("privileged") in (None, False), where
                assert sc.get("runAsUser", pod_sc["runAsUser"]) != 0, where
                assert c["resources"]["requests"] and c["resources"]["limits"], where
                checked += 1
    assert checked > 100


def test_long_running_containers_have_probes(object_sets):
    for key, objects in object_sets.items():
        for obj in objects:
            if obj["kind"] not in {"Deployment", "StatefulSet"}:
                continue
            for c in containers(obj):
                where = (key, obj["metadata"]["name"])
                assert "livenessProbe" in c, where
                if component(obj) != "operator":  # the operator has liveness only (contract: port 8081 /healthz)
                    assert "readinessProbe" in c, where


def test_writable_paths_are_emptydirs(object_sets):
    """read-only root filesystem: every service gets /tmp as an emptyDir (the only place it writes)."""
    for key, objects in object_sets.items():
        for obj in objects:
            spec = pod_spec(obj)
            if spec is None or obj["kind"] == "Pod":
                continue
            volumes = {v["name"]: v for v in spec.get("volumes", [])}
            for c in containers(obj):
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                assert "/tmp" in mounts, (key, obj["metadata"]["name"])
                assert "emptyDir" in volumes[mounts["/tmp"]]


def test_images_are_pinned(object_sets):
    for key, objects in object_sets.items():
        for obj in objects:
            for c in containers(obj):
                assert PINNED.match(c["image"]), (key, c["image"])
            if obj["kind"] == "Cluster":
                for image in (
                    obj["spec"]["imageName"],
                    *(e["image"]["reference"] for e in obj["spec"]["postgresql"]["extensions"]),
                ):
                    assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), (key, image)


def test_no_password_literal_in_configmaps_or_env(object_sets):
    for key, objects in object_sets.items():
        for obj in objects:
            if obj["kind"] == "ConfigMap":
                for name, text in (obj.get("data") or {}).items():
                    for line in str(text).splitlines():
                        # a setting whose name mentions a password may only be empty or a reference
                        match = re.match(r"\s*[\w.\-]*(password|passwd)[\w.\-]*\s*[=:]\s*(\S+)", line, re.IGNORECASE)
                        assert not match, (key, obj["metadata"]["name"], name, line)
            for c in containers(obj):
                for e in c.get("env", []):
                    if SECRET_WORDS.search(e["name"]):
                        assert "value" not in e, (key, obj["metadata"]["name"], e["name"])
                        assert "secretKeyRef" in e.get("valueFrom", {}), (key, e["name"])
                    elif "value" in e:
                        assert "://" not in e["value"] or "@" not in e["value"], (key, e)  # no URL with credentials


def test_labels_everywhere(object_sets):
    for key, objects in object_sets.items():
        for obj in objects:
            if obj["kind"] == "CustomResourceDefinition":
                continue
            labels = obj["metadata"].get("labels") or {}
            missing = [label for label in REQUIRED_LABELS if label not in labels]
            assert not missing, (key, obj["kind"], obj["metadata"]["name"], missing)
            spec = pod_spec(obj)
            if spec is not None and obj["kind"] != "Pod":
                pod_labels = obj["spec"]["template"]["metadata"]["labels"]
                assert all(label in pod_labels for label in REQUIRED_LABELS[:3]), (key, obj["metadata"]["name"])


def test_network_policies_default_deny_and_allow_only_needed_flows():
    objects = render_objects({})
    policies = {
        o["metadata"]["name"].removeprefix("demo-pg-trickle-demo-"): o for o in objects if o["kind"] == "NetworkPolicy"
    }
    deny = policies["default-deny"]["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"] and "ingress" not in deny and "egress" not in deny
    assert deny["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "pg-trickle-demo",
        "app.kubernetes.io/instance": "demo",
    }
    pg_in = policies["postgres"]["spec"]["ingress"]
    assert pg_in[0]["ports"] == [{"protocol": "TCP", "port": 5432}]
    clients = pg_in[0]["from"][0]["podSelector"]["matchExpressions"][1]["values"]
    assert sorted(clients) == ["bootstrap", "dashboard", "exporter", "generator", "operator"]
    assert policies["dashboard"]["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 8000}]
    # every pod of the release is selected by the default deny
    for obj in objects:
        spec = pod_spec(obj)
        if spec is None:
            continue
        labels = obj["metadata"]["labels"] if obj["kind"] == "Pod" else obj["spec"]["template"]["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in deny["podSelector"]["matchLabels"].items()), obj["metadata"]["name"]
    off = render_objects({"networkPolicy": {"enabled": False}})
    assert not [o for o in off if o["kind"] == "NetworkPolicy"]


def test_chart_defaults_pin_the_pg_trickle_image():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["postgres"]["image"] == {
        "repository": "ghcr.io/trickle-labs/pg_trickle",
        "tag": "0.67.0-pg18.3",
        "pullPolicy": "IfNotPresent",
    }
