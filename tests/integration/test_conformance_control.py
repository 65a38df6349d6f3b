"""pg_trickle 0.67's control plane, held against the engine under test: the emulator by default, the real
extension under `make test-real` (TEST_DATABASE_URL). Each test ports the assertions of a pg_trickle e2e test
(tests/e2e_*.rs at v0.67.0, named in its docstring) or states a rule of its source (file::function); the
rows of sql/emulator/CONFORMANCE.md point here. Tests that need an emulator-only behaviour skip precisely
when pgtrickle.version() is not the emulator's."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.common import pgtrickle

SETTLE = 60.0  # generous deadline for the engine's scheduler to act (detects a hang, not a speed target)


@pytest.fixture
def engine_url(request) -> Iterator[str]:
    """Superuser URL of a fresh database with the engine under test: pg_trickle on TEST_DATABASE_URL's
    server (make test-real), else the emulator on the local PostgreSQL 18."""
    real = os.environ.get("TEST_DATABASE_URL")
    if not real:
        yield request.getfixturevalue("emulator_db")
        return
    name = f"conf_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(real, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(real)
    params["dbname"] = name
    url = make_conninfo("", **params)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_trickle")
        yield url
    finally:
        with psycopg.connect(real, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def db(engine_url) -> Iterator[psycopg.Connection]:
    with psycopg.connect(engine_url, autocommit=True) as conn:
        yield conn


def is_emulator(conn: psycopg.Connection) -> bool:
    return pgtrickle.engine_of(pgtrickle.version(conn)) == pgtrickle.ENGINE_EMULATOR


def drive(conn: psycopg.Connection, until: Callable[[], bool], timeout: float = SETTLE) -> bool:
    """Lets the engine's scheduler run until `until()` holds: the emulator's scheduler is ticked from this
    session, the real engine's background worker is waited for."""
    emulator = is_emulator(conn)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if emulator:
            conn.execute("SELECT pgtrickle.emulator_tick()")
        if until():
            return True
        time.sleep(0.2)
    return until()


def table(conn: psycopg.Connection, name: str) -> pgtrickle.StreamTable:
    found = pgtrickle.find_stream_table(conn, name)
    assert found is not None, name
    return found


def history(conn: psycopg.Connection, name: str) -> list[tuple]:
    return conn.execute(
        """SELECT h.action, h.status, h.rows_inserted, h.rows_deleted, h.initiated_by, h.start_time, h.end_time
             FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables st USING (pgt_id)
            WHERE st.pgt_name = %s ORDER BY h.refresh_id""",
        (name,),
    ).fetchall()


# -- error model --------------------------------------------------------------------------------------------


