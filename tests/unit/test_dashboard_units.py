"""Dashboard pieces without a database: settings, the DAG layout, the Advisor's verdicts, the history, the
scenario registry, and the entry point's handling of bad configuration."""

from __future__ import annotations

import subprocess
import sys

import pytest
from psycopg.conninfo import conninfo_to_dict

from services.common import pgtrickle
from services.common.scenarios import SCENARIO_NAMES
from services.common.settings import ConfigError
from services.dashboard.catalog import keeps, layered_layout, verdict
from services.dashboard.config import load_config
from services.dashboard.gunicorn_conf import gunicorn_options
from services.dashboard.scenarios import FORMATS, ScenarioView, jsonable, load_view
from services.dashboard.snapshot import History
from tests.support import ROOT


def test_defaults_follow_the_service_contract():
    config = load_config({"DEMO_READER_PASSWORD": "pw"})
    assert (config.host, config.port, config.workers, config.threads) == ("0.0.0.0", 8080, 2, 4)  # noqa: S104
    assert config.graceful_timeout == 10 and config.generator_url is None and config.scenario == "ecommerce"
    params = conninfo_to_dict(config.conninfo)
    assert params["user"] == "demo_reader" and params["password"] == "pw" and params["dbname"] == "ecommerce_demo"
    fraud = load_config({"DEMO_SCENARIO": "fraud", "DATABASE_URL": "postgresql://u:p@db:5432/x"})
    assert conninfo_to_dict(fraud.conninfo)["dbname"] == "x" and conninfo_to_dict(fraud.conninfo)["user"] == "u"
    options = gunicorn_options(load_config({"DASHBOARD_PORT": "9999", "DASHBOARD_WORKERS": "3"}))
    assert (
        options["bind"] == ["0.0.0.0:9999"]
        and options["workers"] == 3
        and options["worker_class"] == "services.dashboard.worker.HardenedThreadWorker"
    )
    assert options["worker_tmp_dir"] in ("/dev/shm", "/tmp")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DASHBOARD_PORT": "http"}, "DASHBOARD_PORT"),
        ({"DASHBOARD_WORKERS": "0"}, "DASHBOARD_WORKERS"),
        ({"DASHBOARD_THREADS": "-1"}, "DASHBOARD_THREADS"),
        ({"DASHBOARD_GRACEFUL_TIMEOUT": "soon"}, "DASHBOARD_GRACEFUL_TIMEOUT"),
        ({"DASHBOARD_STATEMENT_TIMEOUT_MS": "5"}, "DASHBOARD_STATEMENT_TIMEOUT_MS"),
        ({"GENERATOR_URL": "ftp://gen:8000"}, "GENERATOR_URL"),
        ({"GENERATOR_URL": "http://"}, "GENERATOR_URL"),
        ({"DEMO_SCENARIO": "poker"}, "DEMO_SCENARIO"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL"),
        ({"DATABASE_URL": "postgresql://[bad"}, "DATABASE_URL"),
    ],
)
def test_bad_settings_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        load_config(env)


