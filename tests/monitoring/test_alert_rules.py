"""The alert rules: one file, valid for promtool, every alert documented and unit-tested both ways."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.support import ROOT, require_tool

ALERTS = ROOT / "helm/pg-trickle-demo/files/prometheus/alerts.yaml"
PROMTOOL_TESTS = ROOT / "tests/monitoring/promtool/alerts_test.yaml"
RUNBOOKS = ROOT / "docs/runbooks.md"
PROMETHEUS_CONFIG = ROOT / "monitoring/prometheus/prometheus.yml"
REQUIRED_ALERTS = {
    "PgTrickleDown",  # pg_trickle_up == 0
    "PgTrickleSchedulerDown",
    "PgTrickleStreamTableStale",
    "PgTrickleConsecutiveErrors",
    "PgTrickleStreamTableSuspended",
    "PgTrickleRefreshDurationHigh",
    "PgTrickleAdvisorRecommendsSwitch",
    "DemoGeneratorStalled",
}


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules():
    promtool = require_tool("promtool", "Debian package prometheus")
    result = subprocess.run([promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    promtool = require_tool("promtool", "Debian package prometheus")
    result = subprocess.run(
        [promtool, "test", "rules", str(PROMTOOL_TESTS)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_tested_firing_and_not_firing():
    spec = yaml.safe_load(PROMTOOL_TESTS.read_text())
    assert spec["rule_files"] == ["../../../helm/pg-trickle-demo/files/prometheus/alerts.yaml"]
    firing, quiet = set(), set()
    for group in spec["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"


def test_alerts_cover_the_issue_and_carry_severity_summary_description_and_runbook():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    runbooks = RUNBOOKS.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", runbooks, flags=re.M | re.S))
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == f"docs/runbooks.md#{name.lower()}", name
        assert name in sections, f"docs/runbooks.md has no section for {name}"
        assert "**Means:**" in sections[name] and "**Do:**" in sections[name], name
    assert set(sections) == set(names), "runbook sections without an alert"


def test_one_source_of_truth_for_the_rules():
    """No other Prometheus rule file in the repository; compose's Prometheus loads the rules directory
    where the one file is mounted."""
    others = []
    for path in ROOT.rglob("*.y*ml"):
        if any(part in {".venv", ".git", "node_modules", "test-output"} for part in path.parts):
            continue
        if path in (ALERTS, PROMTOOL_TESTS) or path.suffix not in {".yaml", ".yml"}:
            continue
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # Helm templates are not plain YAML
        for document in documents:
            if isinstance(document, dict) and "groups" in document and "alert:" in path.read_text():
                others.append(path)
    assert others == [], f"alert rules outside {ALERTS.relative_to(ROOT)}: {others}"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"exporter": ["exporter:9188"], "generator": ["generator:8000"]}


def test_compose_prometheus_config_is_valid_and_loads_the_rules(tmp_path):
    """promtool checks compose's prometheus.yml with the rule file where compose mounts it (the glob under
    /etc/prometheus/rules/ moved to a temporary folder), so the rules it loads are checked too."""
    promtool = require_tool("promtool", "Debian package prometheus")
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "alerts.yaml").write_text(ALERTS.read_text())
    config = tmp_path / "prometheus.yml"
    config.write_text(PROMETHEUS_CONFIG.read_text().replace("/etc/prometheus/rules/", f"{rules}/"))
    result = subprocess.run([promtool, "check", "config", str(config)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout + result.stderr


def test_grafana_provisioning_for_compose():
    """The datasource points at compose's Prometheus; the provider reads where compose mounts the JSON."""
    provisioning = ROOT / "monitoring/grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())["datasources"]
    assert (source["type"], source["url"], source["access"]) == ("prometheus", "http://prometheus:9090", "proxy")
    (provider,) = yaml.safe_load((provisioning / "dashboards/provider.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert any(v.endswith(":/var/lib/grafana/dashboards:ro") for v in compose["grafana"]["volumes"])
    assert any(p.endswith(":9090") for p in compose["prometheus"]["ports"])
