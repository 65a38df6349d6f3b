"""devenv.scheduler: the emulator's scheduler session survives a server restart and stops promptly."""

from __future__ import annotations

import time

import psycopg
import pytest

from devenv.postgres import LocalPostgres
from devenv.scheduler import EmulatorScheduler
from tests.support import load_emulator

pytestmark = pytest.mark.slow


def _history_rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pgtrickle.pgt_refresh_history").fetchone()[0]


def _wait_for_more_history(url: str, than: int, timeout: float = 15) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            rows = _history_rows(url)
            if rows > than:
                return rows
        except psycopg.OperationalError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the scheduler wrote no refresh history within {timeout}s")


def test_scheduler_survives_restart_and_stops_promptly():
    with LocalPostgres() as server:
        url = server.url()
        with psycopg.connect(url, autocommit=True) as conn:
            load_emulator(conn)
            conn.execute("CREATE TABLE src (id int PRIMARY KEY, v int)")
            conn.execute("INSERT INTO src VALUES (1, 1)")
            conn.execute("SELECT pgtrickle.create_stream_table('total', 'SELECT sum(v) AS s FROM src', '1s', 'FULL')")
        scheduler = EmulatorScheduler(url, tick_interval_ms=100).start()
        try:
            rows = _wait_for_more_history(url, _history_rows(url))
            server.restart()
            _wait_for_more_history(url, rows, timeout=30)  # it reconnected by itself
        finally:
            started = time.monotonic()
            scheduler.stop()
            assert not scheduler.running
            assert time.monotonic() - started < 5


def test_the_driver_runs_n_sessions_and_stops_them_all(emulator_db):
    """PREVIEW_SCHEDULER_WORKERS sessions: each claims a slot of pg_trickle.max_concurrent_refreshes (set to
    the number of sessions by the driver, so even more than the default 4 fit); stop() ends every one."""
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE src (v int)")
        conn.execute("SELECT pgtrickle.create_stream_table('total', 'SELECT count(*) AS n FROM src', '1s')")
    scheduler = EmulatorScheduler(emulator_db, tick_interval_ms=100, workers=5).start()
    try:
        with psycopg.connect(emulator_db, autocommit=True) as conn:
            deadline = time.monotonic() + 30
            while conn.execute("SELECT pgtrickle.emulator_scheduler_sessions()").fetchone()[0] < 5:
                assert time.monotonic() < deadline, "the 5 sessions did not all claim a slot within 30 s"
                time.sleep(0.1)
            conn.execute("INSERT INTO src VALUES (1)")
            while conn.execute("SELECT n FROM total").fetchone()[0] != 1:
                assert time.monotonic() < deadline + 30, "the sessions did not refresh total"
                time.sleep(0.1)
    finally:
        started = time.monotonic()
        scheduler.stop()
        assert not scheduler.running
        assert time.monotonic() - started < 5
    with psycopg.connect(emulator_db, autocommit=True) as conn:  # the backends exit soon after the close
        deadline = time.monotonic() + 10
        while conn.execute("SELECT pgtrickle.emulator_scheduler_sessions()").fetchone()[0] != 0:
            assert time.monotonic() < deadline, "leases still held 10 s after stop()"
            time.sleep(0.1)
    with pytest.raises(ValueError, match="between 1 and 32"):
        EmulatorScheduler(emulator_db, workers=33)
