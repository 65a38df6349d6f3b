"""The pg_trickle emulator against real PostgreSQL 18: catalog shape, lifecycle, refresh, scheduling,
monitoring formulas. Expected names, columns and values come from ../shared/reference/pg_trickle-api.md."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import psycopg
import pytest
import xxhash
from psycopg import sql

from services.common import pgtrickle

# -- helpers -------------------------------------------------------------------------------------------


@pytest.fixture
def db(emulator_db):
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        yield conn


def make_due(conn, name: str | None = None) -> None:
    """Moves last_refresh_at back so duration schedules are due now (instead of sleeping)."""
    conn.execute(
        "UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = last_refresh_at - interval '1 hour'"
        " WHERE %s::text IS NULL OR pgt_name = %s",
        (name, name),
    )


def history(conn, name: str) -> list[tuple]:
    return conn.execute(
        """SELECT h.action, h.status, h.rows_inserted, h.rows_deleted, h.initiated_by, h.start_time, h.end_time,
                  h.error_message
             FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables st USING (pgt_id)
            WHERE st.pgt_name = %s ORDER BY h.refresh_id""",
        (name,),
    ).fetchall()


def assert_matches_query(conn, name: str) -> None:
    """The stored rows equal the defining query as multisets, both ways."""
    query = conn.execute(
        "SELECT defining_query FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s", (name,)
    ).fetchone()[0]
    cols = [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0"
            " AND NOT attisdropped AND attname <> '__pgt_row_id' ORDER BY attnum",
            (name,),
        ).fetchall()
    ]
    stored = sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, cols)), sql.Identifier(name))
    defining = sql.SQL(query)  # the catalog's own text, run as the engine runs it
    for left, right in ((stored, defining), (defining, stored)):
        difference = sql.SQL("SELECT count(*) FROM (({}) EXCEPT ALL ({})) x").format(left, right)
        surplus = conn.execute(difference).fetchone()[0]
        assert surplus == 0, f"{name}: {surplus} rows differ between stored rows and the query"


def columns_of(conn, relation: str) -> dict[str, str]:
    return dict(
        conn.execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = %s::regclass"
            " AND attnum > 0 AND NOT attisdropped",
            (relation,),
        ).fetchall()
    )


def result_columns(conn, function_call: str) -> list[tuple[str, str]]:
    cur = conn.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(sql.SQL(function_call)))
    return [(d.name, d.type_code) for d in cur.description]


def check_values(conn, table: str, column: str) -> str:
    return " ".join(
        r[0]
        for r in conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass AND contype = 'c'"
            " AND pg_get_constraintdef(oid) LIKE %s",
            (table, f"%({column} %"),
        ).fetchall()
    )


# -- catalog shape ---------------------------------------------------------------------------------------

REFERENCE_CATALOG = {
    "pgtrickle.pgt_stream_tables": {
        "pgt_id": "bigint",
        "pgt_relid": "oid",
        "pgt_name": "text",
        "pgt_schema": "text",
        "defining_query": "text",
        "original_query": "text",
        "schedule": "text",
        "refresh_mode": "text",
        "status": "text",
        "is_populated": "boolean",
        "data_timestamp": "timestamp with time zone",
        "frontier": "jsonb",
        "last_refresh_at": "timestamp with time zone",
        "consecutive_errors": "integer",
        "needs_reinit": "boolean",
        "scc_id": "integer",
        "refresh_tier": "text",
        "effective_refresh_mode": "text",
        "last_error_message": "text",
        "last_error_at": "timestamp with time zone",
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
    },
    "pgtrickle.pgt_refresh_history": {
        "refresh_id": "bigint",
        "pgt_id": "bigint",
        "data_timestamp": "timestamp with time zone",
        "start_time": "timestamp with time zone",
        "end_time": "timestamp with time zone",
        "action": "text",
        "rows_inserted": "bigint",
        "rows_deleted": "bigint",
        "delta_row_count": "bigint",
        "was_full_fallback": "boolean",
        "error_message": "text",
        "status": "text",
        "initiated_by": "text",
    },
    "pgtrickle.pgt_dependencies": {
        "pgt_id": "bigint",
        "source_relid": "oid",
        "source_type": "text",
        "columns_used": "text[]",
        "cdc_mode": "text",
        "source_stable_name": "text",
    },
}

REFERENCE_CHECKS = [
    ("pgtrickle.pgt_stream_tables", "refresh_mode", {"FULL", "DIFFERENTIAL", "IMMEDIATE"}),
    ("pgtrickle.pgt_stream_tables", "status", {"INITIALIZING", "ACTIVE", "SUSPENDED", "ERROR"}),
    ("pgtrickle.pgt_refresh_history", "action", {"NO_DATA", "FULL", "DIFFERENTIAL", "REINITIALIZE", "SKIP"}),
    ("pgtrickle.pgt_refresh_history", "status", {"RUNNING", "COMPLETED", "FAILED", "SKIPPED"}),
    ("pgtrickle.pgt_refresh_history", "initiated_by", {"SCHEDULER", "MANUAL", "INITIAL", "SELF_MONITOR"}),
    ("pgtrickle.pgt_dependencies", "source_type", {"TABLE", "STREAM_TABLE", "VIEW", "MATVIEW", "FOREIGN_TABLE"}),
]

# name: (call, [(column, PostgreSQL type name)]) in the reference's order.
REFERENCE_FUNCTIONS = {
    "pgt_status": (
        "pgtrickle.pgt_status()",
        [
            ("name", "text"),
            ("status", "text"),
            ("refresh_mode", "text"),
            ("is_populated", "bool"),
            ("consecutive_errors", "int4"),
            ("schedule", "text"),
            ("data_timestamp", "timestamptz"),
            ("staleness", "interval"),
            ("scc_id", "int4"),
        ],
    ),
    "health_check": ("pgtrickle.health_check()", [("check_name", "text"), ("severity", "text"), ("detail", "text")]),
    "refresh_efficiency": (
        "pgtrickle.refresh_efficiency()",
        [
            ("pgt_schema", "text"),
            ("pgt_name", "text"),
            ("refresh_mode", "text"),
            ("total_refreshes", "int8"),
            ("diff_count", "int8"),
            ("full_count", "int8"),
            ("avg_diff_ms", "float8"),
            ("avg_full_ms", "float8"),
            ("avg_change_ratio", "float8"),
            ("diff_speedup", "text"),
            ("last_refresh_at", "text"),
        ],
    ),
    "recommend_refresh_mode": (
        "pgtrickle.recommend_refresh_mode()",
        [
            ("pgt_schema", "text"),
            ("pgt_name", "text"),
            ("current_mode", "text"),
            ("effective_mode", "text"),
            ("recommended_mode", "text"),
            ("confidence", "text"),
            ("reason", "text"),
            ("signals", "jsonb"),
        ],
    ),
    "dependency_tree": (
        "pgtrickle.dependency_tree()",
        [
            ("tree_line", "text"),
            ("node", "text"),
            ("node_type", "text"),
            ("depth", "int4"),
            ("status", "text"),
            ("refresh_mode", "text"),
        ],
    ),
    "change_buffer_sizes": (
        "pgtrickle.change_buffer_sizes()",
        [
            ("stream_table", "text"),
            ("source_table", "text"),
            ("source_oid", "int8"),
            ("cdc_mode", "text"),
            ("pending_rows", "int8"),
            ("buffer_bytes", "int8"),
        ],
    ),
}


def test_catalog_tables_have_the_reference_columns_and_types(db):
    for table, expected in REFERENCE_CATALOG.items():
        actual = columns_of(db, table)
        for column, type_name in expected.items():
            assert actual.get(column) == type_name, f"{table}.{column}: {actual.get(column)} != {type_name}"


@pytest.mark.parametrize(("table", "column", "allowed"), REFERENCE_CHECKS)
def test_catalog_check_constraints_allow_exactly_the_reference_values(db, table, column, allowed):
    definition = check_values(db, table, column)
    found = set(re.findall(r"'([A-Z_]+)'::text", definition))
    assert found == allowed


@pytest.mark.parametrize("function", sorted(REFERENCE_FUNCTIONS))
def test_monitoring_functions_return_the_reference_columns(db, function):
    call, expected = REFERENCE_FUNCTIONS[function]
    types = {oid: name for oid, name in db.execute("SELECT oid, typname FROM pg_type").fetchall()}
    assert [(name, types[oid]) for name, oid in result_columns(db, call)] == expected


def test_lifecycle_signatures_match_the_reference(db):
    args = dict(
        db.execute(
            "SELECT proname, pg_get_function_arguments(oid) FROM pg_proc"
            " WHERE pronamespace = 'pgtrickle'::regnamespace AND proname IN ('create_stream_table',"
            " 'drop_stream_table', 'refresh_stream_table', 'resume_stream_table', 'create_stream_table_if_not_exists')"
        ).fetchall()
    )
    assert args["create_stream_table"].startswith(
        "name text, query text, schedule text DEFAULT 'calculated'::text, refresh_mode text DEFAULT 'AUTO'::text, "
        "initialize boolean DEFAULT true, diamond_consistency text DEFAULT NULL::text"
    )
    assert args["create_stream_table"].count(",") == 15  # 16 parameters
    assert args["create_stream_table_if_not_exists"] == args["create_stream_table"]
    assert args["drop_stream_table"] == "name text, cascade boolean DEFAULT false"
    assert args["refresh_stream_table"] == "name text" and args["resume_stream_table"] == "name text"
    assert "emulator" in pgtrickle.version(db)


# -- lifecycle ---------------------------------------------------------------------------------------------


def test_create_initialises_with_true_counts_and_records_sources(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, g text, v int)")
    db.execute("INSERT INTO t SELECT i, 'g' || (i % 3), i FROM generate_series(1, 9) i")
    db.execute("SELECT pgtrickle.create_stream_table('agg', 'SELECT g, sum(v) AS s FROM t GROUP BY g', '1s')")
    st = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["agg"]
    assert (st.refresh_mode, st.schedule, st.status, st.is_populated) == ("DIFFERENTIAL", "1s", "ACTIVE", True)
    [(action, status, ins, dele, by, start, end, _)] = history(db, "agg")
    assert (action, status, ins, dele, by) == ("FULL", "COMPLETED", 3, 0, "INITIAL") and start <= end
    deps = pgtrickle.dependencies(db)
    assert [(d.source, d.source_type) for d in deps] == [("public.t", "TABLE")]
    assert db.execute("SELECT columns_used FROM pgtrickle.pgt_dependencies").fetchone()[0] == ["g", "v"]
    assert_matches_query(db, "agg")


def test_create_rejects_duplicates_bad_modes_and_schedules(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t')")
    cases = [
        ("SELECT pgtrickle.create_stream_table('s', 'SELECT 1 AS x')", "already exists"),
        (
            "SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', refresh_mode => 'SOMETIMES')",
            "invalid refresh_mode",
        ),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', schedule => NULL)", "must not be NULL"),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', schedule => '5 minutes please')", "cron"),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', schedule => '0s')", "shorter than"),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT * FROM missing_table')", "missing_table"),
    ]
    for statement, message in cases:
        with pytest.raises(psycopg.Error, match=message):
            db.execute(statement)
    assert [s.pgt_name for s in pgtrickle.stream_tables(db)] == ["s"]
    assert db.execute("SELECT to_regclass('public.m')").fetchone()[0] is None  # nothing half-created


def test_create_if_not_exists_calculated_and_auto_defaults(db):
    db.execute("CREATE TABLE t (v int)")
    for _ in range(2):
        db.execute("SELECT pgtrickle.create_stream_table_if_not_exists('s', 'SELECT count(*) AS n FROM t')")
    [st] = pgtrickle.stream_tables(db)
    assert (st.schedule, st.schedule_label, st.refresh_mode) == (None, "calculated", "DIFFERENTIAL")
    db.execute("SELECT pgtrickle.create_stream_table('lazy', 'SELECT v FROM t', '5s', 'FULL', initialize => false)")
    lazy = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["lazy"]
    assert (lazy.refresh_mode, lazy.is_populated, history(db, "lazy")) == ("FULL", False, [])


def test_alter_changes_schedule_mode_status_and_query(db):
    db.execute("CREATE TABLE t (id int, v int)")
    db.execute("INSERT INTO t VALUES (1, 10), (2, 20)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT sum(v) AS total FROM t', '1s', 'DIFFERENTIAL')")
    db.execute("SELECT pgtrickle.alter_stream_table('s', schedule => '5s')")
    db.execute("SELECT pgtrickle.alter_stream_table('s', refresh_mode => 'FULL')")
    st = pgtrickle.stream_tables(db)[0]
    assert (st.schedule, st.refresh_mode) == ("5s", "FULL")  # NULL arguments left the other unchanged
    db.execute("SELECT pgtrickle.alter_stream_table('s', schedule => 'calculated')")
    assert pgtrickle.stream_tables(db)[0].schedule is None
    probe = sql.Identifier(f"emu_reader_probe_{os.getpid()}")
    db.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(probe))
    try:
        db.execute(sql.SQL("GRANT SELECT ON s TO {}").format(probe))
        db.execute("SELECT pgtrickle.alter_stream_table('s', query => 'SELECT sum(v) AS total, count(*) AS n FROM t')")
        assert db.execute("SELECT total, n FROM s").fetchall() == [(30, 2)]
        # New columns rebuild the storage; its grants survive (a reader of the stream table keeps reading it).
        assert db.execute(
            "SELECT has_table_privilege(%s, 's', 'SELECT')", (f"emu_reader_probe_{os.getpid()}",)
        ).fetchone()[0]
    finally:
        db.execute(sql.SQL("DROP OWNED BY {}").format(probe))
        db.execute(sql.SQL("DROP ROLE {}").format(probe))
    assert_matches_query(db, "s")
    db.execute("SELECT pgtrickle.alter_stream_table('s', status => 'SUSPENDED')")
    assert pgtrickle.stream_tables(db)[0].status == "SUSPENDED"
    with pytest.raises(psycopg.Error, match="invalid status"):
        db.execute("SELECT pgtrickle.alter_stream_table('s', status => 'ASLEEP')")


def test_drop_refuses_dependents_unless_cascade_and_cleans_up(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('a', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('b', 'SELECT n * 2 AS m FROM a')")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist, match=r"public\.b"):
        db.execute("SELECT pgtrickle.drop_stream_table('a')")
    db.execute("SELECT pgtrickle.drop_stream_table('a', cascade => true)")
    assert pgtrickle.stream_tables(db) == []
    assert db.execute("SELECT to_regclass('public.a'), to_regclass('public.b')").fetchone() == (None, None)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM pgtrickle.pgt_refresh_history").fetchone()[0] == 0


def test_manual_refresh_applies_only_the_true_differences(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 10) i")
    db.execute("SELECT pgtrickle.create_stream_table('copy', 'SELECT id, v FROM t', '1s', 'FULL')")
    kept = db.execute("SELECT __pgt_row_id FROM copy WHERE id = 3").fetchone()[0]
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(11, 15) i")  # 5 new rows
    db.execute("UPDATE t SET v = -1 WHERE id = 1")  # 1 changed row: 1 delete + 1 insert
    db.execute("DELETE FROM t WHERE id IN (2, 4)")  # 2 deleted rows
    db.execute("SELECT pgtrickle.refresh_stream_table('copy')")
    action, status, ins, dele, by, start, end, _ = history(db, "copy")[-1]
    assert (action, status, ins, dele, by) == ("FULL", "COMPLETED", 6, 3, "MANUAL")
    assert end > start
    assert db.execute("SELECT __pgt_row_id FROM copy WHERE id = 3").fetchone()[0] == kept  # untouched row stayed
    assert_matches_query(db, "copy")


def test_one_refresh_of_a_table_at_a_time_manual_errors_scheduler_skips(db, emulator_db):
    """Two refreshes of one stream table must not overlap (both would insert the new rows): while one runs,
    a manual refresh fails as pg_trickle's does and the scheduler records a SKIP and moves on."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 10) i")
    db.execute("SELECT pgtrickle.create_stream_table('busy', 'SELECT id, v FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('free', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(11, 13) i")
    make_due(db)
    with psycopg.connect(emulator_db) as holder:  # a manual refresh inside a transaction still open
        holder.execute("SELECT pgtrickle.refresh_stream_table('busy')")
        with pytest.raises(psycopg.errors.ObjectInUse, match="already in progress"):
            db.execute("SELECT pgtrickle.refresh_stream_table('busy')")
        db.execute("SELECT pgtrickle.emulator_tick()")
        assert history(db, "busy")[-1][:2] == ("SKIP", "SKIPPED")
        assert history(db, "free")[-1][:4] == ("FULL", "COMPLETED", 1, 1)  # the rest of the DAG goes on
        holder.commit()
    assert history(db, "busy")[-2][:5] == ("FULL", "COMPLETED", 3, 0, "MANUAL")
    assert_matches_query(db, "busy")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    assert history(db, "busy")[-1][:4] == ("NO_DATA", "COMPLETED", 0, 0)  # the manual refresh consumed it all
    make_due(db)
    with psycopg.connect(emulator_db) as holder:  # due and unchanged, but being refreshed: no NO_DATA row
        holder.execute("SELECT pgtrickle.refresh_stream_table('busy')")
        before = len(history(db, "busy"))
        db.execute("SELECT pgtrickle.emulator_tick()")
        assert len(history(db, "busy")) == before
        assert history(db, "free")[-1][:2] == ("NO_DATA", "COMPLETED")