def test_permanent_error_sets_error_status_and_refresh_is_refused(db):
    """e2e_error_state_tests.rs::test_permanent_error_sets_error_status_and_alter_clears,
    ::test_error_columns_visible_in_info_view and ::test_refresh_rejects_error_status: one permanent error
    (a column the query reads was dropped) sets ERROR, last_error_message and last_error_at after a single
    scheduler cycle; the scheduler no longer refreshes the table; a manual refresh is refused (22023,
    src/api/refresh_ops.rs::refresh_stream_table_impl); resume and a fixed query clear it. The refresh that
    failed leaves no FAILED history row and does not count consecutive_errors (src/scheduler/dispatch.rs)."""
    db.execute("CREATE TABLE err1e_src (id INT PRIMARY KEY, val TEXT, extra TEXT)")
    db.execute("INSERT INTO err1e_src VALUES (1, 'hello', 'x')")
    db.execute("SELECT pgtrickle.create_stream_table('err1e_st', 'SELECT id, val, extra FROM err1e_src', '1s', 'FULL')")
    assert db.execute("SELECT count(*) FROM err1e_st").fetchone()[0] == 1
    with db.transaction():
        db.execute("INSERT INTO err1e_src (id, val, extra) VALUES (2, 'trigger_dml', 'z')")
        db.execute("SET LOCAL pg_trickle.block_source_ddl = false")
        db.execute("ALTER TABLE err1e_src DROP COLUMN extra")
    assert drive(db, lambda: table(db, "err1e_st").status == "ERROR"), "no ERROR after a permanent error"
    st = table(db, "err1e_st")
    assert st.last_error_message and "extra" in st.last_error_message
    assert st.consecutive_errors == 0
    assert db.execute(
        "SELECT last_error_message IS NOT NULL AND last_error_at IS NOT NULL FROM pgtrickle.stream_tables_info"
        " WHERE pgt_name = 'err1e_st'"
    ).fetchone()[0]
    assert [row for row in history(db, "err1e_st") if row[1] == "FAILED"] == []
    assert pgtrickle.failure_reason(db, st) == st.last_error_message  # what the operator shows
    before = len(history(db, "err1e_st"))
    drive(db, lambda: False, timeout=2.5)
    assert len(history(db, "err1e_st")) == before, "the scheduler refreshed an ERROR table"

    with pytest.raises(
        psycopg.errors.InvalidParameterValue,
        match=r"is in error state ; use pgtrickle\.resume_stream_table\('err1e_st'\) first",
    ):
        db.execute("SELECT pgtrickle.refresh_stream_table('err1e_st')")

    db.execute("SELECT pgtrickle.resume_stream_table('err1e_st')")
    db.execute("SELECT pgtrickle.alter_stream_table('err1e_st', query => 'SELECT id, val FROM err1e_src')")
    st = table(db, "err1e_st")
    assert (st.status, st.last_error_message) == ("ACTIVE", None)
    assert db.execute(
        "SELECT last_error_at IS NULL FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'err1e_st'"
    ).fetchone()[0]


def test_transient_errors_count_towards_suspended(db):
    """src/scheduler/mod.rs::execute_scheduled_refresh (Err branch) with src/error.rs::counts_toward_suspension:
    a retryable error completes its history row as FAILED and adds to consecutive_errors; at
    pg_trickle.max_consecutive_errors (3) the table is SUSPENDED. The emulator runs every refresh error
    through this path; pg_trickle's parallel refresh workers (src/scheduler/dispatch.rs) retry a retryable
    PostgreSQL error without a row or a count, so this holds for the emulator only (CONFORMANCE.md)."""
    if not is_emulator(db):
        pytest.skip("emulator's documented path for transient errors (the engine's workers retry without a count)")
    db.execute("CREATE TABLE t (x int)")
    db.execute("INSERT INTO t VALUES (1)")
    db.execute(
        "CREATE FUNCTION flaky(v int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS $$ BEGIN IF v < 0 THEN"
        " RAISE EXCEPTION 'could not serialize access' USING ERRCODE = '40001'; END IF; RETURN v; END $$"
    )
    db.execute("SELECT pgtrickle.create_stream_table('wobbly', 'SELECT flaky(x) AS y FROM t', '1s')")
    db.execute("INSERT INTO t VALUES (-1)")
    assert drive(db, lambda: table(db, "wobbly").status == "SUSPENDED")
    st = table(db, "wobbly")
    assert (st.consecutive_errors, st.last_error_message) == (3, None)
    failed = [row for row in history(db, "wobbly") if row[1] == "FAILED"]
    assert len(failed) == 3
    assert pgtrickle.failure_reason(db, st) == "could not serialize access"


def test_refresh_rejected_for_suspended_st_and_resume_clears_it(db):
    """e2e_error_tests.rs::test_refresh_rejected_for_suspended_st and
    ::test_resume_stream_table_clears_suspended_status; the message and SQLSTATE (22023, InvalidArgument)
    of src/api/refresh_ops.rs::refresh_stream_table_impl and src/api/alter.rs::resume_stream_table_impl."""
    db.execute("CREATE TABLE err_susp_src (id INT PRIMARY KEY, val INT)")
    db.execute("INSERT INTO err_susp_src VALUES (1, 1)")
    db.execute("SELECT pgtrickle.create_stream_table('err_susp_st', 'SELECT id, val FROM err_susp_src', '1m', 'FULL')")
    db.execute("SELECT pgtrickle.alter_stream_table('err_susp_st', status => 'SUSPENDED')")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        db.execute("SELECT pgtrickle.refresh_stream_table('err_susp_st')")
    assert refused.value.diag.message_primary == (
        "invalid argument: stream table public.err_susp_st is suspended ;"
        " use pgtrickle.resume_stream_table('err_susp_st') first"
    )
    db.execute("SELECT pgtrickle.resume_stream_table('err_susp_st')")
    st = table(db, "err_susp_st")
    assert (st.status, st.consecutive_errors) == ("ACTIVE", 0)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is not suspended or in error state"):
        db.execute("SELECT pgtrickle.resume_stream_table('err_susp_st')")


