"""The operator's reconciliation (services/operator/reconcile.py) against real PostgreSQL 18 + the engine:
the same functions the kopf handlers call, as role `demo`, without Kubernetes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devenv.postgres import free_port
from services.common import pgtrickle
from services.operator import reconcile
from services.operator.config import OperatorConfig
from services.operator.handlers import RELEASE_HINT, Databases, removal
from services.operator.spec import parse_spec
from tests.support import scenario_defining_queries, stream_table_differences

QUERY = "SELECT c.country, COUNT(*) AS customers FROM customers c GROUP BY c.country"
OTHER_QUERY = "SELECT c.country, MAX(c.id) AS newest FROM customers c GROUP BY c.country"


@pytest.fixture
def owner(demo_db):
    db = demo_db("ecommerce")
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "demo"
        yield conn


def spec(name="op_customers_by_country", **fields):
    return parse_spec({"name": name, "query": QUERY, **fields}, "ignored")


def conditions(outcome, desired):
    return {c["type"]: c for c in reconcile.conditions(desired, outcome, datetime.now(UTC))}


def test_create_then_nothing_to_do(owner):
    desired = spec(schedule="2s", refreshMode="FULL")
    outcome = reconcile.apply(owner, desired, managed=False)
    assert outcome.problem is None
    assert outcome.managed is True
    assert outcome.actions == ["created stream table op_customers_by_country (FULL, schedule 2s)"]
    table = pgtrickle.find_stream_table(owner, "op_customers_by_country")
    assert (table.refresh_mode, table.schedule, table.status) == ("FULL", "2s", "ACTIVE")
    assert stream_table_differences(owner, "op_customers_by_country", QUERY)[1:] == (0, 0)

    status = reconcile.build_status(
        desired, outcome, database="ecommerce_demo", generation=1, previous=None, now=datetime.now(UTC)
    )
    assert status["engineStatus"] == "ACTIVE"
    assert status["effectiveRefreshMode"] == "FULL"
    assert status["schedule"] == "2s"
    assert status["sqlName"] == "public.op_customers_by_country"
    assert status["consecutiveErrors"] == 0
    assert status["lastRefresh"] is not None and status["staleness"] is not None
    by_type = {c["type"]: c for c in status["conditions"]}
    assert by_type["Ready"]["status"] == "True" and by_type["Ready"]["reason"] == "Active"
    assert by_type["Degraded"]["status"] == "False"
    assert by_type["Stale"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])

    again = reconcile.apply(owner, desired, managed=True)
    assert again.problem is None and again.actions == []
    assert pgtrickle.find_stream_table(owner, "op_customers_by_country").pgt_id == table.pgt_id


def test_schedule_and_mode_changes_alter_and_query_changes_replace(owner):
    reconcile.apply(owner, spec(schedule="1s"), managed=False)
    before = pgtrickle.find_stream_table(owner, "op_customers_by_country")

    altered = reconcile.apply(owner, spec(schedule="5m", refreshMode="FULL"), managed=True)
    assert altered.problem is None
    assert altered.actions == [
        "altered public.op_customers_by_country: refresh_mode DIFFERENTIAL -> FULL, schedule 1s -> 5m"
    ]
    after = pgtrickle.find_stream_table(owner, "op_customers_by_country")
    assert (after.pgt_id, after.refresh_mode, after.schedule) == (before.pgt_id, "FULL", "5m")
    # equivalent spellings of the same schedule are not a change
    assert reconcile.apply(owner, spec(schedule="300", refreshMode="FULL"), managed=True).actions == []

    replaced = reconcile.apply(
        owner, parse_spec({"name": "op_customers_by_country", "query": OTHER_QUERY}, "x"), managed=True
    )
    assert replaced.problem is None
    assert replaced.actions == ["replaced public.op_customers_by_country: the query changed"]
    new = pgtrickle.find_stream_table(owner, "op_customers_by_country")
    assert new.pgt_id != before.pgt_id
    assert new.schedule is None  # the new definition's schedule: calculated
    assert stream_table_differences(owner, "op_customers_by_country", OTHER_QUERY)[1:] == (0, 0)


def test_adoption_only_when_the_definition_matches(owner):
    seeded = scenario_defining_queries("ecommerce")["customer_stats"]
    same = parse_spec({"name": "customer_stats", "query": "  " + seeded["query"] + " ;", "schedule": "1s"}, "x")
    adopted = reconcile.apply(owner, same, managed=False)
    assert adopted.problem is None and adopted.managed is True
    assert adopted.actions == ["adopted existing stream table public.customer_stats (same definition)"]

    different = parse_spec({"name": "product_sales", "query": QUERY}, "x")
    before = pgtrickle.find_stream_table(owner, "product_sales")
    conflict = reconcile.apply(owner, different, managed=False)
    assert conflict.managed is False and conflict.actions == []
    assert conflict.problem.reason == "NameConflict" and not conflict.problem.retryable
    assert "already exists with a different definition" in conflict.problem.message
    assert pgtrickle.find_stream_table(owner, "product_sales") == before  # untouched
    # the same definition, but another resource manages it already: not adopted a second time
    claimed = reconcile.apply(
        owner,
        same,
        managed=False,
        claimed_by=lambda name: "customer-stats" if name == "public.customer_stats" else None,
    )
    assert claimed.managed is False and claimed.problem.reason == "NameConflict"
    assert "already managed by StreamTable customer-stats" in claimed.problem.message
    cond = conditions(conflict, different)
    assert cond["Degraded"]["status"] == "True" and cond["Degraded"]["reason"] == "NameConflict"


def test_query_change_of_a_table_others_read_is_altered_in_place(owner):
    seeded = scenario_defining_queries("ecommerce")["customer_stats"]
    reconcile.apply(
        owner, parse_spec({"name": "customer_stats", "query": seeded["query"], "schedule": "1s"}, "x"), managed=False
    )
    before = pgtrickle.find_stream_table(owner, "customer_stats")
    changed_query = seeded["query"].replace("SELECT", "SELECT DISTINCT", 1)
    outcome = reconcile.apply(
        owner, parse_spec({"name": "customer_stats", "query": changed_query, "schedule": "1s"}, "x"), managed=True
    )
    assert outcome.problem is None, outcome.problem
    assert outcome.actions == ["altered the query of public.customer_stats in place (other stream tables read it)"]
    after = pgtrickle.find_stream_table(owner, "customer_stats")
    assert after.pgt_id == before.pgt_id and "DISTINCT" in after.defining_query


def test_bad_query_is_a_condition_with_the_database_message(owner):
    bad = parse_spec({"name": "op_bad", "query": "SELECT country, COUNT(* FROM customers GROUP BY country"}, "x")
    outcome = reconcile.apply(owner, bad, managed=False)
    assert outcome.managed is False and outcome.observation is None
    assert outcome.problem.reason == "DatabaseError" and not outcome.problem.retryable
    assert "syntax error" in outcome.problem.message
    cond = conditions(outcome, bad)
    assert cond["Ready"]["status"] == "False"
    assert cond["Degraded"]["status"] == "True" and "syntax error" in cond["Degraded"]["message"]
    assert pgtrickle.find_stream_table(owner, "op_bad") is None


def test_dependency_not_yet_created_is_retried_until_it_exists(owner):
    downstream = parse_spec({"name": "op_downstream", "query": "SELECT country, customers FROM op_upstream"}, "x")
    waiting = reconcile.apply(owner, downstream, managed=False)
    assert waiting.problem.reason == "DependencyMissing" and waiting.problem.retryable
    assert "op_upstream" in waiting.problem.message
    assert conditions(waiting, downstream)["Degraded"]["reason"] == "DependencyMissing"

    assert reconcile.apply(owner, spec(name="op_upstream"), managed=False).problem is None
    retried = reconcile.apply(owner, downstream, managed=waiting.managed)
    assert retried.problem is None and retried.managed
    deps = {(d.pgt_name, d.source) for d in pgtrickle.dependencies(owner)}
    assert ("op_downstream", "public.op_upstream") in deps


def test_suspend_resume_and_engine_suspension(owner):
    reconcile.apply(owner, spec(), managed=False)
    suspended = reconcile.apply(owner, spec(suspend=True), managed=True)
    assert suspended.actions == ["suspended public.op_customers_by_country (spec.suspend)"]
    assert suspended.suspended_by_operator
    assert pgtrickle.find_stream_table(owner, "op_customers_by_country").status == "SUSPENDED"
    cond = conditions(suspended, spec(suspend=True))
    assert (cond["Ready"]["reason"], cond["Degraded"]["status"]) == ("Suspended", "False")

    resumed = reconcile.apply(owner, spec(), managed=True, suspended_by_operator=True)
    assert resumed.actions == ["resumed public.op_customers_by_country"]
    assert pgtrickle.find_stream_table(owner, "op_customers_by_country").status == "ACTIVE"

    # Suspended by the engine (or by hand), not by the spec: reported, never resumed behind anyone's back.
    pgtrickle.alter_stream_table(owner, "op_customers_by_country", status="SUSPENDED")
    outcome = reconcile.sync(owner, spec(), managed=True, suspended_by_operator=False)
    assert outcome.actions == []
    cond = conditions(outcome, spec())
    assert cond["Degraded"]["status"] == "True" and cond["Degraded"]["reason"] == "EngineSuspended"
    assert pgtrickle.find_stream_table(owner, "op_customers_by_country").status == "SUSPENDED"


def test_sync_recreates_a_managed_table_that_vanished(owner):
    reconcile.apply(owner, spec(), managed=False)
    pgtrickle.drop_stream_table(owner, "op_customers_by_country")
    outcome = reconcile.sync(owner, spec(), managed=True, suspended_by_operator=False)
    assert outcome.actions == [
        "created stream table op_customers_by_country (AUTO, schedule calculated) (it had disappeared)"
    ]
    assert pgtrickle.find_stream_table(owner, "op_customers_by_country") is not None
    # an unmanaged name is only observed
    assert reconcile.sync(owner, spec(name="op_never"), managed=False, suspended_by_operator=False).actions == []
    assert pgtrickle.find_stream_table(owner, "op_never") is None


def test_remove_honours_deletion_policy_and_dependents(owner):
    reconcile.apply(owner, spec(name="op_a"), managed=False)
    retained = reconcile.remove(owner, spec(name="op_a", deletionPolicy="Retain"), managed=True)
    assert retained.actions == ["retained stream table op_a (deletionPolicy Retain)"]
    assert pgtrickle.find_stream_table(owner, "op_a") is not None

    reconcile.apply(owner, parse_spec({"name": "op_b", "query": "SELECT country FROM op_a"}, "x"), managed=False)
    blocked = reconcile.remove(owner, spec(name="op_a"), managed=True)
    assert blocked.problem.reason == "DependentsExist" and blocked.problem.retryable
    assert pgtrickle.find_stream_table(owner, "op_a") is not None

    assert reconcile.remove(owner, spec(name="op_b"), managed=True).actions == ["dropped stream table op_b"]
    assert reconcile.remove(owner, spec(name="op_a"), managed=True).actions == ["dropped stream table op_a"]
    assert pgtrickle.find_stream_table(owner, "op_a") is None

    # a table this resource never created or adopted is never dropped
    unmanaged = reconcile.remove(owner, spec(name="product_sales"), managed=False)
    assert unmanaged.problem is None and pgtrickle.find_stream_table(owner, "product_sales") is not None


def test_engine_errors_become_degraded_with_the_refresh_message(owner):
    reconcile.apply(owner, spec(name="op_fragile", schedule="1s"), managed=False)
    owner.execute("ALTER TABLE customers RENAME COLUMN country TO country_code")
    try:
        owner.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = now() - interval '1 hour'")
        owner.execute("INSERT INTO customers (name, country_code) VALUES ('x', 'DE')")
        pgtrickle.emulator_tick(owner)
    except psycopg.Error as exc:  # the real engine refuses the rename (block_source_ddl)
        pytest.skip(f"the engine does not allow breaking a source: {exc}")
    outcome = reconcile.sync(owner, spec(name="op_fragile"), managed=True, suspended_by_operator=False)
    table = outcome.observation.table
    # a missing column is a permanent error: ERROR at once, the reason in last_error_message (pg_trickle 0.67)
    assert table.status == "ERROR" and "country" in (table.last_error_message or "")
    cond = conditions(outcome, spec(name="op_fragile"))
    assert cond["Degraded"]["status"] == "True"
    assert "country" in cond["Degraded"]["message"]


@pytest.mark.parametrize("scenario", ["ecommerce", "fraud", "finance"])
def test_examples_apply_to_their_scenario(demo_db, scenario):
    import yaml

    from tests.support import ROOT

    db = demo_db(scenario)
    documents = [
        d for d in yaml.safe_load_all((ROOT / "examples" / "streamtables" / f"{scenario}.yaml").read_text()) if d
    ]
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        for document in documents:
            desired = parse_spec(document["spec"], document["metadata"]["name"])
            outcome = reconcile.apply(conn, desired, managed=False)
            assert outcome.problem is None, outcome.problem
            assert conditions(outcome, desired)["Ready"]["status"] == "True"
            assert stream_table_differences(conn, desired.name, desired.query)[1:] == (0, 0)


def test_topk_definitions_compare_with_the_query_as_given(owner):
    """pg_trickle keeps a TopK query's ORDER BY ... LIMIT out of defining_query (original_query has it):
    an unchanged spec must not look like a changed query."""
    topk = parse_spec({"name": "op_top", "query": f"{QUERY} ORDER BY customers DESC, country LIMIT 3"}, "x")
    assert reconcile.apply(owner, topk, managed=False).problem is None
    before = pgtrickle.find_stream_table(owner, "op_top")
    assert "LIMIT" not in before.defining_query and before.user_query == topk.query
    assert reconcile.apply(owner, topk, managed=True).actions == []
    assert reconcile.apply(owner, topk, managed=False).actions == [
        "adopted existing stream table public.op_top (same definition)"
    ]
    assert pgtrickle.find_stream_table(owner, "op_top").pgt_id == before.pgt_id


def test_sync_undoes_changes_made_behind_the_operators_back(owner):
    desired = spec(name="op_drift", schedule="2s", suspend=False)
    reconcile.apply(owner, desired, managed=False)
    assert reconcile.drift(desired, pgtrickle.find_stream_table(owner, "op_drift")) == []
    # someone alters the stream table by hand: the next status sync puts the spec back
    pgtrickle.alter_stream_table(owner, "op_drift", schedule="7m")
    assert reconcile.drift(desired, pgtrickle.find_stream_table(owner, "op_drift")) == ["schedule"]
    outcome = reconcile.sync(owner, desired, managed=True, suspended_by_operator=False)
    assert outcome.problem is None
    assert outcome.actions == ["altered public.op_drift: schedule 7m -> 2s (it had been changed outside the operator)"]
    assert pgtrickle.find_stream_table(owner, "op_drift").schedule == "2s"
    # a spec that says suspended stays suspended
    suspended = spec(name="op_drift", schedule="2s", suspend=True)
    reconcile.apply(owner, suspended, managed=True)
    pgtrickle.resume_stream_table(owner, "op_drift")
    again = reconcile.sync(owner, suspended, managed=True, suspended_by_operator=True)
    assert again.actions == ["suspended public.op_drift (spec.suspend) (it had been changed outside the operator)"]
    assert pgtrickle.find_stream_table(owner, "op_drift").status == "SUSPENDED"
    # the last spec change failed (recreate=False) or the table is not ours: observed only
    pgtrickle.alter_stream_table(owner, "op_drift", schedule="7m")
    assert reconcile.sync(owner, suspended, managed=True, suspended_by_operator=True, recreate=False).actions == []
    assert reconcile.sync(owner, suspended, managed=False, suspended_by_operator=False).actions == []
    assert pgtrickle.find_stream_table(owner, "op_drift").schedule == "7m"


def test_status_timers_share_one_pgt_status_per_interval(owner, demo_db):
    reconcile.apply(owner, spec(name="op_one", schedule="1s"), managed=False)
    reconcile.apply(owner, spec(name="op_two", schedule="1s"), managed=False)
    one = pgtrickle.find_stream_table(owner, "op_one")
    two = pgtrickle.find_stream_table(owner, "op_two")
    snapshots = reconcile.StatusSnapshots(max_age=3600)
    first = snapshots.lookup("ecommerce_demo", owner, one)
    assert first == pgtrickle.status_of(owner, "public.op_one") or first.staleness is not None
    # the second table is served from the same snapshot: a closed connection proves no query ran
    closed = psycopg.connect(demo_db("ecommerce").owner_url)
    closed.close()
    served = snapshots.lookup("ecommerce_demo", closed, two)
    assert served.name == "public.op_two" and served.data_timestamp == two.data_timestamp
    assert snapshots.calls == 1
    # a table refreshed since the snapshot (another data timestamp) is looked up on its own
    moved = replace(two, data_timestamp=None)
    assert snapshots.lookup("ecommerce_demo", owner, moved).name == "public.op_two"
    with pytest.raises(psycopg.OperationalError):
        snapshots.lookup("ecommerce_demo", closed, moved)
    # through sync(), as the timer calls it
    outcome = reconcile.sync(
        owner,
        spec(name="op_two", schedule="1s"),
        managed=True,
        suspended_by_operator=False,
        status_lookup=lambda conn, table: snapshots.lookup("ecommerce_demo", conn, table),
    )
    assert outcome.observation.status.name == "public.op_two" and snapshots.calls == 1
    # an expired snapshot is taken again
    snapshots.max_age = 0
    snapshots.lookup("ecommerce_demo", owner, one)
    assert snapshots.calls == 2


def _databases(conninfo: str, default_database: str) -> Databases:
    config = OperatorConfig(
        scenario="ecommerce",
        namespace="demo",
        health_host="127.0.0.1",
        health_port=0,
        sync_interval=1.0,
        delete_timeout=600.0,
        conninfo=conninfo,
        default_database=default_database,
        log_level="INFO",
    )
    return Databases(config, connect_wait=1.0)


def test_finalizer_releases_a_resource_whose_database_is_gone(demo_db):
    db = demo_db("ecommerce")
    databases = _databases(db.owner_url, conninfo_to_dict(db.owner_url)["dbname"])
    try:
        desired = spec(name="op_gone", database="op_no_such_database")
        outcome = removal(databases, desired, managed=True)
        assert outcome.problem is None
        assert outcome.actions == [
            'released: database "op_no_such_database" does not exist, so neither does stream table op_gone'
        ]
        # while it is missing, applying the spec says so (retried), rather than "unavailable"
        applied = databases.run(
            desired.database, lambda conn: reconcile.apply(conn, desired, managed=False), managed=False
        )
        assert applied.problem.reason == "DatabaseMissing" and applied.problem.retryable
        assert "op_no_such_database" not in databases._pools  # no pool left reconnecting in the background
    finally:
        databases.close()


def test_finalizer_keeps_an_unreachable_database_with_the_servers_message_and_a_way_out(demo_db):
    db = demo_db("ecommerce")
    conninfo = make_conninfo(db.owner_url, host="127.0.0.1", port=str(free_port()))
    databases = _databases(conninfo, conninfo_to_dict(conninfo)["dbname"])
    try:
        outcome = removal(databases, spec(name="op_far"), managed=True)
        problem = outcome.problem
        assert problem.reason == "DatabaseUnavailable" and problem.retryable
        assert "connection" in problem.message.lower() and "couldn't get a connection" not in problem.message
        assert problem.message.endswith(RELEASE_HINT)
        assert outcome.actions == []
        # after OPERATOR_DELETE_TIMEOUT the resource is released with a Warning (nothing was dropped)
        assert removal(databases, spec(name="op_far"), managed=True, waited=599, timeout=600).problem is not None
        assert removal(databases, spec(name="op_far"), managed=True, waited=700, timeout=0).problem is not None
        abandoned = removal(databases, spec(name="op_far"), managed=True, waited=600, timeout=600)
        assert abandoned.problem is None and abandoned.actions == []
        assert abandoned.gave_up.reason == "DropAbandoned"
        assert "after 600s (OPERATOR_DELETE_TIMEOUT)" in abandoned.gave_up.message
        assert "may remain" in abandoned.gave_up.message
        # Retain needs no database: it releases at once
        assert removal(databases, spec(name="op_far", deletionPolicy="Retain"), managed=True).problem is None
    finally:
        databases.close()


def test_only_the_owner_can_hold_up_a_reconciliation(demo_db):
    """The per-name lock is a row lock the owner alone may take: demo_reader holding every advisory key the
    operator once used does not stall a reconciliation, and cannot lock the row itself."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        name = "op_lock_probe"
        with psycopg.connect(db.reader_url, autocommit=True) as reader:
            reader.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"pgtrickle-operator:{name}",))
            conn.execute("SET statement_timeout = '10s'")
            outcome = reconcile.apply(conn, spec(name=name), managed=False)
            assert outcome.problem is None and outcome.managed
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                reader.execute("SELECT 1 FROM demo_meta.operator_locks WHERE name = %s FOR UPDATE", (name,))
        with conn.transaction():
            conn.execute("SELECT 1 FROM demo_meta.operator_locks WHERE name = %s FOR UPDATE", (name,))
            with psycopg.connect(db.owner_url) as other:
                other.execute("SET lock_timeout = '200ms'")
                blocked = reconcile.apply(other, spec(name=name), managed=True)
                assert blocked.problem is not None and "lock" in blocked.problem.message, blocked
