"""The only module that talks to the `pgtrickle` schema (pg_trickle, or the emulator of its SQL surface).

Columns are always selected by name (pg_trickle 0.108 inserted columns in the middle of several result
sets), into typed, frozen records. Names, columns and types follow ../shared/reference/pg_trickle-api.md
(sections 3-5). Functions take an open psycopg connection; they neither commit nor roll back, except the
lifecycle calls, which run in whatever transaction the caller has open.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import class_row

ENGINE_EMULATOR = "emulator"
ENGINE_EXTENSION = "pg_trickle"


# -- records -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StreamTable:
    """One row of pgtrickle.pgt_stream_tables (the columns our services use)."""

    pgt_id: int
    pgt_schema: str
    pgt_name: str
    refresh_mode: str
    schedule: str | None  # NULL = calculated
    status: str
    is_populated: bool
    consecutive_errors: int
    data_timestamp: datetime | None
    last_refresh_at: datetime | None
    defining_query: str
    # The query as the user gave it: pg_trickle stores TopK queries in defining_query without their
    # ORDER BY ... LIMIT (reference section 5), so definitions are compared with this one.
    original_query: str | None = None
    # Why the table is in ERROR: pg_trickle 0.67 writes it on a permanent refresh error (status ERROR at
    # once, src/catalog.rs::set_error_state) and clears it on the next success or resume. A transient
    # error leaves it NULL and writes a FAILED history row instead.
    last_error_message: str | None = None

    @property
    def user_query(self) -> str:
        return self.original_query or self.defining_query

    @property
    def qualified_name(self) -> str:
        return f"{self.pgt_schema}.{self.pgt_name}"

    @property
    def schedule_label(self) -> str:
        return self.schedule if self.schedule is not None else "calculated"


@dataclass(frozen=True)
class Status:
    """pgtrickle.pgt_status(): `name` is schema-qualified."""

    name: str
    status: str
    refresh_mode: str
    is_populated: bool
    consecutive_errors: int
    schedule: str | None
    data_timestamp: datetime | None
    staleness: timedelta | None


@dataclass(frozen=True)
class RefreshEvent:
    """A pgtrickle.pgt_refresh_history row joined with its stream table's name."""

    refresh_id: int
    pgt_id: int
    pgt_schema: str
    pgt_name: str
    data_timestamp: datetime
    start_time: datetime
    end_time: datetime | None
    action: str
    status: str
    rows_inserted: int
    rows_deleted: int
    initiated_by: str | None
    was_full_fallback: bool | None
    error_message: str | None

    @property
    def duration_seconds(self) -> float | None:
        """Measured duration, or None. pg_trickle 0.67 writes start_time and end_time with now() of the
        refresh's own transaction (src/catalog.rs::RefreshRecord::insert and ::complete), so a history
        row's end_time - start_time is 0 on the engine (and the emulator, which records the same): that
        zero is not a measure and reads as None here, never as an instantaneous refresh."""
        if self.end_time is None or self.end_time <= self.start_time:
            return None
        return (self.end_time - self.start_time).total_seconds()


@dataclass(frozen=True)
class Efficiency:
    """pgtrickle.refresh_efficiency()."""

    pgt_schema: str
    pgt_name: str
    refresh_mode: str
    total_refreshes: int
    diff_count: int
    full_count: int
    avg_diff_ms: float | None
    avg_full_ms: float | None
    avg_change_ratio: float | None
    diff_speedup: str | None
    last_refresh_at: str | None


@dataclass(frozen=True)
class Recommendation:
    """pgtrickle.recommend_refresh_mode(): the Refresh Mode Advisor."""

    pgt_schema: str
    pgt_name: str
    current_mode: str
    effective_mode: str | None
    recommended_mode: str
    confidence: str
    reason: str | None
    signals: dict[str, Any] | None

    @property
    def switch_to(self) -> str | None:
        """The mode the Advisor would have this table switched to, or None when it recommends no change.
        pg_trickle answers KEEP only when its verdict equals the last COMPLETED action (src/diagnostics.rs::
        compute_recommendation); after a NO_DATA row it repeats the configured mode, which is no change."""
        if self.recommended_mode in ("KEEP", self.current_mode):
            return None
        return self.recommended_mode


