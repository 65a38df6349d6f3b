"""Drives the emulator's scheduler (`CALL pgtrickle.emulator_run(...)`) from background threads.

The real pg_trickle schedules itself in background workers; the emulator needs database sessions to call
its scheduler procedure. This keeps `workers` such sessions alive (each in its own thread, so independent
stream tables refresh at the same time and a slow one does not hold up the others): each reconnects with
backoff when the server goes away, and all stop promptly by cancelling their running statements.

Each session sets `pg_trickle.max_concurrent_refreshes` (the per-database bound on scheduler sessions the
emulator reads, as pg_trickle's per-database dispatch cap) to `workers`, so that all of them get a slot.
"""

from __future__ import annotations

import logging
import threading

import psycopg

from services.common import pgtrickle
from services.common.db import Backoff, connect_with_retry, first_line

log = logging.getLogger(__name__)

# Scheduler sessions the preview (PREVIEW_SCHEDULER_WORKERS) and the benchmark (BENCH_EMULATOR_WORKERS)
# start by default: one per core of the 2-core reference machine; pg_trickle's own default bound is 4.
DEFAULT_WORKERS = 2
MAX_WORKERS = 32  # the range of pg_trickle.max_concurrent_refreshes (1..32, pg_trickle src/config.rs)


class EmulatorScheduler:
    def __init__(self, conninfo: str, tick_interval_ms: int = 500, workers: int = DEFAULT_WORKERS):
        if not 1 <= workers <= MAX_WORKERS:
            raise ValueError(f"workers must be between 1 and {MAX_WORKERS}, not {workers}")
        self.conninfo = conninfo
        self.tick_interval_ms = tick_interval_ms
        self.workers = workers
        self._stop = threading.Event()
        self._conns: dict[int, psycopg.Connection] = {}
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._loop, args=(index,), name=f"emulator-scheduler-{index}", daemon=True)
            for index in range(1, workers + 1)
        ]

    def start(self) -> EmulatorScheduler:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        with self._lock:
            for conn in self._conns.values():
                conn.cancel_safe()
        for thread in self._threads:
            thread.join(timeout)

    @property
    def running(self) -> bool:
        """True while any of the sessions' threads is alive."""
        return any(thread.is_alive() for thread in self._threads)

    def _loop(self, index: int) -> None:
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
                self._conns[index] = conn
            try:
                if self._stop.is_set():
                    return
                conn.execute(
                    "SELECT set_config('pg_trickle.max_concurrent_refreshes', %s, false)", (str(self.workers),)
                )
                backoff.reset()
                log.info(
                    "emulator scheduler session running",
                    extra={"fields": {"session": index, "sessions": self.workers, "tick_ms": self.tick_interval_ms}},
                )
                pgtrickle.emulator_run(conn, self.tick_interval_ms)
            except psycopg.Error as exc:
                if self._stop.is_set():
                    return
                delay = backoff.next_delay()
                log.warning(
                    "emulator scheduler session interrupted, restarting",
                    extra={"fields": {"session": index, "error": first_line(exc), "retry_in_s": round(delay, 2)}},
                )
                self._stop.wait(delay)
            finally:
                with self._lock:
                    self._conns.pop(index, None)
                conn.close()
