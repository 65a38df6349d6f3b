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
    "diamond_groups": (
        "pgtrickle.diamond_groups()",
        [
            ("group_id", "int4"),
            ("member_name", "text"),
            ("member_schema", "text"),
            ("is_convergence", "bool"),
            ("epoch", "int8"),
            ("schedule_policy", "text"),
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


def test_create_initialises_and_records_the_initial_fill_as_the_engine_does(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, g text, v int)")
    db.execute("INSERT INTO t SELECT i, 'g' || (i % 3), i FROM generate_series(1, 9) i")
    db.execute("SELECT pgtrickle.create_stream_table('agg', 'SELECT g, sum(v) AS s FROM t GROUP BY g', '1s')")
    st = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["agg"]
    assert (st.refresh_mode, st.schedule, st.status, st.is_populated) == ("DIFFERENTIAL", "1s", "ACTIVE", True)
    [(action, status, ins, dele, by, start, end, _)] = history(db, "agg")
    # pg_trickle records the initial fill as FULL 0 / 0 (src/api/helpers.rs), start and end both now()
    assert (action, status, ins, dele, by) == ("FULL", "COMPLETED", 0, 0, "INITIAL") and start == end
    assert db.execute("SELECT count(*) FROM agg").fetchone()[0] == 3
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
            "unknown refresh mode: SOMETIMES",
        ),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', schedule => NULL)", "instead of NULL"),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', schedule => '5 minutes please')", "cron"),
        ("SELECT pgtrickle.create_stream_table('m', 'SELECT 1 AS x', schedule => '0s')", "at least 1s"),
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
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown status: ASLEEP"):
        db.execute("SELECT pgtrickle.alter_stream_table('s', status => 'ASLEEP')")