def measured_ms(value: float | None) -> float | None:
    """An average duration of refresh_efficiency() (avg_diff_ms / avg_full_ms), or None when it is not a
    measure: pg_trickle averages end_time - start_time of history rows, which it writes with one now()
    (0 ms), so 0 means "not measured" (see RefreshEvent.duration_seconds)."""
    return value if value is not None and value > 0 else None


@dataclass(frozen=True)
class TreeLine:
    """pgtrickle.dependency_tree(), in the engine's DFS order."""

    tree_line: str
    node: str
    node_type: str
    depth: int
    status: str | None
    refresh_mode: str | None


@dataclass(frozen=True)
class HealthCheck:
    check_name: str
    severity: str  # OK, WARN, ERROR (pg_trickle also emits WARNING for one check)
    detail: str | None


@dataclass(frozen=True)
class Dependency:
    """An edge of the DAG: `source` (schema.table) feeds stream table `pgt_schema.pgt_name`."""

    pgt_id: int
    pgt_schema: str
    pgt_name: str
    source_schema: str
    source_name: str
    source_type: str

    @property
    def source(self) -> str:
        return f"{self.source_schema}.{self.source_name}"


# -- reads ---------------------------------------------------------------------------------------------


def _fetch(conn: psycopg.Connection, record: type, query: str | sql.Composable, params: tuple | dict = ()):
    with conn.cursor(row_factory=class_row(record)) as cur:
        cur.execute(query, params)
        return cur.fetchall()


def version(conn: psycopg.Connection) -> str:
    return conn.execute("SELECT pgtrickle.version()").fetchone()[0]


def engine_of(version_text: str) -> str:
    """The emulator says so in its version string; anything else is the real extension."""
    return ENGINE_EMULATOR if ENGINE_EMULATOR in version_text.lower() else ENGINE_EXTENSION


_STREAM_TABLES = """
SELECT pgt_id, pgt_schema, pgt_name, refresh_mode, schedule, status, is_populated,
       consecutive_errors, data_timestamp, last_refresh_at, defining_query, original_query, last_error_message
  FROM pgtrickle.pgt_stream_tables
"""


def stream_tables(conn: psycopg.Connection) -> list[StreamTable]:
    return _fetch(
        conn,
        StreamTable,
        f"{_STREAM_TABLES} ORDER BY pgt_id",
    )


def split_name(name: str) -> tuple[str | None, str]:
    """`schema.table` -> (schema, table); a bare name -> (None, name): pg_trickle resolves it with
    current_schema(). Names are taken as written (unquoted SQL names in lower case)."""
    schema, dot, table = name.rpartition(".")
    return (schema, table) if dot else (None, name)


def find_stream_table(conn: psycopg.Connection, name: str) -> StreamTable | None:
    """One row of pgt_stream_tables by name (bare names resolve in current_schema(), as pg_trickle does)."""
    schema, table = split_name(name)
    rows = _fetch(
        conn,
        StreamTable,
        f"{_STREAM_TABLES} WHERE pgt_schema = coalesce(%s, current_schema()) AND pgt_name = %s",
        (schema, table),
    )
    return rows[0] if rows else None


def status_of(conn: psycopg.Connection, qualified_name: str) -> Status | None:
    """The pgt_status() row of one stream table (`name` there is schema-qualified)."""
    rows = _fetch(
        conn,
        Status,
        """SELECT name, status, refresh_mode, is_populated, consecutive_errors, schedule,
                  data_timestamp, staleness
             FROM pgtrickle.pgt_status() WHERE name = %s""",
        (qualified_name,),
    )
    return rows[0] if rows else None


