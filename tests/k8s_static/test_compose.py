"""compose.yaml: valid Compose v2, no default passwords, hardened services, and in agreement with the chart on
images, ports and environment variable names."""

from __future__ import annotations

import json
import re

import pytest

from tests.deploy_support import (
    SERVICE_PORTS,
    chart_values,
    component,
    compose_config,
    containers,
    env_names,
    render_objects,
    workload,
)
from tests.support import ROOT

PASSWORDS = {
    "POSTGRES_PASSWORD": "pg-pw",
    "DEMO_PASSWORD": "demo-pw",
    "DEMO_WRITER_PASSWORD": "writer-pw",
    "DEMO_READER_PASSWORD": "reader-pw",
    "GRAFANA_ADMIN_PASSWORD": "grafana-pw",
}
# Variables only compose sets: the container's own variables are the same on both sides.
COMPOSE_ONLY: dict[str, set[str]] = {}
# The chart sets the operator's; compose has no operator (no Kubernetes API on a laptop).
APP_SERVICES = ("bootstrap", "generator", "dashboard", "exporter")


@pytest.fixture(scope="module")
def config():
    result = compose_config("--profile", "monitoring", "config", "--format", "json", env=PASSWORDS)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
    return json.loads(result.stdout)


def test_compose_file_is_valid_compose_v2():
    result = compose_config("config", "--quiet", env=PASSWORDS)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_compose_refuses_to_start_without_passwords():
    for key in PASSWORDS:
        env = {k: v for k, v in PASSWORDS.items() if k != key}
        result = compose_config("--profile", "monitoring", "config", "--quiet", env=env)
        assert f"required variable {key} is missing" in result.stderr, (key, result.stderr)
    text = (ROOT / "compose.yaml").read_text()
    for key in PASSWORDS:
        for match in re.finditer(r"\$\{" + key + r"([^}]*)\}", text):
            assert match.group(1).startswith(":?"), f"{key} must be required, not defaulted: {match.group(0)}"


def test_services_images_and_profile(config):
    services = config["services"]
    assert set(services) == {"postgres", "bootstrap", "generator", "dashboard", "exporter", "prometheus", "grafana"}
    assert services["postgres"]["image"] == "ghcr.io/trickle-labs/pg_trickle:0.67.0-pg18.3"
    assert services["prometheus"]["image"].startswith("prom/prometheus:v2.55.")
    assert services["grafana"]["image"].startswith("grafana/grafana-oss:11.6.")
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["monitoring"]
    for name, svc in services.items():
        assert ":" in svc["image"] and not svc["image"].endswith(":latest"), name
    assert services["bootstrap"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("generator", "dashboard", "exporter"):
        assert services[name]["depends_on"]["bootstrap"]["condition"] == "service_completed_successfully"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert any(v["target"] == "/var/lib/postgresql" and v["type"] == "volume" for v in services["postgres"]["volumes"])


def test_pg_trickle_image_override(monkeypatch):
    result = compose_config("config", "--format", "json", env={**PASSWORDS, "PG_TRICKLE_IMAGE": "pg_trickle:demo"})
    assert json.loads(result.stdout)["services"]["postgres"]["image"] == "pg_trickle:demo"
    result = compose_config("config", "--format", "json", env={**PASSWORDS, "DEMO_SCENARIO": "fraud"})
    services = json.loads(result.stdout)["services"]
    assert {services[s]["environment"]["DEMO_SCENARIO"] for s in APP_SERVICES} == {"fraud"}


def test_hardening(config):
    for name, svc in config["services"].items():
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        if name != "postgres":  # the official postgres entrypoint drops from root to postgres itself
            assert not svc.get("cap_add"), name
        for port in svc.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", (name, port)


def test_monitoring_mounts_the_shared_files(config):
    prom = {v["target"]: v["source"] for v in config["services"]["prometheus"]["volumes"]}
    assert prom["/etc/prometheus/rules/alerts.yaml"] == str(ROOT / "monitoring" / "prometheus" / "alerts.yaml")
    assert prom["/etc/prometheus/prometheus.yml"] == str(ROOT / "monitoring" / "prometheus" / "prometheus.yml")
    graf = {v["target"]: v["source"] for v in config["services"]["grafana"]["volumes"]}
    assert graf["/var/lib/grafana/dashboards"] == str(ROOT / "monitoring" / "dashboards")
    assert graf["/etc/grafana/provisioning"] == str(ROOT / "monitoring" / "grafana" / "provisioning")
    env = config["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true" and env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-pw"
    assert {p["target"] for p in config["services"]["grafana"]["ports"]} == {3000}


def test_compose_and_chart_agree(config):
    """Same images, container ports and environment variable names for every service both of them run."""
    objects = render_objects(chart_values("values.yaml"))
    services = config["services"]
    sts = workload(objects, "StatefulSet", "postgres")
    (pg,) = containers(sts)
    assert pg["image"] == services["postgres"]["image"]
    # the same data mount (the postgres:18 images' layout: PGDATA /var/lib/postgresql/18/docker under the
    # mount) and pg_trickle preloaded in both
    (data_mount,) = [m["mountPath"] for m in pg["volumeMounts"] if m["name"] == "data"]
    (compose_volume,) = [v["target"] for v in services["postgres"]["volumes"] if v["type"] == "volume"]
    assert data_mount == compose_volume == "/var/lib/postgresql"
    pgdata = next(e["value"] for e in pg["env"] if e["name"] == "PGDATA")
    assert pgdata == "/var/lib/postgresql/18/docker"
    (config,) = [o for o in objects if o["kind"] == "ConfigMap" and component(o) == "postgres"]
    assert "shared_preload_libraries = 'pg_trickle'" in config["data"]["postgresql.conf"]
    assert "shared_preload_libraries=pg_trickle" in services["postgres"]["command"]
    writable = {v["target"] if isinstance(v, dict) else v.split(":")[0] for v in services["postgres"]["tmpfs"]}
    assert writable >= {"/tmp", "/var/run/postgresql"}
    assert {m["mountPath"] for m in pg["volumeMounts"]} >= {"/tmp", "/var/run/postgresql"}
    for name in APP_SERVICES:
        kind = "Job" if name == "bootstrap" else "Deployment"
        (chart_container,) = containers(workload(objects, kind, name))
        svc = services[name]
        assert svc["image"] == chart_container["image"], name
        assert svc["build"]["dockerfile"] == "services/Dockerfile", name  # one Dockerfile, a target per image
        if name == "bootstrap":
            assert svc["build"]["target"] == "bootstrap" and "args" not in svc["build"]
        else:
            assert svc["build"]["target"] == "service", name
            assert svc["build"]["args"] == {"SERVICE": name, "PORT": str(SERVICE_PORTS[name])}, name
        assert set(svc["environment"]) == env_names(chart_container), name
        compose_ports = {p["target"] for p in svc.get("ports", [])}
        chart_ports = {p["containerPort"] for p in chart_container.get("ports", [])}
        assert compose_ports == chart_ports, name
        if name in SERVICE_PORTS:
            assert chart_ports == {SERVICE_PORTS[name]}, name
    operator = containers(workload(objects, "Deployment", "operator"))[0]
    assert operator["image"] == "pg-trickle-demo/operator:0.1.0"
