"""The engine's own analyses, refresh_efficiency() and recommend_refresh_mode(), read in the background.

Both functions look back over the refresh history of every stream table (the Refresh Mode Advisor even
calls refresh_efficiency() once per table), so their cost grows with the history and the number of stream
tables. They change slowly, so a background thread reads them every EXPORTER_ADVISOR_INTERVAL seconds and
scrapes serve the latest result: a scrape never waits for them.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from psycopg_pool import ConnectionPool

from services.common import pgtrickle
from services.common.db import first_line

log = logging.getLogger(__name__)

ANALYSIS_TIMEOUT_MS = 60_000  # one read of both functions; beyond it the previous result stays
MAX_BACKOFF_S = 600.0


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
        self._thread = threading.Thread(target=self._loop, name="exporter-analyses", daemon=True)

    def start(self) -> AnalysesReader:
        self._thread.start()
        return self

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    def read_once(self) -> Analyses:
        started = time.monotonic()
        with self.pool.connection(timeout=10) as conn, conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {ANALYSIS_TIMEOUT_MS}")
            efficiency = {(e.pgt_schema, e.pgt_name): e for e in pgtrickle.refresh_efficiency(conn)}
            recommendations = {(r.pgt_schema, r.pgt_name): r for r in pgtrickle.recommend_refresh_mode(conn)}
        analyses = Analyses(efficiency, recommendations, time.time(), time.monotonic() - started)
        self.latest = analyses
        return analyses

    def _loop(self) -> None:
        failures = 0
        while not self.stop.is_set():
            try:
                self.read_once()
                failures = 0
            except Exception as exc:  # the database may be away; scrapes report pg_trickle_up
                self.errors += 1
                failures += 1
                log.warning("reading the engine's analyses failed", extra={"fields": {"error": first_line(exc)}})
            # After failures (a timeout on a long history, say) wait longer, up to 10 minutes, so that a read
            # that cannot finish does not keep the database busy.
            self.stop.wait(min(self.interval * 2 ** min(failures, 10), max(self.interval, MAX_BACKOFF_S)))