def test_concurrent_manual_refresh_is_a_notice(engine_url, db):
    """src/api/refresh_ops.rs::refresh_stream_table: when another refresh holds the table, RefreshSkipped is
    reported as a NOTICE "refresh skipped: <schema>.<name> — another refresh is already in progress" and the
    call returns normally (no error, nothing recorded)."""
    db.execute("CREATE TABLE t (id int PRIMARY KEY, v int)")
    db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 5) i")
    db.execute("SELECT pgtrickle.create_stream_table('busy', 'SELECT id, v FROM t', '1h', 'FULL')")
    db.execute("INSERT INTO t VALUES (6, 6)")
    with psycopg.connect(engine_url) as holder:  # a manual refresh in a transaction still open
        holder.execute("SELECT pgtrickle.refresh_stream_table('busy')")
        before = len(history(db, "busy"))
        notices: list[str] = []
        db.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        db.execute("SELECT pgtrickle.refresh_stream_table('busy')")
        assert notices == ["refresh skipped: public.busy — another refresh is already in progress"]
        assert len(history(db, "busy")) == before
        holder.commit()
    assert db.execute("SELECT count(*) FROM busy").fetchone()[0] == 6


# -- refresh history -----------------------------------------------------------------------------------------


def test_history_records_the_engine_action_and_figures(db):
    """e2e_bgworker_tests.rs::test_scheduler_writes_refresh_history (the scheduler writes COMPLETED rows), with
    what the rows say: src/api/refresh_ops.rs::execute_manual_refresh labels a manual refresh DIFFERENTIAL for
    a DIFFERENTIAL table with a frontier, FULL for a FULL table; src/refresh/merge/mod.rs records a FULL
    refresh as (rows in the table, 0) and a DIFFERENTIAL one as (rows merged, at least 1, 0);
    src/refresh/orchestrator.rs::determine_refresh_action makes the scheduler's refresh of a DIFFERENTIAL
    table DIFFERENTIAL. src/catalog.rs::RefreshRecord writes start_time and end_time with the same now()."""
    db.execute("CREATE TABLE hist_src (id INT PRIMARY KEY, val TEXT)")
    db.execute("INSERT INTO hist_src SELECT g, 'v' || g FROM generate_series(1, 10) g")
    db.execute("SELECT pgtrickle.create_stream_table('hist_full', 'SELECT id, val FROM hist_src', '1h', 'FULL')")
    db.execute(
        "SELECT pgtrickle.create_stream_table('hist_diff', 'SELECT id, val FROM hist_src', '1h', 'DIFFERENTIAL')"
    )
    db.execute("UPDATE hist_src SET val = 'changed' WHERE id = 1")
    db.execute("INSERT INTO hist_src VALUES (11, 'new')")
    db.execute("SELECT pgtrickle.refresh_stream_table('hist_full')")
    db.execute("SELECT pgtrickle.refresh_stream_table('hist_diff')")
    action, status, ins, dele, by, start, end = history(db, "hist_full")[-1]
    assert (action, status, ins, dele, by) == ("FULL", "COMPLETED", 11, 0, "MANUAL") and start == end
    action, status, ins, dele, by, start, end = history(db, "hist_diff")[-1]
    assert (action, status, dele, by) == ("DIFFERENTIAL", "COMPLETED", 0, "MANUAL") and ins >= 1 and start == end
    assert table(db, "hist_diff").refresh_mode == "DIFFERENTIAL"

    db.execute("SELECT pgtrickle.alter_stream_table('hist_diff', schedule => '1s')")
    db.execute("INSERT INTO hist_src VALUES (12, 'newer')")
    assert drive(db, lambda: any(r[4] == "SCHEDULER" and r[1] == "COMPLETED" for r in history(db, "hist_diff")))
    scheduled = [r for r in history(db, "hist_diff") if r[4] == "SCHEDULER" and r[1] == "COMPLETED"]
    assert scheduled[0][0] == "DIFFERENTIAL" and scheduled[0][3] == 0 and scheduled[0][2] >= 1
    assert all(r[5] == r[6] for r in scheduled)  # durations in the history are not measures
    events = [e for e in pgtrickle.recent_refreshes(db, 50) if e.pgt_name == "hist_diff"]
    assert events and all(e.duration_seconds is None for e in events)


