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