def test_bad_setting_is_one_line_and_exit_code_2():
    result = subprocess.run(
        [sys.executable, "-m", "services.dashboard"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DASHBOARD_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "dashboard: configuration error: DASHBOARD_PORT='eighty' is not a valid int"
    ]


def test_generator_url_is_normalised():
    assert load_config({"GENERATOR_URL": "http://generator:8000/"}).generator_url == "http://generator:8000"


def test_layered_layout_puts_every_node_after_its_inputs_and_orders_layers():
    names = ["s1", "s2", "a", "b", "c", "d"]
    nodes = {n: {"id": n, "kind": "source" if n.startswith("s") else "stream_table"} for n in names}
    edges = [("s1", "a"), ("s2", "a"), ("s2", "b"), ("a", "c"), ("b", "c"), ("c", "d"), ("a", "d")]
    layered_layout(nodes, edges)
    assert {n: v["layer"] for n, v in nodes.items()} == {"s1": 0, "s2": 0, "a": 1, "b": 1, "c": 2, "d": 3}
    for layer in range(4):
        orders = sorted(v["order"] for v in nodes.values() if v["layer"] == layer)
        assert orders == list(range(len(orders)))  # 0..n-1 within each layer


def _rec(current: str, effective: str | None, recommended: str) -> pgtrickle.Recommendation:
    return pgtrickle.Recommendation("public", "t", current, effective, recommended, "high", None, None)


def test_advisor_verdicts():
    # The seed dashboard's wording (reference section 9): "✓ KEEP <current_mode>" / "→ SWITCH TO <mode>".
    assert verdict(_rec("DIFFERENTIAL", "DIFFERENTIAL", "KEEP")) == "\u2713 KEEP DIFFERENTIAL"
    assert verdict(_rec("FULL", "FULL", "KEEP")) == "\u2713 KEEP FULL"
    # pg_trickle answers KEEP only when its verdict equals the last COMPLETED action; after a NO_DATA row it
    # repeats the configured mode (src/diagnostics.rs::compute_recommendation): that is no switch
    assert verdict(_rec("DIFFERENTIAL", "NO_DATA", "DIFFERENTIAL")) == "\u2713 KEEP DIFFERENTIAL"
    assert verdict(_rec("DIFFERENTIAL", "DIFFERENTIAL", "FULL")) == "\u2192 SWITCH TO FULL"
    assert verdict(_rec("FULL", None, "DIFFERENTIAL")) == "\u2192 SWITCH TO DIFFERENTIAL"
    assert keeps(_rec("DIFFERENTIAL", None, "KEEP")) and not keeps(_rec("FULL", "FULL", "DIFFERENTIAL"))


def test_history_rates_values_and_window():
    charts = [
        {"id": "r", "title": "rate", "mode": "rate", "prefix": "cat:"},
        {"id": "v", "title": "value", "mode": "value", "keys": ["pnl"]},
    ]
    history = History(charts, window=10, step=2)
    history.add(100.0, {"cat:A": 0, "cat:B": 10, "pnl": 1})
    history.add(101.0, {"cat:A": 50, "cat:B": 10, "pnl": 2})  # under the step: ignored
    history.add(102.0, {"cat:A": 40, "cat:B": 30, "pnl": 3})
    history.add(104.0, {"cat:A": 60, "cat:B": 30, "pnl": -4})
    rendered = {c["id"]: c for c in history.render()["charts"]}
    assert rendered["r"]["times"] == [102.0, 104.0]
    assert {s["label"]: s["values"] for s in rendered["r"]["series"]} == {"A": [20.0, 10.0], "B": [10.0, 0.0]}
    assert rendered["v"]["series"] == [{"key": "pnl", "label": "pnl", "values": [1, 3, -4]}]
    assert [s["key"] for s in rendered["r"]["series"]] == ["cat:A", "cat:B"]
    # The raw samples (what the page merges across workers): the charts' figures only, at the sample times.
    assert history.render()["samples"] == [
        [100.0, {"cat:A": 0, "cat:B": 10, "pnl": 1}],
        [102.0, {"cat:A": 40, "cat:B": 30, "pnl": 3}],
        [104.0, {"cat:A": 60, "cat:B": 30, "pnl": -4}],
    ]
    history.add(106.0, {"cat:A": 60, "cat:B": 30, "pnl": 0, "unused": 7})
    assert history.render()["samples"][-1] == [106.0, {"cat:A": 60, "cat:B": 30, "pnl": 0}]
    history.add(113.0, {"cat:A": 60, "cat:B": 30, "pnl": 0})
    assert history.render()["charts"][1]["times"] == [104.0, 106.0, 113.0]  # older than the 10 s window: dropped


def test_every_registered_scenario_has_a_dashboard_view():
    for name in SCENARIO_NAMES:
        view = load_view(name)
        assert isinstance(view, ScenarioView) and view.name == name
        assert view.history_charts and all(c["mode"] in ("rate", "value") for c in view.history_charts)
    with pytest.raises(ConfigError, match="unknown scenario"):
        load_view("poker")
    assert "utilisation" in FORMATS


def test_vendored_assets_carry_their_licence_and_the_page_uses_no_cdn():
    static = ROOT / "services" / "dashboard" / "static"
    assert (static / "vendor" / "chartjs" / "LICENSE.md").read_text().startswith("The MIT License")
    assert "Chart.js v4.6.1" in (static / "vendor" / "chartjs" / "chart.umd.min.js").read_text()[:200]
    assert "4.6.1" in (static / "vendor" / "README.md").read_text()
    for path in (static / "js").glob("*.js"):
        text = path.read_text()
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, path
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "https://" not in text, path


def test_jsonable_keeps_the_snapshot_valid_json():
    import json
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    values = [Decimal("1.50"), Decimal("NaN"), Decimal("Infinity"), float("nan"), float("-inf"), 2.5, 3, "x", None]
    assert [jsonable(v) for v in values] == [1.5, None, None, None, None, 2.5, 3, "x", None]
    assert jsonable(timedelta(seconds=1.5)) == 1.5
    assert jsonable(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05+00:00"
    json.dumps([jsonable(v) for v in values], allow_nan=False)  # strict JSON: would raise on NaN


def test_an_unexpected_error_is_a_json_500_without_a_trace(caplog):
    from devenv.postgres import free_port
    from services.dashboard.app import close_app, create_app

    # Nothing listens on that port: no database is needed to check the error handling.
    env = {"DATABASE_URL": f"postgresql://demo_reader:pw@127.0.0.1:{free_port()}/x", "DEMO_SCENARIO": "ecommerce"}
    app = create_app(load_config(env))

    def boom():
        raise RuntimeError("secret internals: password=hunter2")

    app.add_url_rule("/boom", view_func=boom)
    try:
        response = app.test_client().get("/boom")
        assert response.status_code == 500
        assert response.get_json() == {"error": "Internal Server Error", "detail": "see the dashboard's log"}
        assert "hunter2" not in response.get_data(as_text=True)
        assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
        assert "hunter2" in caplog.text  # the log keeps the details
    finally:
        close_app(app)


def test_switch_to_is_a_change_of_the_configured_mode_only():
    """Recommendation.switch_to (the exporter's pg_trickle_advisor_switch_recommended and the dashboard's
    verdict): KEEP and the configured mode are no switch, whatever the last action was."""
    assert _rec("DIFFERENTIAL", "NO_DATA", "DIFFERENTIAL").switch_to is None
    assert _rec("DIFFERENTIAL", "DIFFERENTIAL", "KEEP").switch_to is None
    assert _rec("DIFFERENTIAL", "NO_DATA", "FULL").switch_to == "FULL"
    assert _rec("FULL", "FULL", "DIFFERENTIAL").switch_to == "DIFFERENTIAL"
    assert _rec("IMMEDIATE", None, "DIFFERENTIAL").switch_to == "DIFFERENTIAL"