# -- diagnostics --------------------------------------------------------------------------------------------


def test_recommend_refresh_mode_keeps_what_effectively_ran(db):
    """e2e_diagnostics_tests.rs::test_diagnostics_recommend_refresh_mode_single_table, ::_valid_values and
    ::_signals_jsonb; src/diagnostics.rs::compute_recommendation answers KEEP when its verdict equals the
    action of the latest COMPLETED history row (effective_mode, src/api/helpers.rs::recommend_refresh_mode)."""
    db.execute("CREATE TABLE diag_rm_src (id INT PRIMARY KEY, val INT)")
    db.execute("INSERT INTO diag_rm_src SELECT g, g FROM generate_series(1, 100) g")
    db.execute(
        "SELECT pgtrickle.create_stream_table('diag_rm_st', 'SELECT id, val FROM diag_rm_src WHERE val > 50',"
        " '1h', 'DIFFERENTIAL')"
    )
    db.execute("UPDATE diag_rm_src SET val = val + 1 WHERE id = 60")
    db.execute("SELECT pgtrickle.refresh_stream_table('diag_rm_st')")
    [rec] = pgtrickle.recommend_refresh_mode(db, "diag_rm_st")
    assert rec.pgt_name == "diag_rm_st" and rec.reason and rec.signals
    assert rec.recommended_mode in ("DIFFERENTIAL", "FULL", "KEEP")
    assert rec.confidence in ("high", "medium", "low")
    assert rec.current_mode == "DIFFERENTIAL" and rec.effective_mode == "DIFFERENTIAL"
    assert rec.recommended_mode != rec.effective_mode  # never what already effectively runs
    assert rec.recommended_mode != "DIFFERENTIAL" and rec.switch_to in (None, "FULL")
    assert rec.signals["composite_score"] is not None and isinstance(rec.signals["signals"], list)
    names = {s["name"] for s in rec.signals["signals"]}
    assert {"change_ratio_current", "change_ratio_avg", "empirical_timing", "target_size"} <= names


