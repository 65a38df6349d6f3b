"""The proof: a real Prometheus scraping the exporter and the generator over the emulator answers every
PromQL expression of every dashboard panel and every alert rule, the stale-table alert fires when the
emulator's scheduler stops, the change-backlog alerts fire while it is stopped and resolve once it runs
again, and the missing-exporter alert fires when the exporter stops.

Only `for:` durations are shortened in the rule file Prometheus loads (to 1 s, so the test takes seconds,
not minutes), and the two backlog alerts get low thresholds; the expressions are the shipped ones, and the
test checks nothing else changed. promtool's unit tests (test_alert_rules.py) cover the shipped `for:` durations.
"""

from __future__ import annotations

import re
import signal
import time

import pytest
import yaml

from devenv.scheduler import EmulatorScheduler
from services.common.scenarios import get_scenario
from tests.generator_support import GeneratorProcess
from tests.monitoring.support import (
    ALERTS,
    ExporterProcess,
    PrometheusServer,
    alert_rules,
    as_bool,
    dashboards,
    metric_names,
    monitoring_build,
    panel_targets,
    substitute,
    wait_for,
)

pytestmark = pytest.mark.slow

# Series only the real pg_trickle produces, each with its reason (reviewed; keep it short).
ONLY_THE_REAL_ENGINE = {
    "pg_trickle_differential_speedup_ratio": "the emulator never runs a differential refresh, so "
    "refresh_efficiency().diff_speedup is NULL (the panel says 'not measured by this engine')",
}
VARIABLES = {"scenario": "ecommerce", "stream_table": ".*", "__rate_interval": "10s", "__interval": "2s"}


def _test_rules(tmp_path, **overrides):
    """The shipped rules rendered by the monitoring package with every `for:` set to 1s (and the alerts in
    `overrides` given those settings); nothing else changes."""
    build = monitoring_build()
    config = build.load_yaml(build.CONFIG)
    alerts = {name: {"for": "1s", **overrides.get(name, {})} for name in config["alerts"]}
    shortened = build.render(build.merge(config, {"alerts": alerts}))
    original = yaml.safe_load(ALERTS.read_text())
    for group_a, group_b in zip(original["groups"], shortened["groups"], strict=True):
        for rule_a, rule_b in zip(group_a["rules"], group_b["rules"], strict=True):
            rule_a, rule_b = dict(rule_a), dict(rule_b)
            assert rule_b.pop("for") == "1s"
            rule_a.pop("for")
            if rule_a["alert"] not in overrides:
                rule_a["annotations"].pop("description"), rule_b["annotations"].pop("description")  # names `for`
                assert rule_a == rule_b
    path = tmp_path / "alerts.yaml"
    path.write_text(yaml.safe_dump(shortened, sort_keys=False))
    return path


# The change-backlog alerts with thresholds a test can reach in seconds (the shipped ones are 10,000 rows and
# 300 s); their expressions are the shipped ones.
BACKLOG_TEST_SETTINGS = {
    "PgTrickleChangeBacklogGrowing": {"threshold": "100"},
    "PgTrickleChangeBacklogStale": {"threshold": "5"},
}


def _no_data(prometheus: PrometheusServer, exprs: list[tuple[str, str]]) -> list[str]:
    missing = []
    for where, expr in exprs:
        if not prometheus.query(expr):
            missing.append(f"{where}: {expr}")
    return missing


def _variable_values(prometheus: PrometheusServer, variable: dict) -> set[str]:
    """A query_result() variable's values: Grafana renders each series as `name{label="value", ...} value
    time` (labels in Prometheus' order) and keeps the regex's first group."""
    inner = re.fullmatch(r"query_result\((.*)\)", variable["query"], flags=re.S).group(1)
    regex = re.compile(variable["regex"].strip("/"))
    values = set()
    for series in prometheus.query(substitute(inner, VARIABLES)):
        labels = dict(series["metric"])
        metric = labels.pop("__name__", "")
        timestamp, value = series["value"]
        text = metric + "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + f"}} {value} {int(timestamp * 1000)}"
        if match := regex.search(text):
            values.add(match.group(1))
    return values


def _expressions() -> list[tuple[str, str]]:
    """(where, PromQL) for every dashboard panel query and variable, every alert rule (in its `bool` form,
    so it answers below its threshold too) and every metric an alert reads."""
    exprs: list[tuple[str, str]] = []
    for name, board in dashboards().items():
        for title, expr in panel_targets(board):
            if any(metric in expr for metric in ONLY_THE_REAL_ENGINE):
                continue
            exprs.append((f"{name} / {title}", substitute(expr, VARIABLES)))
        for variable in board["templating"]["list"]:
            query = variable.get("query")
            if variable["type"] != "query":
                continue
            inner = re.fullmatch(r"query_result\((.*)\)", query, flags=re.S)
            if inner:
                exprs.append((f"{name} / variable {variable['name']}", substitute(inner.group(1), VARIABLES)))
            else:
                metric, label = re.fullmatch(r"label_values\((\w+), (\w+)\)", query).groups()
                exprs.append((f"{name} / variable {variable['name']}", f"count by ({label}) ({metric})"))
    for rule in alert_rules():
        if not rule["expr"].startswith("absent("):  # absent() answers only when its series is missing
            exprs.append((f"alert {rule['alert']}", as_bool(rule["expr"])))
        for metric in sorted(metric_names(rule["expr"]) - set(ONLY_THE_REAL_ENGINE)):
            exprs.append((f"alert {rule['alert']} reads", metric))
    return exprs


