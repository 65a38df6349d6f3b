"""services.common: settings validation, the scenario registry, exit codes, backoff, logging, ops server."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from psycopg.conninfo import conninfo_to_dict

from services.common import scenarios
from services.common.db import Backoff, with_identity
from services.common.logs import JsonFormatter
from services.common.opsserver import OpsServer, create_ops_app
from services.common.settings import (
    ConfigError,
    database_conninfo,
    describe_conninfo,
    env_bool,
    env_choice,
    env_float,
    env_int,
    service_conninfo,
)
from tests.support import ROOT


@pytest.mark.parametrize(
    ("reader", "value", "fragment"),
    [
        (lambda env: env_int("N", 1, minimum=0, env=env), "x", "N='x' is not a valid int"),
        (lambda env: env_int("N", 1, minimum=0, env=env), "-3", "N='-3' is too small; it must be >= 0"),
        (lambda env: env_float("N", 1.0, maximum=10, env=env), "11", "N='11' is too large; it must be <= 10"),
        (lambda env: env_float("N", 1.0, env=env), "nan", "N='nan' is not a valid number"),
        (lambda env: env_bool("N", True, env=env), "maybe", "N='maybe' is not a boolean"),
        (lambda env: env_choice("N", "a", ("a", "b"), env=env), "c", "N='c' is not valid; allowed values: a, b"),
    ],
)
def test_bad_values_name_the_variable_and_what_is_allowed(reader, value, fragment):
    with pytest.raises(ConfigError) as error:
        reader({"N": value})
    assert fragment in str(error.value)


def test_defaults_apply_when_unset_or_blank():
    assert env_int("N", 7, env={}) == 7
    assert env_float("N", 0.5, env={"N": "  "}) == 0.5
    assert env_bool("N", False, env={"N": "yes"}) is True


def test_database_conninfo_prefers_database_url_and_overrides_dbname():
    env = {"DATABASE_URL": "postgresql://u:secret@db.example:6543/postgres", "PGHOST": "ignored"}
    info = database_conninfo(dbname="ecommerce_demo", env=env)
    assert "host=db.example" in info and "dbname=ecommerce_demo" in info and "ignored" not in info
    assert "secret" not in describe_conninfo(info)
    assert describe_conninfo(info) == "u@db.example:6543/ecommerce_demo"


def test_database_conninfo_from_pg_variables_and_service_password():
    env = {"PGHOST": "pg", "PGUSER": "demo_writer", "DEMO_WRITER_PASSWORD": "pw"}
    info = database_conninfo(dbname="x", password_var="DEMO_WRITER_PASSWORD", env=env)
    assert "host=pg" in info and "user=demo_writer" in info and "password=pw" in info


def test_service_conninfo_fills_only_what_the_environment_leaves_unset():
    conninfo_of = {
        "default_user": "demo_reader",
        "default_dbname": "fraud_demo",
        "password_var": "DEMO_READER_PASSWORD",
        "connect_timeout": "3",
    }
    info = service_conninfo(env={"PGHOST": "pg", "DEMO_READER_PASSWORD": "pw"}, **conninfo_of)
    assert conninfo_to_dict(info) == {
        "host": "pg",
        "user": "demo_reader",
        "dbname": "fraud_demo",
        "password": "pw",
        "connect_timeout": "3",
    }
    given = "postgresql://other:given@db:5433/elsewhere?connect_timeout=9"
    info = service_conninfo(env={"DATABASE_URL": given, "DEMO_READER_PASSWORD": "pw"}, **conninfo_of)
    assert conninfo_to_dict(info) == {
        "host": "db",
        "port": "5433",
        "user": "other",
        "dbname": "elsewhere",
        "password": "given",
        "connect_timeout": "9",
    }


def test_scenario_class_finds_a_services_per_scenario_class_by_module_name():
    from services.generator.scenarios import ScenarioGenerator
    from services.generator.scenarios.fraud import Generator

    package = "services.generator.scenarios"
    assert scenarios.scenario_class(package, "fraud", "Generator", ScenarioGenerator) is Generator
    with pytest.raises(ConfigError, match="unknown scenario 'weather'"):
        scenarios.scenario_class(package, "weather", "Generator", ScenarioGenerator)
    with pytest.raises(ConfigError, match=r"scenario 'fraud' has no module services/exporter/fraud\.py"):
        scenarios.scenario_class("services.exporter", "fraud", "Generator", ScenarioGenerator)
    with pytest.raises(
        ConfigError, match=r"services/generator/scenarios/fraud\.py defines no View\(ScenarioGenerator\)"
    ):
        scenarios.scenario_class(package, "fraud", "View", ScenarioGenerator)


def test_bad_database_url_is_a_config_error():
    with pytest.raises(ConfigError, match="DATABASE_URL is not a valid connection string"):
        database_conninfo(env={"DATABASE_URL": "postgresql://[broken"})


def test_identity_adds_application_name_and_statement_timeout():
    info = with_identity("host=h dbname=d", "demo-dashboard", 2500)
    assert "application_name=demo-dashboard" in info and "statement_timeout=2500" in info


def test_backoff_grows_and_is_capped():
    backoff = Backoff(initial=0.1, maximum=1.0)
    delays = [backoff.next_delay() for _ in range(12)]
    assert all(0.05 <= d <= 1.0 for d in delays)
    assert max(delays[-4:]) > 0.5  # reached the cap region
    backoff.reset()
    assert backoff.next_delay() <= 0.1


def test_registry_knows_every_registered_scenario_and_rejects_others():
    for name in scenarios.SCENARIO_NAMES:
        spec = scenarios.get_scenario(name)
        assert spec.database == f"{name}_demo"
        for filename in (*scenarios.SQL_FILES, "scenario.toml"):
            assert spec.sql_file(filename).is_file(), f"{name} lacks {filename}"
    with pytest.raises(ConfigError, match="unknown scenario 'weather'"):
        scenarios.get_scenario("weather")


def test_registry_has_no_scenario_specific_code():
    """Adding a scenario is one registration line: the shared modules never name a scenario."""
    source = (ROOT / "services" / "common" / "scenarios.py").read_text()
    registration = [line for line in source.splitlines() if line.startswith("SCENARIO_NAMES")]
    assert len(registration) == 1
    rest = source.replace(registration[0], "")
    for name in scenarios.SCENARIO_NAMES:
        assert rest.count(f'"{name}"') <= 1  # at most the DEFAULT_SCENARIO line
    # Every other module of every service: only services/<service>/scenarios/<name>.py know a scenario.
    per_scenario = {f"{name}.py" for name in scenarios.SCENARIO_NAMES}
    shared = [
        path
        for path in (ROOT / "services").rglob("*.py")
        if path.name != "scenarios.py" and not (path.parent.name == "scenarios" and path.name in per_scenario)
    ]
    assert len(shared) > 30, "the scan found too few modules"
    for path in shared:
        text = path.read_text()
        assert not any(f'"{name}"' in text for name in scenarios.SCENARIO_NAMES), path.relative_to(ROOT)


def test_scenario_manifest_matches_the_seed_for_ecommerce():
    spec = scenarios.get_scenario("ecommerce")
    assert [(s.name, s.refresh_mode, s.schedule) for s in spec.stream_tables] == [
        ("product_sales", "DIFFERENTIAL", "1s"),
        ("customer_stats", "DIFFERENTIAL", "1s"),
        ("category_revenue", "DIFFERENTIAL", "1s"),
        ("country_revenue", "DIFFERENTIAL", "calculated"),
        ("catalog_price_impact", "DIFFERENTIAL", "5s"),
        ("top_10_customers", "DIFFERENTIAL", "calculated"),
    ]


def test_invalid_scenario_env_exits_2_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "services.bootstrap"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={"DEMO_SCENARIO": "weather", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "DEMO_SCENARIO='weather' is not valid; allowed values: ecommerce, fraud, finance" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_log_lines_carry_fields():
    record = logging.LogRecord("gen", logging.INFO, __file__, 1, "batch committed", None, None)
    record.fields = {"events": 12}
    entry = json.loads(JsonFormatter("demo-generator").format(record))
    assert entry["msg"] == "batch committed" and entry["events"] == 12 and entry["service"] == "demo-generator"
    assert entry["level"] == "info"


def test_ops_server_health_readiness_and_metrics():
    state = {"ready": False}
    app = create_ops_app("test", lambda: (state["ready"], "database reachable" if state["ready"] else "no db"))
    server = OpsServer(app, "127.0.0.1", 0).start()
    base = f"http://127.0.0.1:{server.port}"
    try:
        with urllib.request.urlopen(base + "/healthz") as response:
            assert json.load(response)["status"] == "ok"
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(base + "/readyz")
        assert not_ready.value.code == 503 and json.load(not_ready.value)["detail"] == "no db"
        state["ready"] = True
        with urllib.request.urlopen(base + "/readyz") as response:
            assert json.load(response) == {"ready": True, "detail": "database reachable"}
        with urllib.request.urlopen(base + "/metrics") as response:
            assert b"python_info" in response.read()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(base + "/nope")
        assert missing.value.code == 404 and json.load(missing.value)["error"] == "Not Found"
    finally:
        server.stop()