def test_refresh_efficiency_uses_the_engine_windows(db):
    """e2e_diagnostics_tests.rs::test_diagnostics_refresh_efficiency_basic, with the windows of
    src/diagnostics.rs::gather_history_stats: avg_diff_ms / avg_full_ms over the latest 100 COMPLETED rows of
    the action; avg_change_ratio over the latest 100 COMPLETED rows of any action (NO_DATA rows take places
    in the window and add no term), divided by greatest(reltuples, 1) of the stream table; diff_speedup only
    when the DIFFERENTIAL average is above 0. The rows are written as a superuser, with durations the engine
    itself never writes (it writes 0), to check the formulas and windows."""
    db.execute("CREATE TABLE diag_re_src (id INT PRIMARY KEY, val INT)")
    db.execute("INSERT INTO diag_re_src SELECT g, g FROM generate_series(1, 100) g")
    db.execute("SELECT pgtrickle.create_stream_table('diag_re_st', 'SELECT id, val FROM diag_re_src', '24h')")
    db.execute("ANALYZE diag_re_st")
    db.execute(
        """INSERT INTO pgtrickle.pgt_refresh_history
               (pgt_id, data_timestamp, start_time, end_time, action, rows_inserted, rows_deleted, status,
                initiated_by)
           SELECT st.pgt_id, now(), t0, t0 + CASE a WHEN 'FULL' THEN interval '20 ms' ELSE interval '5 ms' END,
                  a, CASE a WHEN 'FULL' THEN 50 WHEN 'DIFFERENTIAL' THEN 4 ELSE 0 END, 0, 'COMPLETED', 'SCHEDULER'
             FROM pgtrickle.pgt_stream_tables st,
                  LATERAL (SELECT now() - interval '1 day' + g * interval '1 s' AS t0,
                                  CASE WHEN g <= 50 THEN 'FULL' WHEN g <= 90 THEN 'NO_DATA'
                                       ELSE 'DIFFERENTIAL' END AS a
                             FROM generate_series(1, 150) g) x
            WHERE st.pgt_name = 'diag_re_st'"""
    )
    [eff] = [e for e in pgtrickle.refresh_efficiency(db) if e.pgt_name == "diag_re_st"]
    tuples = max(db.execute("SELECT reltuples FROM pg_class WHERE oid = 'diag_re_st'::regclass").fetchone()[0], 1.0)
    assert eff.avg_diff_ms == pytest.approx(5.0)
    # the 100 latest FULL rows: the 50 written here and the initial fill (0 ms)
    assert eff.avg_full_ms == pytest.approx(20.0 * 50 / 51)
    # the latest 100 COMPLETED rows: 60 DIFFERENTIAL (4 rows each) and 40 NO_DATA; the FULL rows are older
    assert eff.avg_change_ratio == pytest.approx(4 / tuples)
    assert eff.diff_speedup == f"{(20.0 * 50 / 51) / 5.0:.1f}x"


# -- the dashboard tells one story -----------------------------------------------------------------------------


def test_dashboard_shows_one_story_of_mode_history_and_advisor(engine_server):
    """The page's mode (pgt_status), the history's actions and the Advisor agree, as on the engine: a
    DIFFERENTIAL table's scheduled refreshes are DIFFERENTIAL (or NO_DATA), the Advisor never asks to switch
    a table to the mode it has, and no history duration is shown as measured."""
    from services.dashboard import catalog
    from tests.dashboard_support import scenario_stack

    admin_url, engine = engine_server
    with scenario_stack(admin_url, "ecommerce", engine) as stack, psycopg.connect(stack.reader_url) as reader:
        reader.autocommit = True
        deadline = time.monotonic() + SETTLE
        live: dict = {}
        while time.monotonic() < deadline:
            live = catalog.live_internals(reader, refresh_limit=200)
            if any(r["action"] == "DIFFERENTIAL" and r["status"] == "COMPLETED" for r in live["refreshes"]):
                break
            time.sleep(0.5)
        slow = catalog.slow_internals(reader)
        modes = {row["name"]: row["mode"] for row in live["status"]}
        assert any(m == "DIFFERENTIAL" for m in modes.values())
        shown = [r for r in live["refreshes"] if r["status"] == "COMPLETED" and r["initiated_by"] == "SCHEDULER"]
        assert any(r["action"] == "DIFFERENTIAL" for r in shown), "no DIFFERENTIAL refresh in the feed"
        for row in shown:
            qualified = next(name for name in modes if name.endswith("." + row["name"]) or name == row["name"])
            if modes[qualified] == "DIFFERENTIAL":
                assert row["action"] in ("DIFFERENTIAL", "NO_DATA", "REINITIALIZE"), row
            assert row["duration_ms"] is None, row  # one now(): not a measure
        for advice in slow["advisor"]:
            assert advice["verdict"] != f"\u2192 SWITCH TO {advice['current_mode']}", advice
            assert advice["keep"] == (advice["recommended_mode"] in ("KEEP", advice["current_mode"])), advice
        for eff in slow["efficiency"]:
            assert eff["avg_full_ms"] is None or eff["avg_full_ms"] > 0
            assert eff["avg_diff_ms"] is None or eff["avg_diff_ms"] > 0
