"""The engine's own analyses, refresh_efficiency() and recommend_refresh_mode(), read in the background.

Both functions look back over the refresh history of every stream table (the Refresh Mode Advisor even
calls refresh_efficiency() once per table), so their cost grows with the history and the number of stream
tables. They change slowly, so a background thread reads them every EXPORTER_ADVISOR_INTERVAL seconds and
scrapes serve the latest result: a scrape never waits for them. The interval adapts to their cost: after a
read that took D seconds the thread waits at least LOAD_FACTOR x D, so that on a long history the reads keep
the database busy at most 1/LOAD_FACTOR of the time; after failures it backs off exponentially. The two
functions are read separately: one failing (say refresh_efficiency(), which pg_trickle 0.108 no longer
grants to PUBLIC) keeps the other's figures coming.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import psycopg
from psycopg_pool import ConnectionPool

from services.common import pgtrickle
from services.common.db import first_line

log = logging.getLogger(__name__)

ANALYSIS_TIMEOUT_MS = 60_000  # one read of both functions; beyond it the previous result stays
MAX_BACKOFF_S = 600.0
LOAD_FACTOR = 10.0  # wait at least this many times the duration of the last read


def next_wait(interval: float, duration: float | None, failures: int) -> float:
    """Seconds until the next read: the interval, stretched to LOAD_FACTOR x the last read's duration,
    doubled per consecutive failure (up to MAX_BACKOFF_S, or the interval when that is longer)."""
    base = max(interval, LOAD_FACTOR * (duration or 0.0))
    if failures:
        return min(base * 2 ** min(failures, 10), max(base, MAX_BACKOFF_S))
    return base


@dataclass(frozen=True)
class Analyses:
    efficiency: dict[tuple[str, str], pgtrickle.Efficiency]
    recommendations: dict[tuple[str, str], pgtrickle.Recommendation]
    read_at: float  # time.time()
    duration: float  # seconds the read took


class AnalysesReader:
    def __init__(self, pool: ConnectionPool, interval: float, stop: threading.Event):
        self.pool, self.interval, self.stop = pool, interval, stop
        self.latest: Analyses | None = None
        self.errors = 0
        self._counted: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="exporter-analyses", daemon=True)

    def start(self) -> AnalysesReader:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def _read(self, conn, function):
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {ANALYSIS_TIMEOUT_MS}")
            return {(row.pgt_schema, row.pgt_name): row for row in function(conn)}

    def read_once(self) -> Analyses:
        """Reads both functions, each in its own transaction. One that fails counts in `errors` and keeps
        its previous figures; when both fail the exception of the last one is raised."""
        started = time.monotonic()
        previous = self.latest
        results, failed = {}, None
        with self.pool.connection(timeout=10) as conn:
            for name, function in (
                ("refresh_efficiency", pgtrickle.refresh_efficiency),
                ("recommend_refresh_mode", pgtrickle.recommend_refresh_mode),
            ):
                try:
                    results[name] = self._read(conn, function)
                except psycopg.Error as exc:
                    if conn.broken or conn.closed:
                        raise
                    failed = exc
                    self.errors += 1
                    log.warning(
                        "reading an analysis failed", extra={"fields": {"function": name, "error": first_line(exc)}}
                    )
        if not results:
            self._counted = failed
            raise failed
        analyses = Analyses(
            results.get("refresh_efficiency", previous.efficiency if previous else {}),
            results.get("recommend_refresh_mode", previous.recommendations if previous else {}),
            time.time(),
            time.monotonic() - started,
        )
        self.latest = analyses
        return analyses

    def _loop(self) -> None:
        failures = 0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                self.read_once()
                failures = 0
            except Exception as exc:  # the database may be away; scrapes report pg_trickle_up
                if exc is not self._counted:  # read_once counted each function that failed
                    self.errors += 1
                failures += 1
                log.warning("reading the engine's analyses failed", extra={"fields": {"error": first_line(exc)}})
            wait = next_wait(self.interval, time.monotonic() - started, failures)
            if wait > self.interval:
                log.info("next read of the analyses delayed", extra={"fields": {"wait_s": round(wait, 1)}})
            self.stop.wait(wait)
