"""The operator's pure parts: spec parsing and defaults, schedule comparison, conditions, configuration."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from psycopg import errors as pgerrors

from services.common.pgtrickle import StreamTable
from services.common.settings import ConfigError
from services.operator import reconcile
from services.operator.config import load_config
from services.operator.reconcile import Observation, Outcome, Problem
from services.operator.spec import SpecError, default_sql_name, parse_spec, same_query, schedule_key
from tests.unit.test_operator_crd import SCHEMA

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def table(**fields) -> StreamTable:
    base = {
        "pgt_id": 1,
        "pgt_schema": "public",
        "pgt_name": "t",
        "refresh_mode": "DIFFERENTIAL",
        "schedule": "1s",
        "status": "ACTIVE",
        "is_populated": True,
        "consecutive_errors": 0,
        "data_timestamp": NOW,
        "last_refresh_at": NOW - timedelta(seconds=2),
        "defining_query": "SELECT 1",
    }
    return StreamTable(**{**base, **fields})


def observed(**fields) -> Outcome:
    return Outcome(managed=True, observation=Observation(table(**fields), None, None))


def by_type(outcome: Outcome, **spec) -> dict:
    desired = parse_spec({"query": "SELECT 1", **spec}, "t")
    return {c["type"]: (c["status"], c["reason"]) for c in reconcile.conditions(desired, outcome, NOW)}


def test_spec_defaults():
    spec = parse_spec({"query": " SELECT 1 ;\n"}, "top-10.customers")
    assert spec.name == "top_10_customers"
    assert (spec.query, spec.schedule, spec.refresh_mode) == ("SELECT 1", "calculated", "AUTO")
    assert (spec.database, spec.suspend, spec.deletion_policy) == (None, False, "Delete")
    assert parse_spec({"query": "SELECT 1", "refreshMode": "full"}, "x").refresh_mode == "FULL"
    assert default_sql_name("Orders-By-Country") == "orders_by_country"


def test_spec_errors_name_the_field():
    with pytest.raises(SpecError, match=r"spec\.query"):
        parse_spec({"query": "   "}, "x")
    with pytest.raises(SpecError, match=r"spec\.schedule"):
        parse_spec({"query": "SELECT 1", "schedule": "every second"}, "x")
    with pytest.raises(SpecError, match=r"spec\.name"):
        parse_spec({"query": "SELECT 1"}, "9lives")


@pytest.mark.parametrize(
    ("a", "b"),
    [("1m", "60s"), ("60", "1m"), ("1h30m", "90m"), ("calculated", "CALCULATED"), ("0  * * * *", "0 * * * *")],
)
def test_equivalent_schedules_compare_equal(a, b):
    assert schedule_key(a) == schedule_key(b)


def test_immediate_ignores_the_schedule():
    assert parse_spec({"query": "SELECT 1", "refreshMode": "IMMEDIATE", "schedule": "5s"}, "x").schedule_key is None
    assert schedule_key("calculated") is None and schedule_key(None) is None
    assert schedule_key("1s") != schedule_key("2s")


def test_same_query_ignores_whitespace_and_final_semicolon():
    assert same_query("SELECT a,\n  b FROM t;", "SELECT a, b FROM t")
    assert not same_query("SELECT a FROM t", "SELECT b FROM t")


def test_conditions_for_engine_states():
    assert by_type(observed()) == {
        "Ready": ("True", "Active"),
        "Degraded": ("False", "AsExpected"),
        "Stale": ("False", "Fresh"),
    }
    assert by_type(observed(status="ERROR"))["Degraded"] == ("True", "EngineError")
    assert by_type(observed(status="SUSPENDED"))["Degraded"] == ("True", "EngineSuspended")
    assert by_type(observed(status="SUSPENDED"), suspend=True) == {
        "Ready": ("False", "Suspended"),
        "Degraded": ("False", "AsExpected"),
        "Stale": ("Unknown", "NotActive"),
    }
    assert by_type(observed(consecutive_errors=2))["Degraded"] == ("True", "RefreshFailing")
    missing = Outcome(managed=False)
    assert by_type(missing)["Ready"] == ("False", "NotFound")
    failed = Outcome(managed=False, problem=Problem("DependencyMissing", 'relation "x" does not exist', True))
    assert by_type(failed)["Ready"] == ("False", "DependencyMissing")
    assert by_type(failed)["Degraded"] == ("True", "DependencyMissing")


def test_stale_is_judged_by_schedule():
    assert by_type(observed(last_refresh_at=NOW - timedelta(seconds=59)))["Stale"] == ("False", "Fresh")
    assert by_type(observed(last_refresh_at=NOW - timedelta(seconds=61)))["Stale"] == ("True", "RefreshOverdue")
    # 10 intervals of a 1-minute schedule
    assert by_type(observed(schedule="1m", last_refresh_at=NOW - timedelta(minutes=9)))["Stale"][0] == "False"
    assert by_type(observed(schedule="1m", last_refresh_at=NOW - timedelta(minutes=11)))["Stale"][0] == "True"
    assert by_type(observed(schedule="@hourly"))["Stale"] == ("Unknown", "CronSchedule")
    assert by_type(observed(refresh_mode="IMMEDIATE", schedule=None))["Stale"] == ("False", "Immediate")
    assert by_type(observed(last_refresh_at=None))["Stale"] == ("True", "NeverRefreshed")


def test_last_transition_time_survives_an_unchanged_status():
    first = reconcile.merge_conditions(
        [{"type": "Ready", "status": "True", "reason": "Active", "message": "m"}], None, 1, NOW
    )
    later = NOW + timedelta(minutes=5)
    same = reconcile.merge_conditions(
        [{"type": "Ready", "status": "True", "reason": "Active", "message": "other"}], first, 2, later
    )
    assert same[0]["lastTransitionTime"] == first[0]["lastTransitionTime"] == "2026-11-25T12:00:00Z"
    assert same[0]["observedGeneration"] == 2
    flipped = reconcile.merge_conditions(
        [{"type": "Ready", "status": "False", "reason": "EngineError", "message": "m"}], same, 2, later
    )
    assert flipped[0]["lastTransitionTime"] == "2026-11-25T12:05:00Z"


def test_condition_messages_fit_the_crd():
    long = [{"type": "Degraded", "status": "True", "reason": "DatabaseError", "message": "x" * 40000}]
    [merged] = reconcile.merge_conditions(long, None, 1, datetime(2026, 11, 25, tzinfo=UTC))
    assert len(merged["message"]) == reconcile.MAX_MESSAGE
    item = SCHEMA["properties"]["status"]["properties"]["conditions"]["items"]
    assert item["properties"]["message"]["maxLength"] == reconcile.MAX_MESSAGE
    assert set(item["required"]) <= set(merged)
    reason = re.compile(item["properties"]["reason"]["pattern"])
    for name in ("DatabaseUnavailable", "DatabaseMissing", "Timeout", "EngineSuspended", "NameConflict"):
        assert reason.fullmatch(name)


def test_database_errors_are_classified():
    assert reconcile.classify(psycopg.OperationalError("connection refused\nmore")) == Problem(
        "DatabaseUnavailable", "connection refused", True
    )
    assert reconcile.classify(pgerrors.UndefinedTable("relation x")).reason == "DependencyMissing"
    assert reconcile.classify(pgerrors.UndefinedTable("relation x")).retryable
    assert reconcile.classify(pgerrors.SyntaxError("syntax error")).retryable is False
    assert reconcile.classify(pgerrors.InsufficientPrivilege("no")).reason == "PermissionDenied"
    # OperationalError is wider than "unreachable": timeouts are retried as such, refusals wait for the spec
    assert reconcile.classify(pgerrors.QueryCanceled("canceling statement due to statement timeout")) == Problem(
        "Timeout", "canceling statement due to statement timeout", True
    )
    assert reconcile.classify(pgerrors.ObjectNotInPrerequisiteState("not suspended")).reason == "DatabaseError"
    assert reconcile.classify(pgerrors.AdminShutdown("terminating connection")).reason == "DatabaseUnavailable"
    assert reconcile.classify(pgerrors.InvalidCatalogName("no database")).reason == "DatabaseMissing"


def test_format_duration():
    assert reconcile.format_duration(3.21) == "3.2s"
    assert reconcile.format_duration(125) == "2m5s"
    assert reconcile.format_duration(7300) == "2h1m"
    assert reconcile.format_duration(3 * 86400 + 3600) == "3d1h"
    assert reconcile.format_duration(None) is None


def test_config_defaults_and_errors(tmp_path):
    config = load_config({"OPERATOR_NAMESPACE": "demo", "DEMO_PASSWORD": "pw"})
    assert (config.namespace, config.health_port, config.sync_interval) == ("demo", 8081, 10.0)
    assert config.delete_timeout == 600.0
    assert load_config({"OPERATOR_NAMESPACE": "demo", "OPERATOR_DELETE_TIMEOUT": "0"}).delete_timeout == 0.0
    with pytest.raises(ConfigError, match="OPERATOR_DELETE_TIMEOUT"):
        load_config({"OPERATOR_NAMESPACE": "demo", "OPERATOR_DELETE_TIMEOUT": "-1"})
    assert "user=demo" in config.conninfo and "dbname=ecommerce_demo" in config.conninfo
    assert "password=pw" in config.conninfo
    assert "dbname=other" in config.conninfo_for("other")
    fraud = load_config({"OPERATOR_NAMESPACE": "demo", "DEMO_SCENARIO": "fraud"})
    assert fraud.default_database == "fraud_demo"

    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("pg-trickle\n")
    assert load_config({}, service_account_file=namespace_file).namespace == "pg-trickle"
    with pytest.raises(ConfigError, match="OPERATOR_NAMESPACE is not set"):
        load_config({}, service_account_file=tmp_path / "absent")
    with pytest.raises(ConfigError, match="OPERATOR_HEALTH_PORT"):
        load_config({"OPERATOR_NAMESPACE": "demo", "OPERATOR_HEALTH_PORT": "70000"})
    with pytest.raises(ConfigError, match="OPERATOR_SYNC_INTERVAL"):
        load_config({"OPERATOR_NAMESPACE": "demo", "OPERATOR_SYNC_INTERVAL": "soon"})


def test_drop_refusals_are_classified_as_pg_trickle_raises_them():
    """pg_trickle 0.67 refuses a drop with dependents with InvalidArgument, SQLSTATE 22023
    (src/api/alter.rs::drop_stream_table_impl_inner): retried like 2BP01; other 22023 refusals (a bad
    schedule, an invalid mode) wait for a spec change."""
    refusal = pgerrors.InvalidParameterValue(
        "invalid argument: stream table public.a has dependent stream tables: public.b."
        " Use cascade => true to drop them automatically."
    )
    assert (reconcile.classify(refusal).reason, reconcile.classify(refusal).retryable) == ("DependentsExist", True)
    legacy = pgerrors.DependentObjectsStillExist("cannot drop stream table")
    assert (reconcile.classify(legacy).reason, reconcile.classify(legacy).retryable) == ("DependentsExist", True)
    bad_schedule = pgerrors.InvalidParameterValue("invalid argument: invalid schedule '5x'")
    assert (reconcile.classify(bad_schedule).reason, reconcile.classify(bad_schedule).retryable) == (
        "DatabaseError",
        False,
    )