def has_dependents(conn: psycopg.Connection, pgt_id: int) -> bool:
    """True when another stream table reads this one (pgt_dependencies.source_relid = its storage)."""
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pgtrickle.pgt_dependencies d
                             JOIN pgtrickle.pgt_stream_tables st ON st.pgt_relid = d.source_relid
                            WHERE st.pgt_id = %s)""",
        (pgt_id,),
    ).fetchone()
    return bool(row[0])


def failure_reason(conn: psycopg.Connection, table: StreamTable) -> str | None:
    """Why a stream table is failing, as pg_trickle 0.67 records it: last_error_message for a permanent
    error (status ERROR; no FAILED history row is written by its default parallel refresh workers), else the
    error_message of the newest FAILED history row (transient errors counted towards SUSPENDED)."""
    if table.last_error_message:
        return table.last_error_message
    event = last_failure(conn, table.pgt_id)
    return event.error_message if event else None


def last_failure(conn: psycopg.Connection, pgt_id: int) -> RefreshEvent | None:
    """The newest FAILED refresh of one stream table (its error_message explains an ERROR/SUSPENDED status)."""
    rows = _fetch(
        conn,
        RefreshEvent,
        f"{_HISTORY} WHERE rh.pgt_id = %s AND rh.status = 'FAILED' ORDER BY rh.start_time DESC LIMIT 1",
        (pgt_id,),
    )
    return rows[0] if rows else None


def status(conn: psycopg.Connection) -> list[Status]:
    return _fetch(
        conn,
        Status,
        """SELECT name, status, refresh_mode, is_populated, consecutive_errors, schedule,
                  data_timestamp, staleness
             FROM pgtrickle.pgt_status()""",
    )


_HISTORY = """
SELECT rh.refresh_id, rh.pgt_id, st.pgt_schema, st.pgt_name, rh.data_timestamp, rh.start_time,
       rh.end_time, rh.action, rh.status, rh.rows_inserted, rh.rows_deleted, rh.initiated_by,
       rh.was_full_fallback, rh.error_message
  FROM pgtrickle.pgt_refresh_history rh
  JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = rh.pgt_id
"""


def recent_refreshes(conn: psycopg.Connection, limit: int = 40, *, finished_only: bool = True) -> list[RefreshEvent]:
    """The newest refreshes, newest first (bounded by `limit`; served by the start_time index)."""
    where = "WHERE rh.status IN ('COMPLETED', 'FAILED')" if finished_only else ""
    return _fetch(conn, RefreshEvent, f"{_HISTORY} {where} ORDER BY rh.start_time DESC LIMIT %s", (limit,))


_SINCE = """WHERE rh.start_time > now() - make_interval(secs => %s) AND rh.status IN ('COMPLETED', 'FAILED')
 ORDER BY rh.start_time DESC LIMIT %s"""


def refreshes_since(conn: psycopg.Connection, seconds: float, limit: int = 2000) -> list[RefreshEvent]:
    """Finished refreshes that started in the last `seconds` (database clock), oldest first, at most `limit`
    (the newest ones): the dashboard's refresh cascade timeline. Served by the start_time index."""
    return _fetch(
        conn,
        RefreshEvent,
        f"SELECT * FROM ({_HISTORY} {_SINCE}) newest ORDER BY start_time, refresh_id",  # noqa: S608 - constants
        (seconds, limit),
    )


def refreshes_after(
    conn: psycopg.Connection, after_refresh_id: int, limit: int = 5000, *, finished_only: bool = True
) -> list[RefreshEvent]:
    """Refreshes with refresh_id > `after_refresh_id`, oldest first (finished ones only unless
    `finished_only=False`, which also returns RUNNING rows): incremental readers (the exporter) keep the
    last id they saw, so each read costs only what is new (primary-key range scan)."""
    where = "AND rh.status IN ('COMPLETED', 'FAILED')" if finished_only else ""
    return _fetch(
        conn,
        RefreshEvent,
        f"{_HISTORY} WHERE rh.refresh_id > %s {where} ORDER BY rh.refresh_id LIMIT %s",
        (after_refresh_id, limit),
    )


def refreshes_by_id(conn: psycopg.Connection, refresh_ids: list[int]) -> list[RefreshEvent]:
    """The given refreshes (primary-key lookups), oldest first; ids that no longer exist are left out."""
    if not refresh_ids:
        return []
    return _fetch(
        conn, RefreshEvent, f"{_HISTORY} WHERE rh.refresh_id = ANY(%s) ORDER BY rh.refresh_id", (list(refresh_ids),)
    )


