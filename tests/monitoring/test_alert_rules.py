"""The alert rules of the monitoring package (monitoring/): rendered by monitoring/build.py, valid for promtool,
every alert documented, scoped by its selector, configurable, and unit-tested both ways."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import yaml

from tests.monitoring.support import ALERTS, monitoring_build
from tests.support import ROOT, require_tool

PACKAGE = ROOT / "monitoring"
PROMTOOL_TESTS = ROOT / "tests/monitoring/promtool/alerts_test.yaml"
RUNBOOKS = PACKAGE / "runbooks.md"
PROMETHEUS_CONFIG = PACKAGE / "prometheus/prometheus.yml"
REQUIRED_ALERTS = {
    "PgTrickleDown",  # pg_trickle_up == 0
    "PgTrickleSchedulerDown",
    "PgTrickleStreamTableStale",
    "PgTrickleConsecutiveErrors",
    "PgTrickleStreamTableSuspended",
    "PgTrickleRefreshDurationHigh",
    "PgTrickleAdvisorRecommendsSwitch",
    "DemoGeneratorStalled",
    # the engine's own risks (issue 17): change backlog (rows, age, size), WAL retention, worker pool
    "PgTrickleChangeBacklogGrowing",
    "PgTrickleChangeBacklogStale",
    "PgTrickleChangeBufferLarge",
    "PgTrickleWalRetentionHigh",
    "PgTrickleWalRetentionCritical",
    "PgTrickleWorkerPoolSaturated",
    "PgTrickleJobQueueBacklog",
}
_SERIES = re.compile(r"\b((?:pg_trickle|demo_generator)_[a-z_]+)(\{[^}]*\})?")


def alert_rules(path=ALERTS) -> list[dict]:
    groups = yaml.safe_load(path.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def build_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PACKAGE / "build.py"), *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def test_the_shipped_outputs_are_rendered_from_the_package():
    """compose's rule file, the chart's copies of rules.yaml/config.yaml and its dashboards are current."""
    result = build_cli("--check")
    assert result.returncode == 0, result.stderr


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
    assert spec["rule_files"] == ["../../../monitoring/prometheus/alerts.yaml"]
    firing, quiet = set(), set()
    for group in spec["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"


def test_alerts_carry_severity_summary_description_and_an_absolute_runbook_url():
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    assert set(names) >= REQUIRED_ALERTS
    base = monitoring_build().load_yaml(PACKAGE / "config.yaml")["runbookBaseUrl"]
    assert re.match(r"^https://[^/]+/.+/monitoring/runbooks\.md$", base), base
    runbooks = RUNBOOKS.read_text()
    sections = dict(re.findall(r"^## (\w+)\n(.*?)(?=^## |\Z)", runbooks, flags=re.M | re.S))
    for rule in rules:
        name = rule["alert"]
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert "$THRESHOLD" not in str(rule) and "$FOR" not in str(rule) and "$EXPORTER" not in str(rule), name
        assert annotations["runbook_url"] == f"{base}#{name.lower()}", name
        assert name in sections, f"monitoring/runbooks.md has no section for {name}"
        assert "**Means:**" in sections[name] and "**Do:**" in sections[name], name
    assert set(sections) == set(names), "runbook sections without an alert"


def test_every_series_selector_carries_the_deployment_selector():
    """absent() included: in a Prometheus that watches two deployments, one exporter must not hide the other's
    absence, and one deployment's rules must not alert on the other's tables."""
    for rule in alert_rules():
        series = _SERIES.findall(rule["expr"])
        assert series, rule["alert"]
        for metric, matchers in series:
            wanted = 'job="generator"' if metric.startswith("demo_generator") else 'job="exporter"'
            assert wanted in matchers, f"{rule['alert']}: {metric}{matchers}"
    absent = [rule for rule in alert_rules() if rule["expr"].startswith("absent(")]
    assert {rule["alert"] for rule in absent} == {"PgTrickleExporterMissing", "DemoGeneratorMissing"}


def test_settings_change_one_alert_and_nothing_else(tmp_path):
    """`build.py --config`: disable an alert, change a threshold, severity, `for` and labels, move the runbooks."""
    mine = tmp_path / "mine.yaml"
    mine.write_text(
        yaml.safe_dump(
            {
                "runbookBaseUrl": "https://runbooks.example/pg_trickle.html",
                "selectors": {"exporter": 'job="pgt", namespace="data"'},
                "labels": {"team": "data"},
                "alerts": {
                    "DemoGeneratorStalled": {"enabled": False},
                    "PgTrickleRefreshDurationHigh": {"threshold": "30", "severity": "critical", "for": "20m"},
                    "PgTrickleDown": {"labels": {"pager": "yes"}},
                },
            }
        )
    )
    out = tmp_path / "rules.yaml"
    result = build_cli("--config", str(mine), "--out", str(out))
    assert result.returncode == 0, result.stderr
    mine_rules = {rule["alert"]: rule for rule in alert_rules(out)}
    shipped = {rule["alert"]: rule for rule in alert_rules()}
    assert set(shipped) - set(mine_rules) == {"DemoGeneratorStalled"}
    duration = mine_rules["PgTrickleRefreshDurationHigh"]
    assert duration["expr"].rstrip().endswith("> 30") and duration["for"] == "20m"
    assert duration["labels"] == {"team": "data", "severity": "critical"}
    assert "over 30 s for 20m" in " ".join(duration["annotations"]["description"].split())
    assert mine_rules["PgTrickleDown"]["labels"] == {"team": "data", "pager": "yes", "severity": "critical"}
    assert mine_rules["PgTrickleExporterMissing"]["expr"] == 'absent(pg_trickle_up{job="pgt", namespace="data"})'
    assert mine_rules["DemoGeneratorMissing"]["expr"] == 'absent(demo_generator_info{job="generator"})'
    assert mine_rules["PgTrickleDown"]["annotations"]["runbook_url"] == (
        "https://runbooks.example/pg_trickle.html#pgtrickledown"
    )
    promtool = require_tool("promtool", "Debian package prometheus")
    check = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_empty_selectors_leave_valid_promql(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"selectors": {"exporter": "", "generator": ""}}))
    out = tmp_path / "rules.yaml"
    assert build_cli("--config", str(mine), "--out", str(out)).returncode == 0
    text = out.read_text()
    assert "{}" not in text and ", }" not in text
    assert any(rule["expr"] == "absent(pg_trickle_up)" for rule in alert_rules(out))
    promtool = require_tool("promtool", "Debian package prometheus")
    check = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"alerts": {"PgTrickleDown": {"severity": "page"}}}, "alerts.PgTrickleDown.severity must be one of"),
        ({"alerts": {"PgTrickleDwn": {"enabled": False}}}, "config names alerts that do not exist: PgTrickleDwn"),
        ({"runbookBaseUrl": "docs/runbooks.md"}, "runbookBaseUrl must be an absolute http(s) URL"),
    ],
)
def test_bad_settings_are_one_line_and_exit_2(tmp_path, settings, message):
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump(settings))
    result = build_cli("--config", str(mine))
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_one_source_of_truth_for_the_rules():
    """The only rule files are the package's template and what it renders (compose's file); compose's
    Prometheus loads the rules directory where that file is mounted, with the job names the selectors match."""
    rendered = {
        ALERTS,
        PROMTOOL_TESTS,
        PACKAGE / "rules.yaml",
        ROOT / "helm/pg-trickle-demo/files/monitoring/rules.yaml",
    }
    others = []
    for path in ROOT.rglob("*.y*ml"):
        if any(part in {".venv", ".git", "node_modules", "test-output"} for part in path.parts):
            continue
        if path in rendered or path.suffix not in {".yaml", ".yml"}:
            continue
        try:
            documents = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue  # Helm templates are not plain YAML
        for document in documents:
            if isinstance(document, dict) and "groups" in document and "alert:" in path.read_text():
                others.append(path)
    assert others == [], f"alert rules outside the monitoring package: {others}"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert targets == {"exporter": ["exporter:9188"], "generator": ["generator:8000"]}
    selectors = monitoring_build().load_yaml(PACKAGE / "config.yaml")["selectors"]
    assert selectors == {"exporter": 'job="exporter"', "generator": 'job="generator"'}


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
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert (
        "./monitoring/prometheus/alerts.yaml:/etc/prometheus/rules/alerts.yaml:ro" in compose["prometheus"]["volumes"]
    )


def test_grafana_provisioning_for_compose():
    """The datasource points at compose's Prometheus; the provider reads where compose mounts the JSON."""
    provisioning = PACKAGE / "grafana/provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources/prometheus.yaml").read_text())["datasources"]
    assert (source["type"], source["url"], source["access"]) == ("prometheus", "http://prometheus:9090", "proxy")
    (provider,) = yaml.safe_load((provisioning / "dashboards/provider.yaml").read_text())["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "/var/lib/grafana/dashboards"
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    assert "./monitoring/dashboards:/var/lib/grafana/dashboards:ro" in compose["grafana"]["volumes"]
    assert any(p.endswith(":9090") for p in compose["prometheus"]["ports"])
