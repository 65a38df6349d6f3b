"""The scenario-agnostic generator engine: rate control, scheduling, batching, exactly-once writes.

Time
  The engine ticks every TICK_SECONDS (0.1 s) of the monotonic clock. Regular events come from a token
  bucket filled at the target rate (events/s); each tick takes all whole tokens, so 50 events/s arrive as
  5 per tick and 50,000 events/s as 5,000 per tick (at most MAX_BATCH_EVENTS per batch; when writing falls
  behind, at most MAX_BACKLOG_SECONDS of events are kept owed, the rest are never generated).
  A *cycle* is one second of unpaused run time (CYCLE_SECONDS): at the default rate of 1 event/s one cycle
  is one event, as in the upstream generator, and "a slow change about every 30 cycles" stays about every
  30 s at any rate. Slow changes come every GENERATOR_SLOW_CHANGE_EVERY cycles and automatic bursts every
  GENERATOR_BURST_INTERVAL seconds of unpaused time, each interval multiplied by a jitter drawn uniformly
  from [0.8, 1.2] (seeded). POST /control/burst adds a burst to the next tick. While paused, neither
  clock advances and nothing is generated, except bursts requested through POST /control/burst (an
  explicit request is honoured).

Writes
  Everything due in a tick becomes one batch, built before it is written and kept until it is known to be
  committed. A batch is one transaction: one COPY per insert target, pipelined UPDATEs for update targets,
  and an upsert of demo_meta.generator_progress(run_id, last_batch = batch number, events_committed).
  Metrics and the scenario's in-memory state move only after the commit.
  On a connection error (during the writes or the COMMIT) the engine reconnects with capped exponential
  backoff, reads last_batch for its run_id to learn whether the batch landed, and re-sends it only if it
  did not: no event is lost or duplicated. Inserted rows carry (run_id, per-run sequence number), which
  the schema makes unique, so a duplicate could not even be written. Any other database error (bad data,
  missing table) discards the batch, reloads the lookups and carries on.

Stopping
  When `stop` is set (SIGTERM/SIGINT or GENERATOR_DURATION reached) the engine finishes the batch in
  flight if the database answers, abandons it (rolled back, never counted) if not, and returns.
"""

from __future__ import annotations

import logging
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from psycopg import sql

from services.common.db import Backoff, connect_with_retry, first_line
from services.common.settings import describe_conninfo
from services.generator.config import APPLICATION_NAME, GeneratorConfig
from services.generator.metrics import GeneratorMetrics
from services.generator.scenarios import InsertTarget, LookupsNotReady, Rows, ScenarioGenerator, UpdateTarget

log = logging.getLogger(__name__)

TICK_SECONDS = 0.1
CYCLE_SECONDS = 1.0
MAX_BACKLOG_SECONDS = 1.0
MAX_BATCH_EVENTS = 20_000
MAX_PENDING_BURSTS = 10
JITTER = (0.8, 1.2)
STATEMENT_TIMEOUT_MS = 30_000
PROGRESS_LOG_SECONDS = 30.0
STALLED_WRITE_SECONDS = 10.0  # a write in flight longer than this makes /readyz fail

# The run's row is guarded by row-level security (sql/common/meta.sql): it is visible and writable only in a
# session that set demo.run_token to this run's secret, whose SHA-256 the row keeps as run_key.
LEDGER_SESSION = "SELECT pg_catalog.set_config('demo.run_token', %s, false)"
LEDGER_UPSERT = """
    INSERT INTO demo_meta.generator_progress (run_id, scenario, last_batch, events_committed, run_key)
    VALUES (%s, %s, %s, %s,
            pg_catalog.sha256(pg_catalog.convert_to(pg_catalog.current_setting('demo.run_token'), 'UTF8')))
    ON CONFLICT (run_id) DO UPDATE
       SET last_batch = EXCLUDED.last_batch,
           events_committed = EXCLUDED.events_committed,
           updated_at = now()
"""
LEDGER_READ = "SELECT last_batch FROM demo_meta.generator_progress WHERE run_id = %s"


@dataclass
class Batch:
    """Events due in one tick, written in one transaction."""

    number: int  # 1, 2, 3 ... within the run (= generator_progress.last_batch once committed)
    parts: list[Rows]
    writes: list[tuple[InsertTarget | UpdateTarget, list[tuple]]]  # grouped by target, in order
    counts: dict[str, int]  # events by kind
    bursts: int
    seq_marks: dict[str, int] = field(default_factory=dict)  # per insert table: last seq before the batch

    @property
    def size(self) -> int:
        return sum(self.counts.values())