@dataclass(frozen=True)
class RefreshTotals:
    """Finished refreshes of one stream table grouped by action and status, up to a refresh_id."""

    pgt_id: int
    action: str
    status: str
    refreshes: int
    rows_inserted: int
    rows_deleted: int


@dataclass(frozen=True)
class DurationBuckets:
    """Cumulative counts of one stream table's completed refreshes that did work (FULL, DIFFERENTIAL,
    REINITIALIZE) by duration: `cumulative[i]` = refreshes lasting <= bounds[i] seconds."""

    pgt_id: int
    cumulative: list[int]
    count: int
    sum_seconds: float


def history_watermark(conn: psycopg.Connection) -> tuple[int, list[int]]:
    """(highest refresh_id, ids of refreshes still RUNNING at or below it): where an incremental reader
    starts. One pass over the history: run it once at start-up, never per scrape."""
    (top,) = conn.execute("SELECT coalesce(max(refresh_id), 0) FROM pgtrickle.pgt_refresh_history").fetchone()
    running = conn.execute(
        "SELECT refresh_id FROM pgtrickle.pgt_refresh_history WHERE status = 'RUNNING' AND refresh_id <= %s"
        " ORDER BY refresh_id",
        (top,),
    ).fetchall()
    return top, [row[0] for row in running]


def refresh_ids_between(conn: psycopg.Connection, above: int, up_to: int) -> list[int]:
    """The refresh_ids visible in (`above`, `up_to`] (a primary-key range scan): an incremental reader
    starting at `up_to` finds the ids the sequence handed out there whose rows it cannot see yet."""
    rows = conn.execute(
        "SELECT refresh_id FROM pgtrickle.pgt_refresh_history WHERE refresh_id > %s AND refresh_id <= %s"
        " ORDER BY refresh_id",
        (above, up_to),
    ).fetchall()
    return [row[0] for row in rows]


def refresh_totals(conn: psycopg.Connection, up_to_refresh_id: int) -> list[RefreshTotals]:
    """Finished refreshes (COMPLETED, FAILED, SKIPPED) with refresh_id <= `up_to_refresh_id`, grouped by
    stream table, action and status (one pass over the history: start-up only)."""
    return _fetch(
        conn,
        RefreshTotals,
        """SELECT pgt_id, action, status, count(*) AS refreshes,
                  coalesce(sum(rows_inserted), 0)::bigint AS rows_inserted,
                  coalesce(sum(rows_deleted), 0)::bigint AS rows_deleted
             FROM pgtrickle.pgt_refresh_history
            WHERE refresh_id <= %s AND status IN ('COMPLETED', 'FAILED', 'SKIPPED')
            GROUP BY pgt_id, action, status""",
        (up_to_refresh_id,),
    )


WORK_ACTIONS = ("FULL", "DIFFERENTIAL", "REINITIALIZE")


def refresh_duration_buckets(
    conn: psycopg.Connection, up_to_refresh_id: int, bounds: tuple[float, ...]
) -> list[DurationBuckets]:
    """Duration histogram of the COMPLETED refreshes that did work, per stream table, with refresh_id <=
    `up_to_refresh_id` (one pass over the history: start-up only). Only measured durations count: a row
    whose end_time equals its start_time (pg_trickle 0.67 writes both with one now()) is left out."""
    filters = sql.SQL(", ").join(
        sql.SQL("count(*) FILTER (WHERE d <= {})").format(sql.Literal(float(bound))) for bound in bounds
    )
    query = sql.SQL(
        """SELECT pgt_id, ARRAY[{}]::bigint[] AS cumulative, count(*) AS count,
                  coalesce(sum(d), 0)::float8 AS sum_seconds
             FROM (SELECT pgt_id, extract(epoch FROM end_time - start_time)::float8 AS d
                     FROM pgtrickle.pgt_refresh_history
                    WHERE refresh_id <= %s AND status = 'COMPLETED' AND end_time > start_time
                      AND action = ANY(%s)) h
            GROUP BY pgt_id"""
    ).format(filters)
    return _fetch(conn, DurationBuckets, query, (up_to_refresh_id, list(WORK_ACTIONS)))