def test_every_dashboard_and_alert_expression_returns_data_and_the_stale_alert_fires(demo_db, tmp_path):
    db = demo_db("ecommerce")
    assert db.engine == "emulator", "this proof drives the emulator's scheduler"
    scheduler = EmulatorScheduler(db.admin_url, tick_interval_ms=200).start()
    prometheus = None
    try:
        with (
            GeneratorProcess(db.writer_url, "--rate 30 --burst-interval 3 --slow-change-every 2 --seed 11") as gen,
            ExporterProcess(db.reader_url, env={"DEMO_SCENARIO": "ecommerce", "EXPORTER_ADVISOR_INTERVAL": "2"}) as exp,
        ):
            gen.wait_ready()
            exp.wait_ready()
            prometheus = PrometheusServer(
                tmp_path,
                {"exporter": f"127.0.0.1:{exp.port}", "generator": f"127.0.0.1:{gen.port}"},
                [_test_rules(tmp_path, **BACKLOG_TEST_SETTINGS)],
                # as a Prometheus Operator's ServiceMonitor labels its targets
                target_labels={"namespace": "demo", "pod": "exporter-0", "hostname": "node-1"},
            )
            prometheus.start()
            wait_for(prometheus.targets_up, 20, f"targets not up:\n{prometheus.log()}")

            # Every expression answers (within 40 s: rate windows need a few scrapes, bursts come every 3 s).
            exprs = _expressions()
            assert len(exprs) > 40
            deadline = time.monotonic() + 40
            while (missing := _no_data(prometheus, exprs)) and time.monotonic() < deadline:
                time.sleep(2)
            assert missing == [], "expressions without data:\n" + "\n".join(missing) + "\n" + exp.log_text()[-3000:]

            # The stream_table variable as Grafana computes it: its regex over query_result()'s text.
            (board,) = [b for b in dashboards().values() if b["title"] == "pg_trickle refreshes"]
            (variable,) = [v for v in board["templating"]["list"] if v["name"] == "stream_table"]
            assert _variable_values(prometheus, variable) == set(get_scenario("ecommerce").stream_table_names)

            # Healthy: nothing from pg_trickle fires (stale, scheduler, down, suspended, errors).
            for alert in (
                "PgTrickleStreamTableStale",
                "PgTrickleSchedulerDown",
                "PgTrickleDown",
                "PgTrickleExporterMissing",
                "DemoGeneratorMissing",
            ):
                assert prometheus.firing(alert) == [], alert
            for alert in ("PgTrickleStreamTableSuspended", "PgTrickleConsecutiveErrors", "DemoGeneratorStalled"):
                assert prometheus.firing(alert) == [], alert

            # The emulator's scheduler stops: 1 s tables pass 3 x 1 s + 10 s without a refresh.
            stopped = time.monotonic()
            scheduler.stop()
            assert not scheduler.running
            stale = wait_for(
                lambda: prometheus.firing("PgTrickleStreamTableStale"),
                60,
                f"PgTrickleStreamTableStale did not fire:\n{prometheus.log()[-2000:]}",
                interval=1,
            )
            waited = time.monotonic() - stopped
            fired = {(a["labels"]["schema"], a["labels"]["name"]) for a in stale}
            one_second_tables = {
                ("public", "product_sales"),
                ("public", "customer_stats"),
                ("public", "category_revenue"),
            }
            assert fired & one_second_tables, fired
            assert waited >= 13, f"fired after {waited:.1f}s, before the threshold could be crossed"
            assert all(a["labels"]["severity"] == "warning" for a in stale)
            runbook = monitoring_build().load_yaml(monitoring_build().CONFIG)["runbookBaseUrl"]
            assert runbook.startswith("https://")
            assert all(a["annotations"]["runbook_url"] == f"{runbook}#pgtricklestreamtablestale" for a in stale)
            wait_for(lambda: prometheus.firing("PgTrickleSchedulerDown"), 20, "PgTrickleSchedulerDown did not fire")
            assert prometheus.firing("PgTrickleDown") == []

            # Meanwhile the generator keeps writing: captured changes wait in the buffers, unconsumed, so the
            # backlog alerts fire for the tables over the generator's event tables ...
            growing = wait_for(
                lambda: prometheus.firing("PgTrickleChangeBacklogGrowing"),
                30,
                "PgTrickleChangeBacklogGrowing did not fire",
            )
            waiting = wait_for(
                lambda: prometheus.firing("PgTrickleChangeBacklogStale"), 30, "PgTrickleChangeBacklogStale did not fire"
            )
            assert {a["labels"]["name"] for a in growing} & {"customer_stats", "product_sales"}, growing
            assert {a["labels"]["name"] for a in waiting} & {"customer_stats", "product_sales"}, waiting
            # ... and resolve once a scheduler consumes them again.
            scheduler = EmulatorScheduler(db.admin_url, tick_interval_ms=200).start()
            wait_for(
                lambda: (
                    not prometheus.firing("PgTrickleChangeBacklogStale")
                    and not prometheus.firing("PgTrickleChangeBacklogGrowing")
                ),
                40,
                f"the backlog alerts did not resolve:\n{exp.log_text()[-2000:]}",
                interval=1,
            )
            scheduler.stop()

            # The exporter stops: its series go stale and PgTrickleExporterMissing fires; likewise the generator.
            assert exp.stop() == 0
            wait_for(lambda: prometheus.firing("PgTrickleExporterMissing"), 20, "PgTrickleExporterMissing did not fire")
            gen.proc.send_signal(signal.SIGTERM)
            assert gen.wait(10) == 0
            wait_for(lambda: prometheus.firing("DemoGeneratorMissing"), 20, "DemoGeneratorMissing did not fire")
    finally:
        if prometheus is not None:
            prometheus.stop()
        scheduler.stop()