def test_diff_handles_duplicates_and_nulls_as_multisets(db):
    db.execute("CREATE TABLE t (a int, b text)")
    db.execute("INSERT INTO t VALUES (1, NULL), (1, NULL), (1, NULL), (2, 'x'), (NULL, NULL)")
    db.execute("SELECT pgtrickle.create_stream_table('bag', 'SELECT a, b FROM t', '1s', 'FULL')")
    db.execute("DELETE FROM t WHERE ctid = (SELECT min(ctid) FROM t WHERE a = 1)")  # one of three duplicates
    db.execute("INSERT INTO t VALUES (NULL, NULL), (2, 'x')")
    db.execute("SELECT pgtrickle.refresh_stream_table('bag')")
    assert history(db, "bag")[-1][2:4] == (2, 1)
    assert_matches_query(db, "bag")
    db.execute("SELECT pgtrickle.refresh_stream_table('bag')")
    assert history(db, "bag")[-1][2:4] == (0, 0)  # nothing changed, nothing applied


def test_resume_only_from_suspended_or_error(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="is ACTIVE"):
        db.execute("SELECT pgtrickle.resume_stream_table('s')")


# -- scheduling --------------------------------------------------------------------------------------------


def test_calculated_changes_propagate_through_three_levels_in_one_tick(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    db.execute("SELECT pgtrickle.create_stream_table('l1', 'SELECT sum(v) AS s FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('l2', 'SELECT s * 10 AS s10 FROM l1', 'calculated')")
    db.execute("SELECT pgtrickle.create_stream_table('l3', 'SELECT s10 + 1 AS s11 FROM l2', 'calculated')")
    db.execute("INSERT INTO t VALUES (4)")
    make_due(db, "l1")
    assert db.execute("SELECT pgtrickle.emulator_tick()").fetchone()[0] == 3
    assert db.execute("SELECT s11 FROM l3").fetchone()[0] == 71
    for name in ("l1", "l2", "l3"):
        assert history(db, name)[-1][:5] == ("FULL", "COMPLETED", 1, 1, "SCHEDULER")
    l1, l2, l3 = (history(db, n)[-1][5] for n in ("l1", "l2", "l3"))
    assert l1 < l2 < l3  # upstream first


def test_due_but_unchanged_writes_no_data_and_keeps_data_timestamp(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
    before = pgtrickle.stream_tables(db)[0]
    assert db.execute("SELECT pgtrickle.emulator_tick()").fetchone()[0] == 0  # not due yet
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    action, status, ins, dele, by, start, end, _ = history(db, "s")[-1]
    assert (action, status, ins, dele, by) == ("NO_DATA", "COMPLETED", 0, 0, "SCHEDULER") and end >= start
    after = pgtrickle.stream_tables(db)[0]
    assert after.data_timestamp == before.data_timestamp and after.last_refresh_at > before.last_refresh_at


def test_failing_table_is_suspended_after_three_failures_while_others_continue(db):
    db.execute("CREATE TABLE t (x int)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    db.execute("SELECT pgtrickle.create_stream_table('fragile', 'SELECT 100 / x AS y FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('sturdy', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("INSERT INTO t VALUES (0)")
    db.execute("LISTEN pg_trickle_alert")
    for expected_errors in (1, 2, 3):
        make_due(db)
        db.execute("SELECT pgtrickle.emulator_tick()")
        fragile = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["fragile"]
        assert fragile.consecutive_errors == expected_errors
        last = history(db, "fragile")[-1]
        assert last[1] == "FAILED" and "division by zero" in last[7]
    assert fragile.status == "SUSPENDED"
    [alert] = [json.loads(n.payload) for n in db.notifies(timeout=0) if n.channel == "pg_trickle_alert"]
    assert alert["event"] == "auto_suspended" and alert["pgt_name"] == "fragile"
    assert db.execute("SELECT n FROM sturdy").fetchone()[0] == 3  # the rest of the DAG kept refreshing
    assert {r.check_name: r.severity for r in pgtrickle.health_check(db)}["error_tables"] == "ERROR"
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    assert history(db, "fragile")[-1][1] == "FAILED" and len(history(db, "fragile")) == 4  # not scheduled
    db.execute("DELETE FROM t WHERE x = 0")
    db.execute("SELECT pgtrickle.resume_stream_table('fragile')")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    fragile = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["fragile"]
    assert (fragile.status, fragile.consecutive_errors, history(db, "fragile")[-1][1]) == ("ACTIVE", 0, "COMPLETED")


def test_emulator_run_commits_as_it_goes_and_refuses_a_second_scheduler(emulator_db):
    with psycopg.connect(emulator_db, autocommit=True) as setup:
        setup.execute("CREATE TABLE t (v int)")
        setup.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
        assert {r.check_name: r.severity for r in pgtrickle.health_check(setup)}["scheduler_running"] == "ERROR"
    runner = psycopg.connect(emulator_db, autocommit=True)
    thread = threading.Thread(target=lambda: pgtrickle.emulator_run(runner, 50, 60), daemon=True)
    thread.start()
    try:
        with psycopg.connect(emulator_db, autocommit=True) as observer:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                checks = {r.check_name: r.severity for r in pgtrickle.health_check(observer)}
                if checks["scheduler_running"] == "OK":
                    break
                time.sleep(0.05)
            assert checks["scheduler_running"] == "OK"
            with pytest.raises(psycopg.errors.LockNotAvailable, match="another emulator scheduler"):
                pgtrickle.emulator_run(observer, 50, 1)
            observer.execute("INSERT INTO t VALUES (1)")
            deadline = time.monotonic() + 5
            while observer.execute("SELECT n FROM s").fetchone()[0] != 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert observer.execute("SELECT n FROM s").fetchone()[0] == 1  # seen from another session
    finally:
        thread.join(10)
        runner.close()
    assert not thread.is_alive()


# -- monitoring formulas -----------------------------------------------------------------------------------


def test_dependency_tree_draws_a_diamond(db):
    db.execute("CREATE TABLE src (k int, v int)")
    db.execute("SELECT pgtrickle.create_stream_table('left_side', 'SELECT k, sum(v) AS s FROM src GROUP BY k', '1s')")
    db.execute(
        "SELECT pgtrickle.create_stream_table('right_side', 'SELECT k, count(*) AS c FROM src GROUP BY k', '1s')"
    )
    db.execute(
        "SELECT pgtrickle.create_stream_table('joined', 'SELECT l.k, l.s, r.c FROM left_side l"
        " JOIN right_side r USING (k)')"
    )
    lines = [r.tree_line for r in pgtrickle.dependency_tree(db)]
    assert lines == [
        "├── public.left_side",
        "│   ├── public.joined",
        "│   └── public.src [src]",
        "└── public.right_side",
        "    ├── public.joined",
        "    └── public.src [src]",
    ]
    rows = pgtrickle.dependency_tree(db)
    assert [(r.node_type, r.depth) for r in rows[:3]] == [("stream_table", 0), ("stream_table", 1), ("source_table", 1)]


def test_refresh_efficiency_matches_the_history(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 20) i")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT id, v FROM t', '1s', 'DIFFERENTIAL')")
    for i in range(3):
        db.execute("UPDATE t SET v = v + 1 WHERE id = %s", (i + 1,))
        make_due(db)
        db.execute("SELECT pgtrickle.emulator_tick()")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")  # NO_DATA: counted in total_refreshes, not in full_count
    [eff] = pgtrickle.refresh_efficiency(db)
    rows = db.execute(
        "SELECT action, rows_inserted + rows_deleted, extract(epoch FROM end_time - start_time) * 1000"
        " FROM pgtrickle.pgt_refresh_history WHERE status = 'COMPLETED'"
    ).fetchall()
    full = [r for r in rows if r[0] == "FULL"]
    assert (eff.total_refreshes, eff.full_count, eff.diff_count) == (len(rows), len(full), 0) == (5, 4, 0)
    assert eff.avg_full_ms == pytest.approx(sum(float(r[2]) for r in full) / len(full))
    changed = [r[1] for r in rows if r[1] > 0]
    assert eff.avg_change_ratio == pytest.approx(sum(c / 20 for c in changed) / len(changed))
    assert (eff.avg_diff_ms, eff.diff_speedup) == (None, None)  # never measured by full recomputation
    assert eff.last_refresh_at == str(
        db.execute("SELECT data_timestamp::text FROM pgtrickle.pgt_stream_tables").fetchone()[0]
    )


def test_advisor_uses_only_measured_signals_with_the_reference_weights(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 200) i")
    db.execute("ANALYZE t")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT id, v FROM t', '1s', 'DIFFERENTIAL')")
    db.execute("UPDATE t SET v = 0 WHERE id <= 2")  # pending: a D and an I row per updated row, 4 buffer rows
    [rec] = pgtrickle.recommend_refresh_mode(db, "s")
    signals = {s["name"]: s for s in rec.signals["signals"]}
    assert set(signals) == {"change_ratio_current", "change_ratio_avg", "target_size"}
    # src/diagnostics.rs, gather_change_ratio: count(*) of the source's change buffer over its reltuples
    assert rec.signals["change_ratio_current"] == pytest.approx(4 / 200)
    assert signals["change_ratio_current"] == {"name": "change_ratio_current", "score": 1.0, "weight": 0.25}
    assert signals["change_ratio_avg"]["weight"] == 0.10  # fewer than 10 history rows
    assert signals["change_ratio_avg"]["score"] == -1.0  # the initial fill changed every row
    assert signals["target_size"]["score"] == -0.3  # under 1 MB
    composite = (1.0 * 0.25 - 1.0 * 0.10 - 0.3 * 0.10) / 0.45
    assert rec.signals["composite_score"] == pytest.approx(composite)
    assert rec.recommended_mode == "DIFFERENTIAL" and rec.effective_mode == "FULL"
    assert rec.confidence == "medium"  # promoted: a 0.25-weight signal scores 1.0 (0.45 < 50 % of 1.20)
    assert rec.signals["diff_avg_ms"] is None and rec.signals["join_count"] is None


def test_change_buffer_sizes_counts_rows_not_yet_consumed(db):
    """src/monitor/mod.rs, change_buffer_sizes: pending_rows is the buffer's n_live_tup (statistics, so the
    writing session reports them first), buffer_bytes its relation size, source_table schema-qualified."""
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("INSERT INTO t SELECT generate_series(1, 7)")
    db.execute("UPDATE t SET v = v WHERE v <= 2")  # D+I: two buffer rows per updated row
    db.execute("SELECT pg_stat_force_next_flush()")
    [row] = db.execute(
        "SELECT source_table, pending_rows, buffer_bytes FROM pgtrickle.change_buffer_sizes()"
    ).fetchall()
    assert row[0] == "public.t" and row[1] == 7 + 2 * 2 and row[2] > 0
    db.execute("SELECT pgtrickle.refresh_stream_table('s')")
    db.execute("SELECT pg_stat_force_next_flush()")
    pending, size = db.execute("SELECT pending_rows, buffer_bytes FROM pgtrickle.change_buffer_sizes()").fetchone()
    assert pending == 0 and size > 0  # consumed; the (empty) buffer still has a size, never NULL


def test_seed_generic_queries_run_unchanged(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('risk_scores', 'SELECT count(*) AS n FROM t', '1s')")
    queries = [
        "SELECT * FROM pgtrickle.pgt_status();",
        "SELECT tree_line FROM pgtrickle.dependency_tree() ORDER BY tree_line;",
        "SELECT pgtrickle.refresh_stream_table('risk_scores');",
        """SELECT st.pgt_name, rh.action, rh.status, (rh.end_time - rh.start_time) AS duration, rh.start_time
FROM pgtrickle.pgt_refresh_history rh JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = rh.pgt_id
ORDER BY rh.start_time DESC LIMIT 20;""",
        "SELECT pgt_name, avg_diff_ms, diff_speedup, avg_change_ratio FROM pgtrickle.refresh_efficiency()"
        " ORDER BY pgt_name;",
    ]
    for query in queries:
        assert db.execute(query).fetchall(), query


def _history_scans(plan: dict) -> list[dict]:
    found = [plan] if plan.get("Relation Name") == "pgt_refresh_history" else []
    for child in plan.get("Plans", []):
        found += _history_scans(child)
    return found


def test_refresh_efficiency_reads_bounded_index_ranges_of_a_long_history(db):
    """No scan of the growing history: each per-table read is an index range of at most 100 rows, even when
    the history is mostly NO_DATA and holds no DIFFERENTIAL row at all (the emulator never writes one)."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 20) i")
    for name in ("a", "b", "c"):
        db.execute("SELECT pgtrickle.create_stream_table(%s, 'SELECT id, v FROM t', '1s')", (name,))
    db.execute(
        """INSERT INTO pgtrickle.pgt_refresh_history
               (pgt_id, data_timestamp, start_time, end_time, action, rows_inserted, status, initiated_by)
           SELECT st.pgt_id, now(), now() - g * interval '1 s', now() - g * interval '1 s' + interval '1 ms',
                  CASE WHEN g % 50 = 0 THEN 'FULL' ELSE 'NO_DATA' END, CASE WHEN g % 50 = 0 THEN 1 ELSE 0 END,
                  'COMPLETED', 'SCHEDULER'
             FROM pgtrickle.pgt_stream_tables st, generate_series(1, 20000) g"""
    )
    db.execute("VACUUM ANALYZE pgtrickle.pgt_refresh_history")
    [[plan]] = db.execute("EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM pgtrickle.refresh_efficiency()").fetchone()
    scans = _history_scans(plan["Plan"])
    assert len(scans) == 3  # the DIFFERENTIAL, FULL and changed-rows reads
    for scan in scans:
        assert scan["Node Type"] in ("Index Scan", "Index Only Scan"), scan
        assert scan.get("Rows Removed by Filter", 0) == 0, scan.get("Filter")
        assert scan["Actual Rows"] <= 100, scan
    assert {row.full_count for row in pgtrickle.refresh_efficiency(db)} == {1}  # stats count the emulator's own


def test_source_stable_name_is_pg_trickles_xxh64_for_every_name_length(db):
    """src/citus.rs, stable_hash: lower_hex(xxh64("schema.table", 0x517cc1b727220a95)); the PL/pgSQL XXH64
    takes different paths under 4, 8 and 32 bytes and over several 32-byte stripes, all covered here."""
    for length in (1, 2, 3, 5, 9, 17, 24, 25, 31, 32, 40, 63):
        table = ("t" + "x" * 62)[:length]
        db.execute(sql.SQL("CREATE TABLE {} (v int)").format(sql.Identifier(table)))
        (got,) = db.execute("SELECT pgtrickle.source_stable_name(%s::regclass)", (f'public."{table}"',)).fetchone()
        want = format(xxhash.xxh64(f"public.{table}".encode(), seed=0x517CC1B727220A95).intdigest(), "016x")
        assert got == want, (table, got, want)
    db.execute('CREATE SCHEMA "Ünïcode schéma"')
    db.execute('CREATE TABLE "Ünïcode schéma"."Tablé" (v int)')
    (got,) = db.execute("""SELECT pgtrickle.source_stable_name('"Ünïcode schéma"."Tablé"'::regclass)""").fetchone()
    assert got == format(xxhash.xxh64("Ünïcode schéma.Tablé".encode(), seed=0x517CC1B727220A95).intdigest(), "016x")
    assert db.execute("SELECT pgtrickle.source_stable_name(0)").fetchone()[0] is None


def test_a_buffer_shared_by_two_stream_tables_is_consumed_when_both_have_applied_it(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("SELECT pgtrickle.create_stream_table('a', 'SELECT id, v FROM t', '1m', 'FULL')")
    db.execute("SELECT pgtrickle.create_stream_table('b', 'SELECT count(*) AS n FROM t', '1m', 'FULL')")
    [(buffer, tracked)] = db.execute(
        "SELECT 'changes_' || source_stable_name, tracked_by_pgt_ids FROM pgtrickle.pgt_change_tracking"
    ).fetchall()
    assert len(tracked) == 2
    rows = sql.SQL("SELECT action, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
        sql.Identifier("pgtrickle_changes", buffer)
    )
    db.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 4) g")
    db.execute("UPDATE t SET v = 0 WHERE id = 1")
    db.execute("DELETE FROM t WHERE id = 2")
    assert db.execute(rows).fetchall() == [("D", 2), ("I", 5)]  # 4 inserts, an update as D+I, a delete
    db.execute("SELECT pgtrickle.refresh_stream_table('a')")
    assert db.execute(rows).fetchall() == [("D", 2), ("I", 5)], "b has not applied them yet"
    db.execute("SELECT pgtrickle.refresh_stream_table('b')")
    assert db.execute(rows).fetchall() == []
    db.execute("TRUNCATE t")
    assert db.execute(rows).fetchall() == [("T", 1)]
    # A rolled-back write leaves nothing behind.
    with db.transaction(force_rollback=True):
        db.execute("INSERT INTO t VALUES (9, 9)")
    assert db.execute(rows).fetchall() == [("T", 1)]
    db.execute("SELECT pgtrickle.drop_stream_table('a')")
    assert db.execute("SELECT tracked_by_pgt_ids FROM pgtrickle.pgt_change_tracking").fetchone()[0] == [
        db.execute("SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'b'").fetchone()[0]
    ]
    db.execute("SELECT pgtrickle.drop_stream_table('b')")
    assert db.execute("SELECT count(*) FROM pgtrickle.pgt_change_tracking").fetchone()[0] == 0
    assert (
        db.execute("SELECT count(*) FROM pg_class WHERE relnamespace = 'pgtrickle_changes'::regnamespace").fetchone()[0]
        == 0
    )
    assert (
        db.execute("SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgtrickle_changes'::regnamespace").fetchone()[0]
        == 0
    )
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass").fetchone()[0] == 0
