"""Several emulator scheduler sessions per database (issue 18, item 3).

Up to `pg_trickle.max_concurrent_refreshes` sessions (default 4, range 1..32: pg_trickle 0.67 src/config.rs,
the per-database dispatch cap of src/scheduler/dispatch.rs::parallel_dispatch_tick) run `emulator_run`; each
claims a stream table as pg_trickle's src/scheduler/mod.rs::refresh_single_st does (its row lock, SKIP LOCKED,
without a history row when held; FOR SHARE on its upstream stream tables' rows). So independent tables refresh
at the same time, one table never twice at once, and a downstream never while its upstream refreshes.

A refresh's history `start_time` is its transaction's now(), taken when the session claims the table, and the
claim is held until the refresh commits: two refreshes that cannot overlap have starts at least the first
one's duration apart. The slow table's query sleeps SLOW_S seconds (FULL allows volatile functions), so its
refreshes last at least that long. Deadlines here only detect hangs; nothing asserts a speed.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from datetime import timedelta

import psycopg
import pytest

from devenv.scheduler import EmulatorScheduler
from services.common import pgtrickle
from tests.support import stream_table_differences

pytestmark = pytest.mark.slow

SLOW_S = 2.0
SLOW_QUERY = "SELECT s.k, count(*) AS n FROM slow_src s, pg_sleep(2.0) GROUP BY s.k"  # sleeps SLOW_S


def _wait(predicate, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(message)


def _wait_no_sessions(conn: psycopg.Connection) -> None:
    """The stopped sessions' backends exit (their leases are free) shortly after their connections close."""
    _wait(
        lambda: conn.execute("SELECT pgtrickle.emulator_scheduler_sessions()").fetchone()[0] == 0,
        10,
        "scheduler sessions still hold leases 10 s after they were stopped",
    )


def _starts(conn: psycopg.Connection, name: str) -> list:
    """Start times of the stream table's completed scheduler refreshes, oldest first."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT h.start_time FROM pgtrickle.pgt_refresh_history h"
            " JOIN pgtrickle.pgt_stream_tables st USING (pgt_id)"
            " WHERE st.pgt_name = %s AND h.initiated_by = 'SCHEDULER' AND h.status = 'COMPLETED'"
            " AND h.action <> 'NO_DATA' ORDER BY h.start_time",
            (name,),
        ).fetchall()
    ]


class _Writer:
    """Inserts a row into each table every 50 ms from its own session until stopped."""

    def __init__(self, url: str, tables: list[str]):
        self.url, self.tables = url, tables
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            k = 0
            while not self.stop.is_set():
                k += 1
                for table in self.tables:
                    conn.execute(f"INSERT INTO {table} (k) VALUES (%s)", (k % 5,))  # noqa: S608 (fixed names)
                self.stop.wait(0.05)

    def __enter__(self) -> _Writer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(10)


def _slow_fast_dag(url: str) -> None:
    """slow (FULL, sleeps SLOW_S per refresh) over slow_src; below it `below` (DIFFERENTIAL, 1s) joins slow with
    fast_src; beside it `fast` (DIFFERENTIAL, 1s) over fast_src, independent of slow."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE slow_src (id bigserial PRIMARY KEY, k int NOT NULL)")
        conn.execute("CREATE TABLE fast_src (id bigserial PRIMARY KEY, k int NOT NULL)")
        conn.execute("INSERT INTO slow_src (k) SELECT i % 5 FROM generate_series(1, 10) i")
        conn.execute("INSERT INTO fast_src (k) SELECT i % 5 FROM generate_series(1, 10) i")
        conn.execute(
            "SELECT pgtrickle.create_stream_table('slow', %s, '1s', 'FULL')",
            (SLOW_QUERY,),
        )
        conn.execute(
            "SELECT pgtrickle.create_stream_table('below',"
            " 'SELECT f.k, count(*) AS n FROM fast_src f JOIN slow s ON s.k = f.k GROUP BY f.k', '1s')"
        )
        conn.execute(
            "SELECT pgtrickle.create_stream_table('fast', 'SELECT k, count(*) AS n FROM fast_src GROUP BY k', '1s')"
        )