def test_drop_refuses_dependents_unless_cascade_and_cleans_up(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('a', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('b', 'SELECT n * 2 AS m FROM a')")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"has dependent stream tables: public\.b"):
        db.execute("SELECT pgtrickle.drop_stream_table('a')")
    db.execute("SELECT pgtrickle.drop_stream_table('a', cascade => true)")
    assert pgtrickle.stream_tables(db) == []
    assert db.execute("SELECT to_regclass('public.a'), to_regclass('public.b')").fetchone() == (None, None)
    assert db.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass").fetchone()[0] == 0
    assert db.execute("SELECT count(*) FROM pgtrickle.pgt_refresh_history").fetchone()[0] == 0


def _changed_copy(db, mode: str) -> tuple[int, int]:
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 10) i")
    db.execute("SELECT pgtrickle.create_stream_table('copy', 'SELECT id, v FROM t', '1s', %s)", (mode,))
    kept = db.execute("SELECT __pgt_row_id FROM copy WHERE id = 3").fetchone()[0]
    top = db.execute("SELECT max(__pgt_row_id) FROM copy").fetchone()[0]
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(11, 15) i")  # 5 new rows
    db.execute("UPDATE t SET v = -1 WHERE id = 1")  # 1 changed row: 1 delete + 1 insert
    db.execute("DELETE FROM t WHERE id IN (2, 4)")  # 2 deleted rows
    return kept, top


def test_full_refresh_truncates_and_inserts_as_pg_trickle(db):
    """A FULL refresh is pg_trickle's TRUNCATE + INSERT in the refresh transaction
    (src/refresh/merge/mod.rs::execute_full_refresh): every row is new storage, the indexes stay."""
    kept, top = _changed_copy(db, "FULL")
    db.execute("SELECT pgtrickle.refresh_stream_table('copy')")
    action, status, ins, dele, by, start, end, _ = history(db, "copy")[-1]
    # recorded as pg_trickle records a FULL refresh: every row of the table inserted, none deleted
    assert (action, status, ins, dele, by) == ("FULL", "COMPLETED", 13, 0, "MANUAL")
    assert end == start  # one now(): not a measured duration
    assert db.execute("SELECT count(*) FROM copy WHERE __pgt_row_id > %s", (top,)).fetchone()[0] == 13
    assert db.execute("SELECT __pgt_row_id FROM copy WHERE id = 3").fetchone()[0] != kept
    assert db.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'copy'::regclass").fetchone()[0] == 1
    assert_matches_query(db, "copy")


def test_differential_refresh_applies_only_the_true_differences(db):
    kept, top = _changed_copy(db, "DIFFERENTIAL")
    db.execute("SELECT pgtrickle.refresh_stream_table('copy')")
    action, status, _ins, _dele, by, _start, _end, _ = history(db, "copy")[-1]
    assert (action, status, by) == ("DIFFERENTIAL", "COMPLETED", "MANUAL")
    assert db.execute("SELECT count(*) FROM copy WHERE __pgt_row_id > %s", (top,)).fetchone()[0] == 6  # 5 + 1
    assert db.execute("SELECT __pgt_row_id FROM copy WHERE id = 3").fetchone()[0] == kept  # untouched row stayed
    assert_matches_query(db, "copy")


def test_differential_refresh_keeps_duplicates_nulls_and_numeric_scale(db):
    """The diff is a multiset over the rows' text form: duplicate rows, NULLs, empty strings and numeric
    scale (1.0 vs 1.00) are kept exactly as the query returns them."""
    db.execute("CREATE TABLE t (k int, v numeric, s text)")
    db.execute("INSERT INTO t VALUES (1, 1.0, NULL), (1, 1.0, NULL), (2, 2.5, ''), (3, NULL, 'a,\"b)')")
    db.execute("SELECT pgtrickle.create_stream_table('copy', 'SELECT k, v, s FROM t', '1s', 'DIFFERENTIAL')")
    db.execute("INSERT INTO t VALUES (1, 1.0, NULL), (4, 1.00, 'x')")
    db.execute("DELETE FROM t WHERE k = 2")
    db.execute("UPDATE t SET v = 1.00 WHERE k = 1 AND ctid = (SELECT min(ctid) FROM t WHERE k = 1)")
    db.execute("SELECT pgtrickle.refresh_stream_table('copy')")
    assert_matches_query(db, "copy")
    rows = db.execute("SELECT k, v::text, s FROM copy ORDER BY k, v::text").fetchall()
    assert rows == [(1, "1.0", None), (1, "1.0", None), (1, "1.00", None), (3, None, 'a,"b)'), (4, "1.00", "x")]


def test_one_refresh_of_a_table_at_a_time_manual_errors_scheduler_skips(db, emulator_db):
    """Two refreshes of one stream table must not overlap (both would insert the new rows): while one runs,
    a manual refresh is skipped with a NOTICE as pg_trickle's is, and the scheduler skips the table without a
    history row and moves on (src/scheduler/mod.rs::refresh_single_st: check_skip_needed returns, nothing is
    recorded)."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 10) i")
    db.execute("SELECT pgtrickle.create_stream_table('busy', 'SELECT id, v FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('free', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(11, 13) i")
    make_due(db)
    with psycopg.connect(emulator_db) as holder:  # a manual refresh inside a transaction still open
        holder.execute("SELECT pgtrickle.refresh_stream_table('busy')")
        notices: list[str] = []
        db.add_notice_handler(lambda diag: notices.append(diag.message_primary))
        db.execute("SELECT pgtrickle.refresh_stream_table('busy')")  # returns normally
        assert notices == ["refresh skipped: public.busy — another refresh is already in progress"]
        before = history(db, "busy")
        db.execute("SELECT pgtrickle.emulator_tick()")
        assert history(db, "busy") == before  # skipped: no SKIP row, no refresh
        assert history(db, "free")[-1][:4] == ("DIFFERENTIAL", "COMPLETED", 2, 0)  # the rest of the DAG goes on
        holder.commit()
    assert history(db, "busy")[-1][:5] == ("DIFFERENTIAL", "COMPLETED", 3, 0, "MANUAL")
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
    db.execute("SELECT pgtrickle.create_stream_table('bag', 'SELECT a, b FROM t', '1s', 'DIFFERENTIAL')")
    db.execute("DELETE FROM t WHERE ctid = (SELECT min(ctid) FROM t WHERE a = 1)")  # one of three duplicates
    db.execute("INSERT INTO t VALUES (NULL, NULL), (2, 'x')")
    before = db.execute("SELECT max(__pgt_row_id), count(*) FROM bag").fetchone()
    db.execute("SELECT pgtrickle.refresh_stream_table('bag')")
    after = db.execute("SELECT max(__pgt_row_id), count(*) FROM bag").fetchone()
    assert after[1] == before[1] + 1 and after[0] == before[0] + 2  # 2 rows inserted, 1 deleted
    assert history(db, "bag")[-1][2:4] == (3, 0)  # recorded as the engine's DIFFERENTIAL: rows touched
    assert_matches_query(db, "bag")
    db.execute("SELECT pgtrickle.refresh_stream_table('bag')")
    assert db.execute("SELECT max(__pgt_row_id), count(*) FROM bag").fetchone() == after  # nothing applied


def test_resume_only_from_suspended_or_error(db):
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
    # src/api/alter.rs::resume_stream_table_impl: InvalidArgument, SQLSTATE 22023
    with pytest.raises(
        psycopg.errors.InvalidParameterValue, match=r"not suspended or in error state \(current status: ACTIVE\)"
    ):
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
    for name in ("l1", "l2", "l3"):  # the MERGE count pg_trickle records: one row updated (here deleted + inserted)
        assert history(db, name)[-1][:5] == ("DIFFERENTIAL", "COMPLETED", 2, 0, "SCHEDULER")
    ids = [
        db.execute(
            "SELECT max(refresh_id) FROM pgtrickle.pgt_refresh_history JOIN pgtrickle.pgt_stream_tables USING (pgt_id)"
            " WHERE pgt_name = %s",
            (n,),
        ).fetchone()[0]
        for n in ("l1", "l2", "l3")
    ]
    assert ids == sorted(ids)  # upstream first


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


def test_permanent_error_sets_error_at_once_while_others_continue(db):
    """src/scheduler/mod.rs (ERR-1b) and src/scheduler/dispatch.rs (ERR-1d): a permanent error (division by
    zero, src/error.rs::classify_spi_error_retryable) sets ERROR and last_error_message at once; the rolled
    back refresh leaves no history row; consecutive_errors does not move; the scheduler skips the table."""
    db.execute("CREATE TABLE t (x int)")
    db.execute("INSERT INTO t VALUES (1), (2)")
    db.execute("SELECT pgtrickle.create_stream_table('fragile', 'SELECT 100 / x AS y FROM t', '1s')")
    db.execute("SELECT pgtrickle.create_stream_table('sturdy', 'SELECT count(*) AS n FROM t', '1s')")
    db.execute("INSERT INTO t VALUES (0)")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    fragile = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["fragile"]
    assert (fragile.status, fragile.consecutive_errors) == ("ERROR", 0)
    assert "division by zero" in fragile.last_error_message
    assert db.execute("SELECT last_error_at IS NOT NULL FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'fragile'")
    assert [row[4] for row in history(db, "fragile")] == ["INITIAL"]  # no FAILED row
    assert db.execute("SELECT n FROM sturdy").fetchone()[0] == 3  # the rest of the DAG kept refreshing
    assert {r.check_name: r.severity for r in pgtrickle.health_check(db)}["error_tables"] == "ERROR"
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    assert len(history(db, "fragile")) == 1  # an ERROR table is not scheduled
    db.execute("DELETE FROM t WHERE x = 0")
    db.execute("SELECT pgtrickle.resume_stream_table('fragile')")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    fragile = {s.pgt_name: s for s in pgtrickle.stream_tables(db)}["fragile"]
    assert (fragile.status, fragile.last_error_message, history(db, "fragile")[-1][1]) == ("ACTIVE", None, "COMPLETED")


def test_last_refresh_at_is_the_refresh_start_so_due_times_follow_the_schedule(db):
    """pg_trickle writes last_refresh_at = now(), the refresh transaction's start (src/catalog.rs), and
    src/scheduler/mod.rs::check_schedule compares now() - last_refresh_at with the schedule: the next due
    time counts from when the previous refresh began, not from when it ended."""
    db.execute("CREATE TABLE t (v int)")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
    for change in ("INSERT INTO t VALUES (1)", None):  # a DIFFERENTIAL refresh, then a NO_DATA row
        if change:
            db.execute(change)
        make_due(db)
        with db.transaction():
            db.execute("SELECT pg_sleep(0.05)")  # the transaction's now() is now well before clock_timestamp()
            db.execute("SELECT pgtrickle.emulator_tick()")
            last, start, now = db.execute(
                "SELECT st.last_refresh_at, h.start_time, now() FROM pgtrickle.pgt_stream_tables st"
                " JOIN pgtrickle.pgt_refresh_history h USING (pgt_id) ORDER BY h.refresh_id DESC LIMIT 1"
            ).fetchone()
        assert last == start == now
    assert [h[0] for h in history(db, "s")[-2:]] == ["DIFFERENTIAL", "NO_DATA"]


def test_transient_errors_suspend_after_three_with_failed_rows(db):
    """src/scheduler/mod.rs::execute_scheduled_refresh: a retryable error (an unknown message is retryable,
    src/error.rs::classify_spi_error_retryable) completes the row as FAILED and counts towards SUSPENDED
    (pg_trickle.max_consecutive_errors = 3) with the auto_suspended alert; last_error_message stays NULL."""
    db.execute("CREATE TABLE t (x int)")
    db.execute("INSERT INTO t VALUES (1)")
    db.execute(
        "CREATE FUNCTION flaky(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN IF v < 0 THEN"
        " RAISE EXCEPTION 'source temporarily unreachable' USING ERRCODE = '40001'; END IF; RETURN v; END $$"
    )
    db.execute("SELECT pgtrickle.create_stream_table('wobbly', 'SELECT flaky(x) AS y FROM t', '1s')")
    db.execute("INSERT INTO t VALUES (-1)")
    db.execute("LISTEN pg_trickle_alert")
    for expected_errors in (1, 2, 3):
        make_due(db)
        db.execute("SELECT pgtrickle.emulator_tick()")
        wobbly = pgtrickle.stream_tables(db)[0]
        assert (wobbly.consecutive_errors, wobbly.last_error_message) == (expected_errors, None)
        last = history(db, "wobbly")[-1]
        assert last[:2] == ("DIFFERENTIAL", "FAILED") and "temporarily unreachable" in last[7]
    assert wobbly.status == "SUSPENDED"
    assert pgtrickle.failure_reason(db, wobbly) == "source temporarily unreachable"
    [alert] = [json.loads(n.payload) for n in db.notifies(timeout=0) if n.channel == "pg_trickle_alert"]
    assert alert["event"] == "auto_suspended" and alert["pgt_name"] == "wobbly"
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")
    assert len(history(db, "wobbly")) == 4  # a SUSPENDED table is not scheduled


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
            # pg_trickle.max_concurrent_refreshes bounds the scheduler sessions of a database (default 4):
            # with 1, the running session takes the only slot.
            observer.execute("SET pg_trickle.max_concurrent_refreshes = 1")
            with pytest.raises(psycopg.errors.LockNotAvailable, match="another emulator scheduler"):
                pgtrickle.emulator_run(observer, 50, 1)
            observer.execute("RESET pg_trickle.max_concurrent_refreshes")
            pgtrickle.emulator_run(observer, 50, 1)  # by default a second session runs beside the first
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
    """src/diagnostics.rs::gather_history_stats: counts over all COMPLETED rows; averages of end_time -
    start_time (0: pg_trickle writes both with one now()); avg_change_ratio over the latest 100 COMPLETED
    rows (NO_DATA included in the window) divided by greatest(reltuples, 1) of the stream table."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 20) i")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT id, v FROM t', '1s', 'DIFFERENTIAL')")
    for i in range(3):
        db.execute("UPDATE t SET v = v + 1 WHERE id = %s", (i + 1,))
        make_due(db)
        db.execute("SELECT pgtrickle.emulator_tick()")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")  # NO_DATA: counted in total_refreshes, not in full/diff_count
    db.execute("ANALYZE s")
    [eff] = pgtrickle.refresh_efficiency(db)
    rows = db.execute(
        "SELECT action, rows_inserted + rows_deleted FROM pgtrickle.pgt_refresh_history WHERE status = 'COMPLETED'"
        " ORDER BY refresh_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["FULL", "DIFFERENTIAL", "DIFFERENTIAL", "DIFFERENTIAL", "NO_DATA"]
    assert (eff.total_refreshes, eff.full_count, eff.diff_count) == (5, 1, 3)
    assert (eff.avg_full_ms, eff.avg_diff_ms, eff.diff_speedup) == (0.0, 0.0, None)  # not measures
    assert pgtrickle.measured_ms(eff.avg_full_ms) is None
    tuples = max(db.execute("SELECT reltuples FROM pg_class WHERE oid = 's'::regclass").fetchone()[0], 1.0)
    changed = [r[1] for r in rows if r[1] > 0]
    assert changed == [2, 2, 2]  # the initial fill records 0
    assert eff.avg_change_ratio == pytest.approx(sum(c / tuples for c in changed) / len(changed))
    assert eff.last_refresh_at == str(
        db.execute("SELECT data_timestamp::text FROM pgtrickle.pgt_stream_tables").fetchone()[0]
    )


def test_advisor_gathers_the_engine_signals_and_keeps_the_effective_mode(db):
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 200) i")
    db.execute("ANALYZE t")
    db.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT id, v FROM t', '1s', 'DIFFERENTIAL')")
    db.execute("UPDATE t SET v = 0 WHERE id <= 2")  # pending: a D and an I row per updated row, 4 buffer rows
    [rec] = pgtrickle.recommend_refresh_mode(db, "s")
    signals = [s["name"] for s in rec.signals["signals"]]
    assert signals == [
        "change_ratio_current",
        "change_ratio_avg",
        "empirical_timing",
        "query_complexity",
        "target_size",
        "index_coverage",
        "latency_variance",
    ]  # src/diagnostics.rs::collect_signals order
    by_name = {s["name"]: s for s in rec.signals["signals"]}
    # src/diagnostics.rs, gather_change_ratio: count(*) of the source's change buffer over its reltuples
    assert rec.signals["change_ratio_current"] == pytest.approx(4 / 200)
    assert by_name["change_ratio_current"] == {"name": "change_ratio_current", "score": 1.0, "weight": 0.25}
    assert by_name["change_ratio_avg"]["weight"] == 0.0  # the initial fill records 0 changed rows: no ratio
    assert by_name["empirical_timing"]["weight"] == 0.0  # fewer than 5 refreshes of each mode
    assert by_name["query_complexity"] == {"name": "query_complexity", "score": None, "weight": None}
    assert by_name["target_size"] == {"name": "target_size", "score": -0.3, "weight": 0.1}
    assert by_name["index_coverage"] == {"name": "index_coverage", "score": 0.2, "weight": 0.05}
    composite = (1.0 * 0.25 - 0.3 * 0.10 + 0.2 * 0.05) / 0.40
    assert rec.signals["composite_score"] == pytest.approx(composite)
    assert rec.effective_mode == "FULL"  # the initial fill
    assert rec.recommended_mode == "DIFFERENTIAL" and rec.switch_to is None  # already configured
    assert rec.confidence == "medium"  # promoted: a 0.25-weight signal scores 1.0 (0.40 < 50 % of 1.20)
    assert rec.reason == "current change ratio 0.020; target size " + rec.reason.split("target size ")[1]
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")  # a DIFFERENTIAL refresh: the verdict equals it, KEEP
    [rec] = pgtrickle.recommend_refresh_mode(db, "s")
    assert (rec.effective_mode, rec.recommended_mode) == ("DIFFERENTIAL", "KEEP")
    make_due(db)
    db.execute("SELECT pgtrickle.emulator_tick()")  # NO_DATA is the last completed action now
    db.execute("UPDATE t SET v = 1 WHERE id = 5")
    [rec] = pgtrickle.recommend_refresh_mode(db, "s")
    assert rec.effective_mode == "NO_DATA" and rec.recommended_mode == "DIFFERENTIAL"  # as the engine answers
    assert rec.switch_to is None  # no change of the configured mode


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
    the history is mostly NO_DATA and holds no DIFFERENTIAL row at all."""
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
    assert len(scans) == 3  # the DIFFERENTIAL, FULL and latest-COMPLETED reads
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


ORDERS_BUFFERS = (
    "SELECT stream_table, pending_rows FROM pgtrickle.change_buffer_sizes() WHERE source_table = 'public.orders'"
)


def test_buffer_row_counts_are_exact_and_reveal_nothing_but_buffers(demo_db):
    """change_buffer_sizes().pending_rows follows the buffer at once (the emulator counts: its scheduler
    procedure never reports statistics while it runs), and the counting helper refuses any relation outside
    pgtrickle_changes, so it tells a reader no more than pg_trickle's n_live_tup would."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.writer_url, autocommit=True) as writer:
        writer.execute("INSERT INTO orders (customer_id, product_id, quantity, unit_price) VALUES (1, 1, 1, 1.0)")
    with psycopg.connect(db.reader_url, autocommit=True) as reader:
        pending = dict(reader.execute(ORDERS_BUFFERS).fetchall())
        assert pending and all(rows >= 1 for rows in pending.values()), pending
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="not a change buffer"):
            reader.execute("SELECT pgtrickle.emulator_buffer_rows('public.orders'::regclass)")
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        admin.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = now() - interval '1 hour'")
        admin.execute("SELECT pgtrickle.emulator_tick()")
        after = dict(admin.execute(ORDERS_BUFFERS).fetchall())
    assert set(after) == set(pending) and all(rows == 0 for rows in after.values()), after
