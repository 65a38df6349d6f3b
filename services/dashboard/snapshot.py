"""The snapshot: everything the page shows, computed at most once per `max_age` seconds per process.

Concurrent requests coalesce: the first request after the cached snapshot expires computes a new one
under a lock; requests arriving meanwhile are answered with the previous snapshot (at most a second
older) instead of queueing behind the computation, so the database sees one computation per second
however many viewers poll, and no viewer but the one that triggers it waits for it. (With no snapshot
yet, they wait for the first one.) The JSON body is serialised once per snapshot, not per request.

With several gunicorn workers each process keeps its own cache (and its own short history), so the
database sees at most one computation per second per worker (DASHBOARD_WORKERS). The history also carries its
raw samples, which the page merges across answers: whichever worker serves a poll, the charts agree.

A failed computation is cached as well (for `max_age`), so an outage costs the database nothing more
than one connection attempt per second per worker, and the page gets a clear 503 without error text.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from services.common.db import first_line
from services.common.deadline import DeadlineExceeded, run_within
from services.common.scenarios import Scenario
from services.dashboard import catalog, story
from services.dashboard.scenarios import ScenarioView

log = logging.getLogger(__name__)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Snapshot:
    ok: bool
    payload: dict
    computed_at: float  # monotonic
    body: bytes = b""  # the payload as JSON, serialised once


def _snapshot(ok: bool, payload: dict, computed_at: float) -> Snapshot:
    return Snapshot(ok, payload, computed_at, json.dumps(payload, separators=(",", ":")).encode())


class History:
    """The scenario's figures sampled every `step` seconds over the last `window` seconds."""

    def __init__(self, charts: list[dict], window: float = 300.0, step: float = 2.0):
        self.charts, self.window, self.step = charts, window, step
        self._samples: deque[tuple[float, dict[str, float]]] = deque()

    def add(self, wall: float, figures: dict[str, float]) -> None:
        if self._samples and wall - self._samples[-1][0] < self.step:
            return
        self._samples.append((wall, dict(figures)))
        while self._samples and wall - self._samples[0][0] > self.window:
            self._samples.popleft()

    def render(self) -> dict:
        samples = list(self._samples)
        latest = samples[-1][1] if samples else {}
        charts = []
        for spec in self.charts:
            keys = spec.get("keys") or sorted(k for k in latest if k.startswith(spec.get("prefix", "\0")))
            prefix = spec.get("prefix", "")
            if spec["mode"] == "rate":
                times = [t for t, _ in samples[1:]]
                series = [
                    {
                        "key": key,
                        "label": key[len(prefix) :] if prefix else key,
                        "values": [_rate(a, b, key) for a, b in itertools.pairwise(samples)],
                    }
                    for key in keys
                ]
            else:
                times = [t for t, _ in samples]
                series = [{"key": key, "label": key, "values": [figs.get(key) for _, figs in samples]} for key in keys]
            charts.append(
                {
                    "id": spec["id"],
                    "title": spec["title"],
                    "format": spec.get("format", "number"),
                    "mode": spec["mode"],
                    "times": [round(t, 3) for t in times],
                    "series": series,
                }
            )
        # The raw samples as well: every figure is a cumulative value or a level read from the database, so
        # samples taken by different worker processes are points of the same curves. The page merges the
        # samples of every answer it gets, whichever worker served it, and draws the charts from the union:
        # with several workers all viewers see one history instead of a chart jumping between workers.
        wanted = {series["key"] for chart in charts for series in chart["series"]}
        raw = [[round(t, 3), {k: v for k, v in figs.items() if k in wanted}] for t, figs in samples]
        return {"window_s": self.window, "step_s": self.step, "charts": charts, "samples": raw}


def _rate(a: tuple[float, dict], b: tuple[float, dict], key: str) -> float | None:
    (ta, fa), (tb, fb) = a, b
    if key not in fa or key not in fb or tb <= ta:
        return None
    return round(max(0.0, (fb[key] - fa[key]) / (tb - ta)), 4)  # cumulative figures: a reset is not a dip