@dataclass(frozen=True)
class ChangeBuffer:
    """pgtrickle.change_buffer_sizes(): one row per (stream table, source)."""

    stream_table: str
    source_table: str
    cdc_mode: str | None
    pending_rows: int | None
    buffer_bytes: int | None


def change_buffer_sizes(conn: psycopg.Connection) -> list[ChangeBuffer]:
    return _fetch(
        conn,
        ChangeBuffer,
        "SELECT stream_table, source_table, cdc_mode, pending_rows, buffer_bytes FROM pgtrickle.change_buffer_sizes()",
    )


@dataclass(frozen=True)
class SlotHealth:
    """pgtrickle.slot_health(): one row per CDC source (trigger mode: the trigger, 0 bytes of WAL retained)."""

    slot_name: str
    source_table: str | None  # schema.table of source_relid (NULL if the table is gone)
    active: bool
    retained_wal_bytes: int
    wal_status: str


def slot_health(conn: psycopg.Connection) -> list[SlotHealth]:
    return _fetch(
        conn,
        SlotHealth,
        """SELECT h.slot_name, format('%%I.%%I', n.nspname, c.relname) AS source_table, h.active,
                  h.retained_wal_bytes, h.wal_status
             FROM pgtrickle.slot_health() h
             LEFT JOIN pg_catalog.pg_class c ON c.oid = h.source_relid::oid
             LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            ORDER BY 2""",
    )


@dataclass(frozen=True)
class WorkerPool:
    """pgtrickle.worker_pool_status(): the dynamic refresh worker pool (src/monitor/health.rs)."""

    active_workers: int
    max_workers: int
    parallel_mode: str


def worker_pool_status(conn: psycopg.Connection) -> WorkerPool | None:
    rows = _fetch(
        conn, WorkerPool, "SELECT active_workers, max_workers, parallel_mode FROM pgtrickle.worker_pool_status()"
    )
    return rows[0] if rows else None


def refresh_jobs_by_status(conn: psycopg.Connection) -> dict[str, int]:
    """Queued and running scheduler jobs (pgtrickle.parallel_job_status(0): jobs finished 0 s ago drop out)."""
    rows = conn.execute(
        "SELECT status, count(*) FROM pgtrickle.parallel_job_status(0) WHERE status IN ('QUEUED', 'RUNNING')"
        " GROUP BY status"
    ).fetchall()
    return {status: count for status, count in rows}


def database_now(conn: psycopg.Connection) -> datetime:
    """The server's transaction time: ages are computed against it, never against a local clock."""
    return conn.execute("SELECT now()").fetchone()[0]


def refresh_efficiency(conn: psycopg.Connection) -> list[Efficiency]:
    return _fetch(
        conn,
        Efficiency,
        """SELECT pgt_schema, pgt_name, refresh_mode, total_refreshes, diff_count, full_count,
                  avg_diff_ms, avg_full_ms, avg_change_ratio, diff_speedup, last_refresh_at
             FROM pgtrickle.refresh_efficiency() ORDER BY pgt_schema, pgt_name""",
    )


# The bootstrap's wrapper (sql/common/monitoring.sql): the advisor counts change-buffer rows in
# pgtrickle_changes as the caller, where the monitoring role has no right; the wrapper runs it as the owner.
ADVISOR_WRAPPER = "demo_monitor.recommend_refresh_mode(text)"


def recommend_refresh_mode(conn: psycopg.Connection, name: str | None = None) -> list[Recommendation]:
    """The Advisor, through the bootstrap's wrapper when the database has it (it does wherever the demo roles
    run), else pgtrickle.recommend_refresh_mode() itself."""
    (wrapped,) = conn.execute(
        "SELECT to_regprocedure(%s) IS NOT NULL AND has_function_privilege(to_regprocedure(%s), 'EXECUTE')",
        (ADVISOR_WRAPPER, ADVISOR_WRAPPER),
    ).fetchone()
    function = sql.Identifier("demo_monitor" if wrapped else "pgtrickle", "recommend_refresh_mode")
    return _fetch(
        conn,
        Recommendation,
        sql.SQL(
            """SELECT pgt_schema, pgt_name, current_mode, effective_mode, recommended_mode, confidence,
                  reason, signals
             FROM {}(%s) ORDER BY pgt_schema, pgt_name"""
        ).format(function),
        (name,),
    )


