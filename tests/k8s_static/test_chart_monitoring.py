"""The chart's monitoring: the PrometheusRule rendered from the monitoring package with per-alert overrides,
absolute runbook URLs and this release's selectors; the ServiceMonitor's scrape settings."""

from __future__ import annotations

import pytest

from tests.deploy_support import render_objects
from tests.monitoring.support import monitoring_build

ENABLED = {"monitoring": {"prometheusRule": {"enabled": True}}}


def rule_of(values: dict, **kwargs) -> dict:
    (rule,) = [o for o in render_objects(values, **kwargs) if o["kind"] == "PrometheusRule"]
    return rule


def alerts_of(rule: dict) -> dict[str, dict]:
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


def test_the_chart_renders_what_the_package_renders_with_the_release_selectors():
    """Same alerts, expressions, durations, labels and annotations as monitoring/build.py, with the series
    selected by this release's Services and namespace (what its ServiceMonitors produce)."""
    build = monitoring_build()
    config = build.merge(
        build.load_yaml(build.CONFIG),
        {
            "selectors": {
                "exporter": 'job="rel-pg-trickle-demo-exporter",namespace="data"',
                "generator": 'job="rel-pg-trickle-demo-generator",namespace="data"',
            }
        },
    )
    expected = build.render(config)
    rule = rule_of(ENABLED, name="rel", namespace="data")
    assert [g["name"] for g in rule["spec"]["groups"]] == [g["name"] for g in expected["groups"]]
    for got_group, want_group in zip(rule["spec"]["groups"], expected["groups"], strict=True):
        assert got_group["rules"] == want_group["rules"]
    absent = alerts_of(rule)["PgTrickleExporterMissing"]["expr"]
    assert absent == 'absent(pg_trickle_up{job="rel-pg-trickle-demo-exporter",namespace="data"})'


def test_per_alert_overrides_and_global_labels():
    values = {
        "monitoring": {
            "runbookBaseUrl": "https://wiki.example/pg_trickle",
            "prometheusRule": {
                "enabled": True,
                "ruleLabels": {"team": "data"},
                "alerts": {
                    "DemoGeneratorStalled": {"enabled": False},
                    "PgTrickleRefreshDurationHigh": {"threshold": 30, "severity": "critical", "for": "20m"},
                    "PgTrickleConsecutiveErrors": {"threshold": 0},  # 0 is a value, not "unset"
                    "PgTrickleDown": {"labels": {"pager": "yes"}},
                },
            },
        }
    }
    alerts = alerts_of(rule_of(values))
    assert "DemoGeneratorStalled" not in alerts and "DemoGeneratorMissing" in alerts
    duration = alerts["PgTrickleRefreshDurationHigh"]
    assert duration["expr"].rstrip().endswith("> 30") and duration["for"] == "20m"
    assert duration["labels"] == {"severity": "critical", "team": "data"}
    assert "over 30 s for 20m" in " ".join(duration["annotations"]["description"].split())
    assert alerts["PgTrickleConsecutiveErrors"]["expr"].endswith("> 0")
    assert alerts["PgTrickleDown"]["labels"] == {"severity": "critical", "team": "data", "pager": "yes"}
    assert all(
        a["annotations"]["runbook_url"] == f"https://wiki.example/pg_trickle#{n.lower()}" for n, a in alerts.items()
    )


def test_selectors_can_be_set_for_a_relabelled_job():
    values = {"monitoring": {"prometheusRule": {"enabled": True, "selectors": {"exporter": 'service="pgt"'}}}}
    alerts = alerts_of(rule_of(values))
    assert alerts["PgTrickleExporterMissing"]["expr"] == 'absent(pg_trickle_up{service="pgt"})'
    assert 'job="demo-pg-trickle-demo-generator"' in alerts["DemoGeneratorMissing"]["expr"]


def test_runbook_urls_are_absolute_by_default():
    base = monitoring_build().load_yaml(monitoring_build().CONFIG)["runbookBaseUrl"]
    for name, alert in alerts_of(rule_of(ENABLED)).items():
        assert alert["annotations"]["runbook_url"] == f"{base}#{name.lower()}"
        assert alert["annotations"]["runbook_url"].startswith("https://")


@pytest.mark.parametrize(
    "bad",
    [
        {"alerts": {"PgTrickleDwn": {"enabled": False}}},  # misspelt alert
        {"alerts": {"PgTrickleDown": {"severity": "page"}}},
        {"alerts": {"PgTrickleDown": {"threshold": "ten"}}},
        {"alerts": {"PgTrickleDown": {"for": "2 minutes"}}},
    ],
)
def test_the_schema_refuses_bad_overrides(bad):
    with pytest.raises(Exception, match=r"(?i)schema|values|validat"):
        render_objects({"monitoring": {"prometheusRule": {"enabled": True, **bad}}})


def test_the_schema_refuses_a_relative_runbook_url():
    with pytest.raises(Exception, match=r"(?i)schema|values|validat"):
        render_objects({"monitoring": {"runbookBaseUrl": "docs/runbooks.md"}})


def test_servicemonitor_scrape_settings():
    relabel = [{"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"}]
    drop = [{"sourceLabels": ["__name__"], "regex": "pg_trickle_exporter_.*", "action": "drop"}]
    tls = {"insecureSkipVerify": False, "serverName": "exporter.data.svc"}
    values = {
        "monitoring": {
            "serviceMonitor": {
                "enabled": True,
                "scrapeTimeout": "10s",
                "scheme": "https",
                "tlsConfig": tls,
                "relabelings": relabel,
                "metricRelabelings": drop,
            }
        }
    }
    monitors = [o for o in render_objects(values) if o["kind"] == "ServiceMonitor"]
    assert len(monitors) == 2
    for monitor in monitors:
        (endpoint,) = monitor["spec"]["endpoints"]
        assert endpoint["scrapeTimeout"] == "10s" and endpoint["scheme"] == "https"
        assert endpoint["tlsConfig"] == tls
        assert endpoint["relabelings"] == relabel and endpoint["metricRelabelings"] == drop
    plain = [
        o
        for o in render_objects({"monitoring": {"serviceMonitor": {"enabled": True}}})
        if o["kind"] == "ServiceMonitor"
    ]
    for monitor in plain:
        (endpoint,) = monitor["spec"]["endpoints"]
        assert set(endpoint) == {"port", "path", "interval"}