class SnapshotService:
    def __init__(
        self,
        pool: ConnectionPool,
        scenario: Scenario,
        view: ScenarioView,
        *,
        controls: bool = False,
        max_age: float = 1.0,
        slow_every: float = 5.0,
        connection_timeout: float = 2.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ):
        self.pool, self.scenario, self.view = pool, scenario, view
        self.controls = controls
        self.max_age, self.slow_every, self.connection_timeout = max_age, slow_every, connection_timeout
        self._clock, self._wall = clock, wall
        self._lock = threading.Lock()
        self._current: Snapshot | None = None
        self.history = History(view.history_charts)
        self.computations = 0  # how many times the database was read (tests check the coalescing)
        # refresh_efficiency(), the Advisor and health_check() aggregate history and move slowly: every 5 s.
        self._internals: tuple[float, dict] | None = None
        self._last_good: float | None = None
        self._down_since: float | None = None
        # Client-side bound of one computation (issue 14): a frozen server answers no statement_timeout.
        self.deadline = deadline
        self._abandoned: threading.Event | None = None  # set when an abandoned computation ends

    def get(self) -> Snapshot:
        current = self._current
        if current is not None and self._clock() - current.computed_at < self.max_age:
            return current
        if not self._lock.acquire(blocking=current is None):
            return current  # another request is computing the next snapshot: serve this one meanwhile
        try:
            current = self._current
            if current is not None and self._clock() - current.computed_at < self.max_age:
                return current  # another request computed it while this one waited
            current = self._compute_within_deadline()
            self._current = current
            return current
        finally:
            self._lock.release()

    def _compute_within_deadline(self) -> Snapshot:
        """_compute(), or an "unreachable" failure once `deadline` passes. An abandoned computation keeps
        running until the server answers; until it ends no new one starts (no pile-up of stuck threads)."""
        if self.deadline is None:
            return self._compute()
        if self._abandoned is not None and not self._abandoned.is_set():
            exc = DeadlineExceeded("the previous snapshot is still waiting for the database")
            return self._failure(self._wall(), "unreachable", "the database is not answering", exc)
        finished = threading.Event()

        def work() -> Snapshot:
            try:
                return self._compute()
            finally:
                finished.set()

        try:
            return run_within(self.deadline, work, name="dashboard-snapshot")
        except DeadlineExceeded as exc:
            self._abandoned = finished
            return self._failure(self._wall(), "unreachable", "the database did not answer in time", exc)

    def _base(self, wall: float) -> dict:
        return {
            "scenario": {
                "name": self.scenario.name,
                "title": self.scenario.title,
                "description": self.scenario.description,
            },
            "generated_at": _iso(wall),
            "controls": self.controls,
        }

    def _compute(self) -> Snapshot:
        self.computations += 1
        wall, started = self._wall(), self._clock()
        try:
            with self.pool.connection(timeout=self.connection_timeout) as conn:
                payload = self._read(conn, wall)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            return self._failure(wall, "unreachable", "the database is unreachable", exc)
        except psycopg.Error as exc:  # reachable, but the scenario is not readable (not bootstrapped yet?)
            return self._failure(wall, "not_ready", "the scenario's stream tables cannot be read", exc)
        self._last_good, self._down_since = wall, None
        payload["compute_ms"] = round((self._clock() - started) * 1000, 2)
        return _snapshot(True, payload, self._clock())

    def _read(self, conn: psycopg.Connection, wall: float) -> dict:
        data = self.view.read(conn)
        engine = catalog.engine(conn)
        dag = catalog.dag(conn)
        story.annotate_dag(dag, self.scenario, self.view.captions)
        if self._internals is None or self._clock() - self._internals[0] >= self.slow_every:
            self._internals = (self._clock(), catalog.slow_internals(conn))
        internals = {**catalog.live_internals(conn), **self._internals[1]}
        self.history.add(wall, data.figures)
        return {
            **self._base(wall),
            "database": {"state": "ok", "last_ok_at": _iso(wall)},
            "engine": engine,
            "tiles": data.tiles,
            "panels": data.panels,
            "history": self.history.render(),
            "dag": dag,
            "internals": internals,
            "cascade": story.cascade(conn, dag),
            "tree": story.tree(conn),
        }

    def _failure(self, wall: float, state: str, detail: str, exc: BaseException) -> Snapshot:
        if self._down_since is None:
            self._down_since = wall
            log.warning("snapshot failed", extra={"fields": {"state": state, "error": first_line(exc)}})
        payload = {
            **self._base(wall),
            "error": "Service Unavailable",
            "detail": detail,  # never the database's own message
            "database": {
                "state": state,
                "since": _iso(self._down_since),
                "last_ok_at": None if self._last_good is None else _iso(self._last_good),
            },
        }
        return _snapshot(False, payload, self._clock())
