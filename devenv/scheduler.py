"""Drives the emulator's scheduler (`CALL pgtrickle.emulator_run(...)`) from a background thread.

The real pg_trickle schedules itself in a background worker; the emulator needs one database session to
call its scheduler procedure. This keeps that session alive: it reconnects with backoff when the server
goes away and stops promptly by cancelling the running statement.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from services.common import pgtrickle
from services.common.db import Backoff, connect_with_retry, first_line

log = logging.getLogger(__name__)


class EmulatorScheduler:
    def __init__(self, conninfo: str, tick_interval_ms: int = 500):
        self.conninfo = conninfo
        self.tick_interval_ms = tick_interval_ms
        self._stop = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="emulator-scheduler", daemon=True)

    def start(self) -> EmulatorScheduler:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        with self._lock:
            if self._conn is not None:
                self._conn.cancel_safe()
        self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _loop(self) -> None:
        backoff = Backoff(initial=0.5, maximum=5.0)
        while not self._stop.is_set():
            try:
                conn = connect_with_retry(
                    self.conninfo,
                    application_name="pgtrickle-emulator-scheduler",
                    autocommit=True,
                    give_up_after=None,
                    stop=self._stop,
                )
            except psycopg.OperationalError:
                return  # stopped while the server was away
            with self._lock:
                self._conn = conn
            try:
                if self._stop.is_set():
                    return
                backoff.reset()
                log.info("emulator scheduler running", extra={"fields": {"tick_ms": self.tick_interval_ms}})
                pgtrickle.emulator_run(conn, self.tick_interval_ms)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                delay = backoff.next_delay()
                log.warning(
                    "emulator scheduler interrupted, restarting",
                    extra={"fields": {"error": first_line(exc), "retry_in_s": round(delay, 2)}},
                )
                self._stop.wait(delay)
            finally:
                with self._lock:
                    self._conn = None
                conn.close()