class Engine:
    def __init__(
        self,
        config: GeneratorConfig,
        scenario: ScenarioGenerator,
        stop: threading.Event,
        *,
        run_id: str | None = None,
        metrics: GeneratorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.config = config
        self.scenario = scenario
        self.stop = stop
        self.run_id = run_id or str(uuid.uuid4())
        self._run_token = secrets.token_urlsafe(32)  # this run's ledger key: never logged, stored or shown
        self.metrics = metrics or GeneratorMetrics(config.scenario, scenario.event_kinds, self.run_id, config.seed)
        self._clock = clock
        self._lock = threading.Lock()
        self._jitter = random.Random(f"engine-jitter:{config.seed}")

        # Control state (shared with the HTTP threads, guarded by _lock).
        self._rate = config.rate
        self._paused = False
        self._bursts_requested = 0

        # Clocks and schedules (engine thread only).
        self._last_advance: float | None = None
        self._active = 0.0  # unpaused seconds since the run started
        self._tokens = 0.0
        self._due_bursts = 0
        self._due_slow_changes = 0
        self._next_burst_at = self._jittered(config.burst_interval) if config.burst_interval > 0 else None
        self._next_slow_cycle = (
            max(1, round(self._jittered(config.slow_change_every))) if config.slow_change_every > 0 else None
        )
        self._seq: dict[str, int] = {}

        # Connection and progress.
        self._conn: psycopg.Connection | None = None
        self._ever_connected = False
        self._writing = False
        self._write_started = 0.0
        self._loaded = False
        self._needs_load = True
        self._problem: str | None = "starting"
        self._events_total = 0
        self._events_by_kind = dict.fromkeys(scenario.event_kinds, 0)
        self._batches = 0
        self._bursts_committed = 0
        self._last_commit_at: float | None = None
        self._started_at: float | None = None
        self._finished_at: float | None = None
        self._last_progress_log = 0.0

        self.metrics.rate.set(self._rate)
        self.metrics.paused.set(0)

    # -- control (thread-safe; called from HTTP handlers) -----------------------------------------------
    @property
    def rate(self) -> float:
        with self._lock:
            return self._rate

    def set_rate(self, rate: float) -> None:
        if not (0 < rate <= self.config.max_rate):
            raise ValueError(f"rate must be > 0 and <= {self.config.max_rate:g}")
        with self._lock:
            self._rate = float(rate)
        self.metrics.rate.set(rate)
        log.info("rate changed", extra={"fields": {"rate": rate}})

    @property
    def paused(self) -> bool:
        with self._lock:
            return self._paused

    def pause(self) -> None:
        with self._lock:
            changed, self._paused = not self._paused, True
        self.metrics.paused.set(1)
        if changed:
            log.info("paused")

    def resume(self) -> None:
        with self._lock:
            changed, self._paused = self._paused, False
        self.metrics.paused.set(0)
        if changed:
            log.info("resumed")

    def request_burst(self) -> int:
        """Queues a burst for the next tick; returns the number of requested bursts not yet generated."""
        with self._lock:
            self._bursts_requested = min(self._bursts_requested + 1, MAX_PENDING_BURSTS)
            return self._bursts_requested

    def status(self) -> dict:
        with self._lock:
            next_burst = None if self._next_burst_at is None else max(0.0, self._next_burst_at - self._active)
            cycle = int(self._active // CYCLE_SECONDS)
            next_slow = None if self._next_slow_cycle is None else max(0, self._next_slow_cycle - cycle)
            last_commit = (
                None
                if self._last_commit_at is None
                else datetime.fromtimestamp(self._last_commit_at, UTC).isoformat(timespec="milliseconds")
            )
            return {
                "scenario": self.config.scenario,
                "run_id": self.run_id,
                "seed": self.config.seed,
                "rate": self._rate,
                "max_rate": self.config.max_rate,
                "paused": self._paused,
                "cycle": cycle,
                "cycle_seconds": CYCLE_SECONDS,
                "burst_interval_s": self.config.burst_interval,
                "next_burst_in_s": None if next_burst is None else round(next_burst, 3),
                "bursts_pending": self._bursts_requested + self._due_bursts,
                "bursts_committed": self._bursts_committed,
                "slow_change_every_cycles": self.config.slow_change_every,
                "next_slow_change_in_cycles": next_slow,
                "events_committed": dict(self._events_by_kind),
                "events_committed_total": self._events_total,
                "batches_committed": self._batches,
                "last_commit_at": last_commit,
                "connected": self._conn is not None,
                "problem": self._problem,
            }

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if self._problem is not None:
                return False, self._problem
            if self._writing and self._clock() - self._write_started > STALLED_WRITE_SECONDS:
                return False, f"a batch has been in flight for more than {STALLED_WRITE_SECONDS:g} s"
            return True, f"writing {self.config.scenario} events; {self._events_total} committed"

    @property
    def events_committed(self) -> int:
        with self._lock:
            return self._events_total

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> None:
        """Generates and writes events until `stop` is set or the duration has passed."""
        cfg = self.config
        log.info(
            "generator starting",
            extra={
                "fields": {
                    "scenario": cfg.scenario,
                    "run_id": self.run_id,
                    "seed": cfg.seed,
                    "rate": cfg.rate,
                    "burst_interval_s": cfg.burst_interval,
                    "slow_change_every_cycles": cfg.slow_change_every,
                    "duration_s": cfg.duration,
                }
            },
        )
        # GENERATOR_DURATION bounds the whole run: a database that never becomes ready does not keep a
        # timed run alive past it.
        waiting_limit = None
        if cfg.duration is not None:
            waiting_limit = threading.Timer(cfg.duration, self._duration_over_while_waiting)
            waiting_limit.daemon = True
            waiting_limit.start()
        try:
            loaded = self._load_lookups()
            if waiting_limit is not None:
                waiting_limit.cancel()
            if not loaded:
                return
            start = self._clock()
            self._started_at = self._last_progress_log = start
            deadline = None if cfg.duration is None else start + cfg.duration
            next_tick = start
            pending: Batch | None = None
            while not self.stop.is_set():
                now = self._clock()
                if deadline is not None and now >= deadline:
                    break
                self._advance(now)
                if self._needs_load and pending is None and not self._load_lookups():
                    break
                if pending is None:
                    pending = self._build()
                if pending is not None:
                    if not self._commit(pending):
                        break  # stopped while the batch could not be written: abandoned
                    pending = None
                self._maybe_log_progress()
                next_tick += TICK_SECONDS
                now = self._clock()
                if next_tick <= now:
                    next_tick = now  # behind schedule (slow writes): no sleeping, no catch-up ticks
                elif deadline is not None and deadline < next_tick:
                    self.stop.wait(max(0.0, deadline - now))
                else:
                    self.stop.wait(next_tick - now)
        finally:
            self._finished_at = self._clock()
            self._close()
            self._log_summary()

    def _duration_over_while_waiting(self) -> None:
        if not self._loaded and not self.stop.is_set():
            log.warning(
                "GENERATOR_DURATION reached before the database was ready; stopping",
                extra={"fields": {"duration_s": self.config.duration, "problem": self._problem}},
            )
            self.stop.set()

    # -- scheduling ---------------------------------------------------------------------------------------
    def _jittered(self, value: float) -> float:
        return value * self._jitter.uniform(*JITTER)

    def _advance(self, now: float) -> None:
        elapsed = 0.0 if self._last_advance is None else max(0.0, now - self._last_advance)
        self._last_advance = now
        with self._lock:
            if self._paused:
                return
            rate = self._rate
            self._active += elapsed
            self._tokens = min(self._tokens + elapsed * rate, max(rate * MAX_BACKLOG_SECONDS, 1.0))
            if self._next_burst_at is not None and self._active >= self._next_burst_at:
                self._due_bursts = 1  # owed bursts do not pile up while a batch is stuck
                self._next_burst_at = self._active + self._jittered(self.config.burst_interval)
            cycle = int(self._active // CYCLE_SECONDS)
            if self._next_slow_cycle is not None and cycle >= self._next_slow_cycle:
                self._due_slow_changes = 1
                self._next_slow_cycle = cycle + max(1, round(self._jittered(self.config.slow_change_every)))

    def _build(self) -> Batch | None:
        with self._lock:
            n = min(int(self._tokens), MAX_BATCH_EVENTS)
            self._tokens -= n
            bursts = self._due_bursts + self._bursts_requested
            self._due_bursts = self._bursts_requested = 0
            slow_changes, self._due_slow_changes = self._due_slow_changes, 0
        if not (n or bursts or slow_changes):
            return None
        parts: list[Rows] = []
        if n:
            parts += self.scenario.regular(n)
        for _ in range(bursts):
            parts += self.scenario.burst()
        for _ in range(slow_changes):
            parts += self.scenario.slow_change()
        return self._assemble(parts, bursts)

    def _assemble(self, parts: list[Rows], bursts: int) -> Batch:
        counts: dict[str, int] = {}
        grouped: dict[int, tuple[InsertTarget | UpdateTarget, list[tuple]]] = {}
        marks: dict[str, int] = {}
        for part in parts:
            counts[part.kind] = counts.get(part.kind, 0) + len(part.rows)
            target = part.target
            entry = grouped.setdefault(id(target), (target, []))
            if isinstance(target, InsertTarget) and target.event_id_columns:
                seq = self._seq.get(target.table, 0)
                marks.setdefault(target.table, seq)
                run_id = self.run_id
                entry[1].extend((*row, run_id, seq + i) for i, row in enumerate(part.rows, 1))
                self._seq[target.table] = seq + len(part.rows)
            else:
                entry[1].extend(part.rows)
        return Batch(
            number=self._batches + 1,
            parts=parts,
            writes=list(grouped.values()),
            counts=counts,
            bursts=bursts,
            seq_marks=marks,
        )

    # -- database -----------------------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection | None:
        """The open connection, or a new one (retrying with capped backoff); None once stopped."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        with self._lock:
            if self._problem == "starting":
                self._problem = f"connecting to {describe_conninfo(self.config.conninfo)}"
        while True:
            try:
                conn = connect_with_retry(
                    self.config.conninfo,
                    application_name=APPLICATION_NAME,
                    statement_timeout_ms=STATEMENT_TIMEOUT_MS,
                    give_up_after=None,
                    stop=self.stop,
                    backoff=Backoff(initial=0.2, maximum=5.0),
                )
            except psycopg.OperationalError:
                return None  # stopped while the database was unreachable
            try:
                conn.execute(LEDGER_SESSION, (self._run_token,))
                conn.commit()  # a session setting: it lasts as long as the connection
                break
            except (psycopg.OperationalError, psycopg.InterfaceError):
                conn.close()
                if self.stop.is_set():
                    return None
        if self._ever_connected:
            self.metrics.reconnects.inc()
            log.info("reconnected to the database")
        else:
            log.info("connected to the database")
        self._ever_connected = True
        self._conn = conn
        return conn

    def _connection_lost(self, exc: Exception) -> None:
        self.metrics.db_errors.inc()
        with self._lock:
            self._problem = f"database connection lost: {first_line(exc)}"
        log.warning("database connection lost; reconnecting", extra={"fields": {"error": first_line(exc)}})
        self._close()

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()  # an open transaction is rolled back by the server
            except Exception as exc:  # closing a broken connection must not mask the real problem
                log.debug("error while closing the connection", extra={"fields": {"error": str(exc)}})

    def _load_lookups(self) -> bool:
        """Loads the scenario's lookups, waiting for the database and the bootstrap; False if stopped."""
        backoff = Backoff(initial=0.5, maximum=5.0)
        reported = None
        while not self.stop.is_set():
            conn = self._connection()
            if conn is None:
                return False
            try:
                self.scenario.load(conn)
            except LookupsNotReady as exc:
                message = f"scenario tables not ready: {exc}"
                if message != reported:
                    log.warning("waiting for the bootstrap", extra={"fields": {"detail": str(exc)}})
                    reported = message
                with self._lock:
                    self._problem = message
                self.stop.wait(backoff.next_delay())
                continue
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._connection_lost(exc)
                continue
            except psycopg.Error as exc:
                self.metrics.db_errors.inc()
                log.error("cannot read the scenario's lookups", extra={"fields": {"error": first_line(exc)}})
                self._rollback()
                with self._lock:
                    self._problem = f"cannot read lookups: {first_line(exc)}"
                self.stop.wait(backoff.next_delay())
                continue
            with self._lock:
                self._loaded, self._needs_load, self._problem = True, False, None
            return True
        return False

    def _rollback(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            except psycopg.Error:
                self._close()

    def _commit(self, batch: Batch) -> bool:
        """Writes `batch` exactly once. True when done (committed, or discarded after a non-transient
        error); False when stopped before it could be written (abandoned, nothing counted)."""
        uncertain = False  # a failed attempt: the batch may or may not have landed
        while True:
            if uncertain and self.stop.is_set():
                return False
            conn = self._connection()
            if conn is None:
                return False
            try:
                if uncertain and self._landed(conn, batch):
                    log.info(
                        "batch had landed before the connection was lost", extra={"fields": {"batch": batch.number}}
                    )
                    self._committed(batch, None)
                    return True
                started = self._clock()
                self._write(conn, batch)
                self._committed(batch, self._clock() - started)
                return True
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                uncertain = True
                self._connection_lost(exc)
            except psycopg.Error as exc:
                self.metrics.db_errors.inc()
                self._rollback()
                log.error(
                    "batch rejected by the database; discarded",
                    extra={"fields": {"batch": batch.number, "events": batch.size, "error": first_line(exc)}},
                )
                self._seq.update(batch.seq_marks)  # the discarded rows' sequence numbers are reused
                with self._lock:
                    self._needs_load = True
                self.stop.wait(1.0)
                return True
            finally:
                self._writing = False

    def _landed(self, conn: psycopg.Connection, batch: Batch) -> bool:
        row = conn.execute(LEDGER_READ, (self.run_id,)).fetchone()
        conn.rollback()
        return row is not None and row[0] >= batch.number

    def _write(self, conn: psycopg.Connection, batch: Batch) -> None:
        self._write_started = self._clock()
        self._writing = True
        with conn.cursor() as cur:
            for target, rows in batch.writes:
                if isinstance(target, InsertTarget):
                    with cur.copy(_copy_statement(target)) as copy:
                        for row in rows:
                            copy.write_row(row)
                else:
                    cur.executemany(_update_statement(target), rows)
            cur.execute(
                LEDGER_UPSERT, (self.run_id, self.config.scenario, batch.number, self._events_total + batch.size)
            )
        conn.commit()

    def cancel_inflight(self) -> None:
        """Asks the server to cancel the statement in flight (used when a stop takes too long)."""
        conn = self._conn
        if conn is not None and self._writing:
            try:
                conn.cancel_safe(timeout=1.0)
            except Exception as exc:
                log.warning("cancel failed", extra={"fields": {"error": str(exc)}})

    def _committed(self, batch: Batch, duration: float | None) -> None:
        self.scenario.committed(batch.parts)
        now = time.time()
        with self._lock:
            for kind, n in batch.counts.items():
                self._events_by_kind[kind] = self._events_by_kind.get(kind, 0) + n
            self._events_total += batch.size
            self._batches += 1
            self._bursts_committed += batch.bursts
            self._last_commit_at = now
            self._problem = None
        for kind, n in batch.counts.items():
            self.metrics.count_events(kind, n)
        self.metrics.batches.inc()
        if batch.bursts:
            self.metrics.bursts.inc(batch.bursts)
        self.metrics.last_commit.set(now)
        if duration is not None:
            self.metrics.batch_duration.observe(duration)
        for part in batch.parts:
            if part.note is not None:
                label = (
                    self.scenario.burst_label
                    if part.kind == self.scenario.burst_kind
                    else self.scenario.slow_change_label
                )
                log.info(f"{label} committed", extra={"fields": {"kind": part.kind, **part.note}})

    # -- logging --------------------------------------------------------------------------------------------
    def _maybe_log_progress(self) -> None:
        now = self._clock()
        if now - self._last_progress_log >= PROGRESS_LOG_SECONDS:
            self._last_progress_log = now
            status = self.status()
            log.info(
                "progress",
                extra={
                    "fields": {
                        "events_committed": status["events_committed"],
                        "batches": status["batches_committed"],
                        "rate": status["rate"],
                        "paused": status["paused"],
                    }
                },
            )

    def summary(self) -> dict:
        status = self.status()
        elapsed = None
        if self._started_at is not None:
            elapsed = (self._finished_at or self._clock()) - self._started_at
        per_second = None if not elapsed else status["events_committed_total"] / elapsed
        return {
            "run_id": self.run_id,
            "events_committed": status["events_committed"],
            "events_committed_total": status["events_committed_total"],
            "batches": status["batches_committed"],
            "elapsed_s": None if elapsed is None else round(elapsed, 3),
            "events_per_s": None if per_second is None else round(per_second, 1),
        }

    def _log_summary(self) -> None:
        log.info("generator stopped", extra={"fields": self.summary()})


def _copy_statement(target: InsertTarget) -> sql.Composed:
    columns = target.columns + (target.event_id_columns or ())
    return sql.SQL("COPY {} ({}) FROM STDIN").format(
        sql.Identifier(target.table), sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _update_statement(target: UpdateTarget) -> sql.Composed:
    assignments = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in target.set_columns]
    assignments += [sql.SQL("{} = now()").format(sql.Identifier(c)) for c in target.touch_columns]
    condition = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in target.key_columns)
    return sql.SQL("UPDATE {} SET {} WHERE {}").format(
        sql.Identifier(target.table), sql.SQL(", ").join(assignments), condition
    )