def _run_slow_fast(url: str, workers: int) -> dict[str, list]:
    """Runs `workers` scheduler sessions while both sources receive rows, until slow completed 3 scheduled
    refreshes; returns the start times of each table's scheduled refreshes."""
    _slow_fast_dag(url)
    with _Writer(url, ["slow_src", "fast_src"]):
        scheduler = EmulatorScheduler(url, tick_interval_ms=100, workers=workers).start()
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                _wait(lambda: len(_starts(conn, "slow")) >= 3, 90, "slow was not refreshed 3 times in 90 s")
        finally:
            scheduler.stop()
        assert not scheduler.running
    with psycopg.connect(url, autocommit=True) as conn:
        _wait_no_sessions(conn)
        return {name: _starts(conn, name) for name in ("slow", "below", "fast")}


def _inside(starts: list, intervals: list) -> list:
    """The starts that fall strictly inside one of the [begin, begin + SLOW_S) intervals (10 ms margin)."""
    margin = timedelta(milliseconds=10)
    return [s for s in starts if any(b + margin < s < b + timedelta(seconds=SLOW_S) for b in intervals)]


def test_two_sessions_refresh_an_independent_table_while_a_slow_one_runs(emulator_db):
    starts = _run_slow_fast(emulator_db, workers=2)
    slow = starts["slow"]
    # The independent 1s table was refreshed while slow's refresh was running.
    assert _inside(starts["fast"], slow), (slow, starts["fast"])
    # One refresh of a table at a time: slow's refreshes (each lasting >= SLOW_S) never overlap.
    assert all(b - a >= timedelta(seconds=SLOW_S) for a, b in itertools.pairwise(slow)), slow
    # A downstream never refreshes while its upstream does (it was refreshed, just not then).
    assert starts["below"]
    assert not _inside(starts["below"], slow), (slow, starts["below"])


def test_one_session_holds_every_table_up_while_the_slow_one_runs(emulator_db):
    """The contrast: one session refreshes one table at a time, so nothing starts during slow's refresh."""
    starts = _run_slow_fast(emulator_db, workers=1)
    assert starts["fast"]
    assert not _inside(starts["fast"], starts["slow"]), (starts["slow"], starts["fast"])


def test_sessions_are_bounded_by_max_concurrent_refreshes(emulator_db):
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (v int)")
        conn.execute("SELECT pgtrickle.create_stream_table('s', 'SELECT count(*) AS n FROM t', '1s')")
        conn.execute("SET pg_trickle.max_concurrent_refreshes = 2")
        for bad in ("0", "33", "many"):
            conn.execute("SELECT set_config('pg_trickle.max_concurrent_refreshes', %s, false)", (bad,))
            with pytest.raises(psycopg.errors.InvalidParameterValue, match=r"pg_trickle\.max_concurrent_refreshes"):
                pgtrickle.emulator_run(conn, 50, 1)
    scheduler = EmulatorScheduler(emulator_db, tick_interval_ms=50, workers=2).start()  # sets the bound to 2
    try:
        with psycopg.connect(emulator_db, autocommit=True) as third:
            _wait(
                lambda: third.execute("SELECT pgtrickle.emulator_scheduler_sessions()").fetchone()[0] == 2,
                30,
                "the two sessions did not both claim a slot",
            )
            third.execute("SET pg_trickle.max_concurrent_refreshes = 2")
            with pytest.raises(psycopg.errors.LockNotAvailable, match="another emulator scheduler") as refused:
                pgtrickle.emulator_run(third, 50, 1)
            assert "All 2 scheduler sessions" in (refused.value.diag.message_detail or "")
            third.execute("SET pg_trickle.max_concurrent_refreshes = 3")
            pgtrickle.emulator_run(third, 50, 2)  # a third slot under a bound of 3
            assert third.execute("SELECT pgtrickle.emulator_scheduler_sessions()").fetchone()[0] == 2  # released
    finally:
        scheduler.stop()
    assert not scheduler.running
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        _wait_no_sessions(conn)
        assert not conn.execute("SELECT pgtrickle.emulator_scheduler_running()").fetchone()[0]