def dependency_tree(conn: psycopg.Connection) -> list[TreeLine]:
    # No ORDER BY: the function returns rows in DFS order, which is the tree's reading order.
    return _fetch(
        conn,
        TreeLine,
        "SELECT tree_line, node, node_type, depth, status, refresh_mode FROM pgtrickle.dependency_tree()",
    )


def health_check(conn: psycopg.Connection) -> list[HealthCheck]:
    return _fetch(conn, HealthCheck, "SELECT check_name, severity, detail FROM pgtrickle.health_check()")


def dependencies(conn: psycopg.Connection) -> list[Dependency]:
    """The DAG's edges from pgt_dependencies, sources resolved to schema.name through pg_class."""
    return _fetch(
        conn,
        Dependency,
        """SELECT d.pgt_id, st.pgt_schema, st.pgt_name, n.nspname AS source_schema,
                  c.relname AS source_name, d.source_type
             FROM pgtrickle.pgt_dependencies d
             JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = d.pgt_id
             JOIN pg_catalog.pg_class c ON c.oid = d.source_relid
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            ORDER BY d.pgt_id, n.nspname, c.relname""",
    )


def extension_installed(conn: psycopg.Connection) -> bool:
    """True when the real pg_trickle extension is created in this database."""
    row = conn.execute("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'pg_trickle'").fetchone()
    return row is not None


def schema_present(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = 'pgtrickle'").fetchone()
    return row is not None


# -- lifecycle (writes) --------------------------------------------------------------------------------


def create_stream_table(
    conn: psycopg.Connection,
    name: str,
    query: str,
    *,
    schedule: str = "calculated",
    refresh_mode: str = "AUTO",
    initialize: bool = True,
    if_not_exists: bool = False,
) -> None:
    function = "create_stream_table_if_not_exists" if if_not_exists else "create_stream_table"
    conn.execute(
        sql.SQL(
            "SELECT pgtrickle.{}(name => %s, query => %s, schedule => %s, refresh_mode => %s, initialize => %s)"
        ).format(sql.Identifier(function)),
        (name, query, schedule, refresh_mode, initialize),
    )


def alter_stream_table(
    conn: psycopg.Connection,
    name: str,
    *,
    query: str | None = None,
    schedule: str | None = None,
    refresh_mode: str | None = None,
    status: str | None = None,
) -> None:
    """NULL arguments leave the property unchanged (pg_trickle semantics)."""
    conn.execute(
        "SELECT pgtrickle.alter_stream_table(name => %s, query => %s, schedule => %s,"
        " refresh_mode => %s, status => %s)",
        (name, query, schedule, refresh_mode, status),
    )


def drop_stream_table(conn: psycopg.Connection, name: str, *, cascade: bool = False) -> None:
    conn.execute("SELECT pgtrickle.drop_stream_table(name => %s, cascade => %s)", (name, cascade))


def refresh_stream_table(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pgtrickle.refresh_stream_table(name => %s)", (name,))


def resume_stream_table(conn: psycopg.Connection, name: str) -> None:
    conn.execute("SELECT pgtrickle.resume_stream_table(name => %s)", (name,))


# -- emulator only -------------------------------------------------------------------------------------


def emulator_tick(conn: psycopg.Connection) -> None:
    """One scheduler tick of the emulator (the real extension schedules itself)."""
    conn.execute("SELECT pgtrickle.emulator_tick()")


def emulator_run(conn: psycopg.Connection, tick_interval_ms: int = 500, max_ticks: int | None = None) -> None:
    """Drives the emulator's scheduler from this session until cancelled (needs an autocommit connection,
    because the procedure commits after every tick)."""
    conn.execute("CALL pgtrickle.emulator_run(%s, %s)", (tick_interval_ms, max_ticks))
