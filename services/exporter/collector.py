"""The custom collector: one consistent, read-only snapshot of the pgtrickle catalog per scrape.

Every label takes its values from stream-table names (schema, name) or from fixed enumerations (statuses,
actions, operations, modes, health-check names and severities), so the number of series is bounded by the
number of stream tables.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import psycopg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool

from services.common import pgtrickle
from services.common.db import first_line
from services.common.deadline import DeadlineExceeded, run_within
from services.common.scenarios import get_scenario
from services.exporter.analyses import AnalysesReader
from services.exporter.history import DURATION_BUCKETS, HistoryTracker

log = logging.getLogger(__name__)

STATUSES = ("INITIALIZING", "ACTIVE", "SUSPENDED", "ERROR")
ACTIONS = ("NO_DATA", "FULL", "DIFFERENTIAL", "REINITIALIZE", "SKIP")
REFRESH_STATUSES = ("COMPLETED", "FAILED", "SKIPPED")
# Refresh counters exist from the start for these (zero until one happens), so that rate() and increase()
# answer 0 rather than nothing; other combinations appear with their first occurrence.
ALWAYS_PRESENT = {
    (action, status) for action in ("NO_DATA", "FULL", "DIFFERENTIAL") for status in ("COMPLETED", "FAILED")
}
MODES = ("DIFFERENTIAL", "FULL", "KEEP")
SWITCH_MODES = ("DIFFERENTIAL", "FULL")  # what the Advisor can ask a table to be switched to
CONFIDENCE = {"low": 1, "medium": 2, "high": 3}
SEVERITIES = ("OK", "WARN", "ERROR")
STAGES = ("connect", "catalog", "history", "change_buffers", "health_check", "engine_capacity", "analyses", "deadline")
READY_TIMEOUT_S = 3.0  # /readyz answers within this, whatever the database does
BASELINE_TIMEOUT_S = 120.0  # the start-up pass over the refresh history (first scrape only)
_SCHEDULE_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_UNIT_SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_CHECK_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
MAX_HEALTH_CHECKS = 32
MAX_SLOTS = 256
JOB_STATUSES = ("QUEUED", "RUNNING")
CDC_MODES = ("trigger", "wal", "transitioning")
_SPEEDUP = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*x\s*$")


def schedule_seconds(schedule: str | None) -> float | None:
    """'1s', '5m', '1h30m', '2w', '90' -> seconds; NULL (calculated) or a cron expression -> None."""
    if schedule is None:
        return None
    text = schedule.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        return float(text)
    parts = _SCHEDULE_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def speedup_ratio(text: str | None) -> float | None:
    """refresh_efficiency().diff_speedup ('12.3x') -> 12.3; NULL (not measured) -> None."""
    match = _SPEEDUP.match(text or "")
    return float(match.group(1)) if match else None


class _Budget:
    """What is left of the scrape timeout, applied to each statement as statement_timeout."""

    def __init__(self, seconds: float):
        self.deadline = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def apply(self, conn: psycopg.Connection, at_least: float = 0.0) -> None:
        ms = max(1, int(max(self.remaining(), at_least) * 1000))
        conn.execute(f"SET LOCAL statement_timeout = {ms}")


class PgTrickleCollector(Collector):
    def __init__(
        self,
        pool: ConnectionPool,
        scenario: str,
        scrape_timeout: float,
        analyses: AnalysesReader | None = None,
    ):
        self.pool, self.scenario, self.scrape_timeout, self.analyses = pool, scenario, scrape_timeout, analyses
        self.expected_stream_tables = get_scenario(scenario).stream_table_names
        self.history = HistoryTracker()
        self.errors: dict[str, int] = dict.fromkeys(STAGES, 0)
        self.scrapes = 0
        self._lock = threading.Lock()  # scrapes are serialised: the history tracker is shared state

    def describe(self) -> list[Metric]:
        return []  # registration must not touch the database

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        metrics = self._scrape_within_deadline()
        self.scrapes += 1
        duration = time.monotonic() - started
        yield from metrics
        yield from self._own_metrics(duration)

    def _deadline(self) -> float:
        """The client-side bound of one scrape: EXPORTER_SCRAPE_TIMEOUT (the first scrape also reads the
        refresh-history baseline, bounded by BASELINE_TIMEOUT_S), plus a moment for the server's own
        statement_timeout to answer first when the server is merely slow."""
        baseline = BASELINE_TIMEOUT_S if self.history.watermark is None else 0.0
        return self.scrape_timeout + baseline + 0.25

    def _scrape_within_deadline(self) -> list[Metric]:
        """One scrape, or pg_trickle_up 0 once the deadline passes, even when the server is frozen and no
        statement_timeout can fire (issue 14). Scrapes are serialised (the history tracker is shared state);
        a scrape still stuck on a frozen server holds the lock, and the next ones wait for it only until
        their own deadline."""
        deadline = time.monotonic() + self._deadline()
        if not self._lock.acquire(timeout=self._deadline()):
            return self._deadline_passed("a previous scrape is still waiting for the database")

        def scrape() -> list[Metric]:
            try:
                return self._scrape()
            finally:
                self._lock.release()  # by the scraping thread: an abandoned scrape keeps it until it ends

        try:
            return run_within(max(0.0, deadline - time.monotonic()), scrape, name="exporter-scrape")
        except DeadlineExceeded as exc:
            return self._deadline_passed(str(exc))

    def _deadline_passed(self, detail: str) -> list[Metric]:
        self._failed("deadline", DeadlineExceeded(detail))
        up = GaugeMetricFamily("pg_trickle_up", "1 when the database and the pg_trickle engine answered this scrape")
        up.add_metric([], 0)
        return [up]

    # -- one scrape ------------------------------------------------------------------------------------

    def _scrape(self) -> list[Metric]:
        up = GaugeMetricFamily("pg_trickle_up", "1 when the database and the pg_trickle engine answered this scrape")
        budget = _Budget(self.scrape_timeout)
        try:
            conn_cm = self.pool.connection(timeout=max(0.1, budget.remaining()))
            conn = conn_cm.__enter__()
        except Exception as exc:
            self._failed("connect", exc)
            up.add_metric([], 0)
            return [up]
        try:
            metrics = self._read(conn, budget)
        except Exception as exc:
            metrics = None
            self._failed("catalog", exc)
        finally:
            try:
                conn_cm.__exit__(None, None, None)
            except Exception as exc:  # a broken connection goes back to the pool to be replaced
                log.debug("returning the connection failed", extra={"fields": {"error": first_line(exc)}})
        if metrics is None:
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *metrics]

    def _failed(self, stage: str, exc: BaseException) -> None:
        self.errors[stage] += 1
        log.warning("scrape stage failed", extra={"fields": {"stage": stage, "error": first_line(exc)}})

    def _read(self, conn: psycopg.Connection, budget: _Budget) -> list[Metric]:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            budget.apply(conn)
            version = pgtrickle.version(conn)
            now = pgtrickle.database_now(conn)
            tables = pgtrickle.stream_tables(conn)
        metrics: list[Metric] = []
        info = GaugeMetricFamily(
            "pg_trickle_info", "The engine behind the catalog (always 1)", labels=["version", "engine", "scenario"]
        )
        info.add_metric([version, pgtrickle.engine_of(version), self.scenario], 1)
        metrics.append(info)
        metrics.extend(self._table_metrics(tables, now))
        metrics.extend(self._history_metrics(conn, budget, tables, now))
        metrics.extend(self._buffer_metrics(conn, budget, tables))
        metrics.extend(self._health_metrics(conn, budget))
        metrics.extend(self._capacity_metrics(conn, budget))
        metrics.extend(self._analyses_metrics(tables))
        return metrics

    def _stage(self, conn: psycopg.Connection, budget: _Budget, stage: str, read, at_least: float = 0.0):
        """Runs `read(conn)` in its own read-only transaction; a failure costs this stage only."""
        try:
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                budget.apply(conn, at_least)
                return read(conn)
        except Exception as exc:
            if conn.broken or conn.closed:
                raise  # the connection is gone: the whole scrape failed
            self._failed(stage, exc)  # e.g. statement_timeout (QueryCanceled) or a function missing
            return None

    # -- per stream table ------------------------------------------------------------------------------

    @staticmethod
    def _table_metrics(tables: list[pgtrickle.StreamTable], now) -> list[Metric]:
        labels = ["schema", "name"]
        status = GaugeMetricFamily(
            "pg_trickle_stream_table_status",
            "Status of each stream table as a state set: 1 for its current status, 0 for the others",
            labels=[*labels, "status"],
        )
        staleness = GaugeMetricFamily(
            "pg_trickle_staleness_seconds",
            "Age of the data a stream table holds: now - data_timestamp, as pgt_status() reports it (seconds)",
            labels=labels,
        )
        since = GaugeMetricFamily(
            "pg_trickle_seconds_since_last_refresh",
            "Seconds since the scheduler last completed a refresh of the stream table (NO_DATA included)",
            labels=labels,
        )
        schedule = GaugeMetricFamily(
            "pg_trickle_schedule_seconds",
            "Refresh interval of stream tables with a duration schedule (seconds; absent for calculated and cron)",
            labels=labels,
        )
        errors = GaugeMetricFamily(
            "pg_trickle_consecutive_errors", "Failed refreshes in a row (reset by a successful refresh)", labels=labels
        )
        populated = GaugeMetricFamily("pg_trickle_populated", "1 once the stream table holds data", labels=labels)
        for st in tables:
            key = [st.pgt_schema, st.pgt_name]
            for value in STATUSES:
                status.add_metric([*key, value], 1 if st.status == value else 0)
            if st.data_timestamp is not None:
                staleness.add_metric(key, max(0.0, (now - st.data_timestamp).total_seconds()))
            if st.last_refresh_at is not None:
                since.add_metric(key, max(0.0, (now - st.last_refresh_at).total_seconds()))
            seconds = schedule_seconds(st.schedule)
            if seconds is not None:
                schedule.add_metric(key, seconds)
            errors.add_metric(key, st.consecutive_errors)
            populated.add_metric(key, 1 if st.is_populated else 0)
        return [status, staleness, since, schedule, errors, populated]

    def _history_metrics(self, conn, budget: _Budget, tables, now) -> list[Metric]:
        def read(c: psycopg.Connection) -> bool:
            if not self.history.initialised:
                c.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                c.execute(f"SET LOCAL statement_timeout = {int(BASELINE_TIMEOUT_S * 1000)}")
                self.history.baseline(c, now)
            return True

        if not self.history.initialised:
            try:
                with conn.transaction():
                    read(conn)
            except Exception as exc:
                if conn.broken or conn.closed:
                    raise
                self._failed("history", exc)
        if self.history.initialised:
            self._stage(conn, budget, "history", lambda c: self.history.advance(c, now))
        if not self.history.initialised:
            return []
        labels = ["schema", "name"]
        refreshes = CounterMetricFamily(
            "pg_trickle_refreshes",
            "Finished refreshes by action and outcome, from the refresh history",
            labels=[*labels, "action", "status"],
        )
        rows = CounterMetricFamily(
            "pg_trickle_rows_changed",
            "Rows written to the stream table by completed refreshes, by operation",
            labels=[*labels, "operation"],
        )
        durations = HistogramMetricFamily(
            "pg_trickle_refresh_duration_seconds",
            "Duration of completed refreshes that did work (FULL, DIFFERENTIAL, REINITIALIZE), in seconds",
            labels=labels,
        )
        for st in tables:
            key = [st.pgt_schema, st.pgt_name]
            totals = self.history.totals.get(st.pgt_id)
            if totals is None:
                totals = self.history.totals[st.pgt_id]  # a new table: zeros, so every series exists
            for action in ACTIONS:
                for status in REFRESH_STATUSES:
                    count = totals.refreshes.get((action, status), 0)
                    if count or (action, status) in ALWAYS_PRESENT:
                        refreshes.add_metric([*key, action, status], count)
            rows.add_metric([*key, "inserted"], totals.rows_inserted)
            rows.add_metric([*key, "deleted"], totals.rows_deleted)
            cumulative = totals.cumulative_buckets()
            buckets = [(_le(bound), float(c)) for bound, c in zip(DURATION_BUCKETS, cumulative, strict=True)]
            buckets.append(("+Inf", float(totals.duration_count)))
            durations.add_metric(key, buckets, totals.duration_sum)
        return [refreshes, rows, durations]

    def _buffer_metrics(self, conn, budget: _Budget, tables) -> list[Metric]:
        buffers = self._stage(conn, budget, "change_buffers", pgtrickle.change_buffer_sizes)
        if buffers is None:
            return []
        pending: dict[str, int] = defaultdict(int)
        size: dict[str, int] = defaultdict(int)
        for row in buffers:
            if row.pending_rows is not None:
                pending[row.stream_table] += row.pending_rows
            if row.buffer_bytes is not None:
                size[row.stream_table] += row.buffer_bytes
        family = GaugeMetricFamily(
            "pg_trickle_change_buffer_pending_rows",
            "Captured source changes the stream table has not consumed yet, summed over its sources (rows)",
            labels=["schema", "name"],
        )
        size_family = GaugeMetricFamily(
            "pg_trickle_change_buffer_bytes",
            "Size of the change buffers the stream table reads, summed over its sources (bytes)",
            labels=["schema", "name"],
        )
        for st in tables:
            if st.qualified_name in pending:
                family.add_metric([st.pgt_schema, st.pgt_name], pending[st.qualified_name])
            if st.qualified_name in size:
                size_family.add_metric([st.pgt_schema, st.pgt_name], size[st.qualified_name])
        return [family, size_family]

    def _capacity_metrics(self, conn, budget: _Budget) -> list[Metric]:
        """The engine's own capacity risks: WAL a CDC slot retains, and the refresh worker pool and job queue
        (pgtrickle.slot_health(), worker_pool_status(), parallel_job_status(); src/monitor/alert.rs and
        src/monitor/health.rs at v0.67.0)."""

        def read(conn):
            return (
                pgtrickle.slot_health(conn),
                pgtrickle.worker_pool_status(conn),
                pgtrickle.refresh_jobs_by_status(conn),
            )

        found = self._stage(conn, budget, "engine_capacity", read)
        if found is None:
            return []
        slots, pool, jobs = found
        retained = GaugeMetricFamily(
            "pg_trickle_slot_retained_wal_bytes",
            "WAL a pg_trickle CDC source retains (slot_health(); 0 for trigger-based capture)",
            labels=["source_table", "cdc_mode"],
        )
        seen: set[str] = set()
        for slot in slots:
            # One row per CDC source table: the label is bounded by the scenario's source tables.
            if slot.source_table is None or slot.source_table in seen or len(seen) >= MAX_SLOTS:
                continue
            seen.add(slot.source_table)
            mode = slot.wal_status if slot.wal_status in CDC_MODES else "other"
            retained.add_metric([slot.source_table, mode], slot.retained_wal_bytes or 0)
        metrics: list[Metric] = [retained]
        if pool is not None:
            active = GaugeMetricFamily(
                "pg_trickle_worker_pool_active_workers", "Dynamic refresh workers busy now (worker_pool_status())"
            )
            active.add_metric([], pool.active_workers)
            budget_family = GaugeMetricFamily(
                "pg_trickle_worker_pool_max_workers",
                "Size of the dynamic refresh worker pool (pg_trickle.max_dynamic_refresh_workers)",
            )
            budget_family.add_metric([], pool.max_workers)
            metrics.extend([active, budget_family])
        queue = GaugeMetricFamily(
            "pg_trickle_refresh_jobs",
            "Scheduler refresh jobs now queued or running (parallel_job_status())",
            labels=["status"],
        )
        for status in JOB_STATUSES:
            queue.add_metric([status], jobs.get(status, 0))
        metrics.append(queue)
        return metrics

    def _health_metrics(self, conn, budget: _Budget) -> list[Metric]:
        checks = self._stage(conn, budget, "health_check", pgtrickle.health_check)
        if checks is None:
            return []
        health = GaugeMetricFamily(
            "pg_trickle_health_check",
            "pgtrickle.health_check() rows as a state set: 1 for the check's current severity (OK, WARN, ERROR)",
            labels=["check", "severity"],
        )
        scheduler = GaugeMetricFamily(
            "pg_trickle_scheduler_running", "1 when the engine's scheduler runs for this database (health_check)"
        )
        running: int | None = None
        seen: set[str] = set()
        for check in checks:
            severity = "WARN" if check.severity == "WARNING" else check.severity  # pg_trickle spells it both ways
            if check.check_name == "scheduler_running" and running is None:
                running = 1 if severity == "OK" else 0
            # check_name is the engine's own fixed set (ten rows in pg_trickle 0.67); anything that does not
            # look like one, repeats, and names beyond MAX_HEALTH_CHECKS are left out: the label stays bounded.
            if check.check_name in seen or len(seen) >= MAX_HEALTH_CHECKS:
                continue
            if not _CHECK_NAME.fullmatch(check.check_name or ""):
                continue
            seen.add(check.check_name)
            for value in SEVERITIES:
                health.add_metric([check.check_name, value], 1 if severity == value else 0)
        scheduler.add_metric([], running or 0)
        return [health, scheduler]

    def _analyses_metrics(self, tables) -> list[Metric]:
        latest = self.analyses.latest if self.analyses else None
        if latest is None:
            return []
        labels = ["schema", "name"]
        ratio = GaugeMetricFamily(
            "pg_trickle_change_ratio",
            "Average fraction of the stream table's rows a refresh changes (refresh_efficiency().avg_change_ratio)",
            labels=labels,
        )
        speedup = GaugeMetricFamily(
            "pg_trickle_differential_speedup_ratio",
            "Average FULL duration / average DIFFERENTIAL duration, only where both are measured",
            labels=labels,
        )
        recommendation = GaugeMetricFamily(
            "pg_trickle_advisor_recommendation",
            "Refresh Mode Advisor verdict as a state set: 1 for the recommended mode (DIFFERENTIAL, FULL, KEEP)",
            labels=[*labels, "mode"],
        )
        confidence = GaugeMetricFamily(
            "pg_trickle_advisor_confidence", "Refresh Mode Advisor confidence: 1 low, 2 medium, 3 high", labels=labels
        )
        switch = GaugeMetricFamily(
            "pg_trickle_advisor_switch_recommended",
            "Refresh Mode Advisor switch as a state set: 1 for the mode recommended instead of the configured one"
            " (never KEEP nor the configured mode, which pg_trickle repeats after a NO_DATA refresh)",
            labels=[*labels, "mode"],
        )
        for st in tables:
            key = (st.pgt_schema, st.pgt_name)
            efficiency = latest.efficiency.get(key)
            if efficiency is not None:
                if efficiency.avg_change_ratio is not None:
                    ratio.add_metric(list(key), efficiency.avg_change_ratio)
                measured = speedup_ratio(efficiency.diff_speedup)
                if measured is not None:
                    speedup.add_metric(list(key), measured)
            advice = latest.recommendations.get(key)
            if advice is not None and advice.recommended_mode in MODES:
                for mode in MODES:
                    recommendation.add_metric([*key, mode], 1 if advice.recommended_mode == mode else 0)
                if advice.confidence in CONFIDENCE:
                    confidence.add_metric(list(key), CONFIDENCE[advice.confidence])
                for mode in SWITCH_MODES:
                    switch.add_metric([*key, mode], 1 if advice.switch_to == mode else 0)
        return [ratio, speedup, recommendation, confidence, switch]

    # -- the exporter itself ---------------------------------------------------------------------------

    def _own_metrics(self, duration: float) -> list[Metric]:
        scrape = GaugeMetricFamily(
            "pg_trickle_exporter_scrape_duration_seconds", "Time this scrape spent reading the catalog (seconds)"
        )
        scrape.add_metric([], duration)
        errors = CounterMetricFamily(
            "pg_trickle_exporter_scrape_errors",
            "Failed catalog reads by stage since the exporter started",
            labels=["stage"],
        )
        for stage in STAGES:
            count = self.errors[stage] + (self.analyses.errors if stage == "analyses" and self.analyses else 0)
            errors.add_metric([stage], count)
        scrapes = CounterMetricFamily("pg_trickle_exporter_scrapes", "Scrapes served since the exporter started")
        scrapes.add_metric([], self.scrapes)
        out: list[Metric] = [scrape, errors, scrapes]
        latest = self.analyses.latest if self.analyses else None
        if latest is not None:
            age = GaugeMetricFamily(
                "pg_trickle_exporter_analyses_age_seconds",
                "Age of the refresh_efficiency()/recommend_refresh_mode() figures served (seconds)",
            )
            age.add_metric([], max(0.0, time.time() - latest.read_at))
            took = GaugeMetricFamily(
                "pg_trickle_exporter_analyses_duration_seconds",
                "Time the last background read of refresh_efficiency() and recommend_refresh_mode() took (seconds)",
            )
            took.add_metric([], latest.duration)
            out.extend([age, took])
        return out

    def ready(self) -> tuple[bool, str]:
        """Ready when the database answers, the engine's catalog is readable and it lists every stream
        table of the scenario (the scenario's objects are present)."""

        def read() -> set[str]:
            with self.pool.connection(timeout=2) as conn, conn.transaction():
                conn.execute("SET LOCAL statement_timeout = 2000")
                pgtrickle.version(conn)
                return {st.pgt_name for st in pgtrickle.stream_tables(conn)}

        try:  # bounded on the client as well: a frozen server answers no statement_timeout
            present = run_within(READY_TIMEOUT_S, read, name="exporter-ready")
        except Exception as exc:
            return False, f"catalog not readable: {first_line(exc)}"
        missing = [name for name in self.expected_stream_tables if name not in present]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            return False, f"catalog readable, but the {self.scenario} stream tables {shown} are missing"
        return True, "catalog readable, scenario stream tables present"


def _le(bound: float) -> str:
    return f"{bound:g}" if bound != int(bound) else f"{bound:.1f}"