SHARED = {
    "by_k": ("SELECT k, count(*) AS n, sum(v) AS total FROM events GROUP BY k", "1s", "DIFFERENTIAL"),
    "by_v": ("SELECT v % 7 AS bucket, count(*) AS n FROM events GROUP BY v % 7", "1s", "DIFFERENTIAL"),
    "totals": ("SELECT count(*) AS n, coalesce(sum(v), 0) AS total FROM events", "1s", "DIFFERENTIAL"),
    "copy": ("SELECT id, k, v FROM events", "1s", "FULL"),
    "joined": ("SELECT e.k, count(*) AS n FROM events e JOIN keys USING (k) GROUP BY e.k", "1s", "DIFFERENTIAL"),
    "top": ("SELECT k, n FROM by_k WHERE n > 1", "calculated", "DIFFERENTIAL"),  # calculated, downstream of by_k
}


def test_sessions_sharing_a_source_neither_deadlock_nor_diverge(emulator_db):
    """Three sessions refresh six stream tables over one source (five read its change buffer, and each
    refresh deletes consumed rows of it) while a writer inserts, updates and deletes for a few seconds."""
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE keys (k int PRIMARY KEY)")
        conn.execute("INSERT INTO keys SELECT generate_series(0, 19)")
        conn.execute("CREATE TABLE events (id bigserial PRIMARY KEY, k int NOT NULL, v int NOT NULL)")
        conn.execute("INSERT INTO events (k, v) SELECT i % 20, i FROM generate_series(1, 200) i")
        for name, (query, schedule, mode) in SHARED.items():
            conn.execute("SELECT pgtrickle.create_stream_table(%s, %s, %s, %s)", (name, query, schedule, mode))
        deadlocks_before = conn.execute(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()[0]
    rng = random.Random(18)
    scheduler = EmulatorScheduler(emulator_db, tick_interval_ms=50, workers=3).start()
    try:
        with psycopg.connect(emulator_db, autocommit=True) as writer:
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                kind = rng.choice(("insert", "insert", "update", "delete"))
                if kind == "insert":
                    writer.execute(
                        "INSERT INTO events (k, v) SELECT (random() * 19)::int, (random() * 1000)::int"
                        " FROM generate_series(1, %s)",
                        (rng.randint(1, 20),),
                    )
                elif kind == "update":
                    writer.execute("UPDATE events SET v = v + 1 WHERE k = %s", (rng.randint(0, 19),))
                else:
                    writer.execute("DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY random() LIMIT 5)")
                time.sleep(0.01)
        with psycopg.connect(emulator_db, autocommit=True) as conn:

            def converged() -> bool:
                return all(
                    stream_table_differences(conn, name, query)[1:] == (0, 0) for name, (query, _, _) in SHARED.items()
                )

            _wait(converged, 60, "the stream tables did not converge to their defining queries within 60 s")
    finally:
        scheduler.stop()
    assert not scheduler.running
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        deadlocks = conn.execute("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        assert deadlocks.fetchone()[0] == deadlocks_before
        failed = conn.execute(
            "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE status IN ('FAILED', 'SKIPPED')"
        ).fetchone()[0]
        assert failed == 0
        statuses = {r[0] for r in conn.execute("SELECT status FROM pgtrickle.pgt_stream_tables")}
        assert statuses == {"ACTIVE"}
        refreshes = conn.execute(
            "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE initiated_by = 'SCHEDULER'"
            " AND status = 'COMPLETED' AND action <> 'NO_DATA'"
        ).fetchone()[0]
        assert refreshes >= len(SHARED)  # the sessions did refresh while the writer wrote
