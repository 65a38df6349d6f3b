"""Reconciliation without Kubernetes: desired spec + pgtrickle catalog -> pgtrickle calls -> status.

Every function takes an open psycopg connection and the parsed spec; database errors are caught and turned
into a `Problem` (reason, the database's own message, retryable or not), never raised to the caller. All
pgtrickle reads and writes go through services.common.pgtrickle.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg import errors as pgerrors
from psycopg_pool import PoolTimeout

from services.common import pgtrickle
from services.common.db import first_line
from services.operator.spec import StreamTableSpec, same_query, schedule_key, schedule_seconds

# Conditions (type -> reasons used below).
READY, DEGRADED, STALE = "Ready", "Degraded", "Stale"
# A stream table is Stale when its last refresh is older than this many scheduled intervals (and this floor).
STALE_INTERVALS = 10
STALE_FLOOR_SECONDS = 60.0
MAX_MESSAGE = 32768


@dataclass(frozen=True)
class Problem:
    reason: str  # CamelCase, as Kubernetes condition reasons are
    message: str  # the database's message when there is one
    retryable: bool  # True: try again later on its own; False: wait for a spec change


@dataclass(frozen=True)
class Observation:
    """What the engine says about one stream table."""

    table: pgtrickle.StreamTable
    status: pgtrickle.Status | None
    last_error: str | None


@dataclass
class Outcome:
    managed: bool  # the stream table is ours: created or adopted by this resource
    suspended_by_operator: bool = False
    actions: list[str] = field(default_factory=list)  # what was done, one Kubernetes Event each
    problem: Problem | None = None
    observation: Observation | None = None
    gave_up: Problem | None = None  # released despite this problem (one Warning Event)


# -- errors ---------------------------------------------------------------------------------------------


# SQLSTATEs (and classes) that mean "the server cannot be reached or is not serving right now":
# connection exceptions (08), cannot_connect_now / admin or crash shutdown (57P01-57P03), too many
# connections (53300). psycopg.OperationalError also covers statement timeouts, lock timeouts and
# pg_trickle's "object not in prerequisite state" refusals (classes 55, 57014), which are not outages.
_UNAVAILABLE_STATES = ("57P01", "57P02", "57P03", "53300")
DATABASE_MISSING = "3D000"  # invalid_catalog_name: the database named by spec.database does not exist


def unavailable(exc: BaseException) -> bool:
    """True when `exc` says the database server cannot be reached (nothing was done)."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = getattr(exc, "sqlstate", None)
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


def classify(exc: BaseException, role: str | None = None) -> Problem:
    """A database error as a condition: dependencies not yet created, an unreachable database and a
    timeout are retried; anything else (a bad query, an invalid schedule, a refused change) waits for a
    spec change. `role`: the database role the operator acted as (named in a permission problem)."""
    if unavailable(exc):
        return Problem("DatabaseUnavailable", first_line(exc), retryable=True)
    if getattr(exc, "sqlstate", None) == DATABASE_MISSING:
        return Problem("DatabaseMissing", first_line(exc), retryable=True)
    if isinstance(exc, pgerrors.QueryCanceled | pgerrors.LockNotAvailable):
        return Problem("Timeout", _message(exc), retryable=True)
    if isinstance(exc, pgerrors.UndefinedTable):
        return Problem("DependencyMissing", f"{_message(exc)} (retrying until it exists)", retryable=True)
    if isinstance(exc, pgerrors.DependentObjectsStillExist) or _dependents_refusal(exc):
        return Problem("DependentsExist", _message(exc), retryable=True)
    if isinstance(exc, pgerrors.InsufficientPrivilege):
        message = _message(exc) if role is None else f"role {role}: {_message(exc)}"
        if "pgtrickle_changes" in message:
            # create_stream_table creates the source's change buffer there as the calling role (pg_trickle 0.67,
            # src/api/helpers.rs setup_cdc_for_source); the bootstrap grants it to the owner role.
            message += " (creating a stream table needs USAGE and CREATE on schema pgtrickle_changes)"
        return Problem("PermissionDenied", message, retryable=False)
    if isinstance(exc, psycopg.Error):
        return Problem("DatabaseError", _message(exc), retryable=False)
    return Problem("InternalError", f"{exc.__class__.__name__}: {exc}", retryable=True)


# pg_trickle 0.67 refuses to drop a stream table that others read with InvalidArgument (SQLSTATE 22023,
# src/api/alter.rs::drop_stream_table_impl_inner: "... has dependent stream tables: ..."); 22023 also means a
# bad schedule or mode, which waits for a spec change, so the message tells them apart.
_INVALID_ARGUMENT = "22023"
_DEPENDENTS_MARK = "has dependent stream tables"


def _dependents_refusal(exc: BaseException) -> bool:
    return getattr(exc, "sqlstate", None) == _INVALID_ARGUMENT and _DEPENDENTS_MARK in str(exc)


def _message(exc: psycopg.Error) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return primary or first_line(exc)


# -- reads ----------------------------------------------------------------------------------------------


StatusLookup = Callable[[psycopg.Connection, pgtrickle.StreamTable], "pgtrickle.Status | None"]


def _status_of(conn: psycopg.Connection, table: pgtrickle.StreamTable) -> pgtrickle.Status | None:
    return pgtrickle.status_of(conn, table.qualified_name)


def observe(conn: psycopg.Connection, name: str, status_lookup: StatusLookup = _status_of) -> Observation | None:
    table = pgtrickle.find_stream_table(conn, name)
    if table is None:
        return None
    failure = None
    if table.status in ("ERROR", "SUSPENDED") or table.consecutive_errors > 0:
        failure = pgtrickle.failure_reason(conn, table)
    return Observation(table, status_lookup(conn, table), failure)


class StatusSnapshots:
    """pgtrickle.pgt_status() reports every stream table of a database, so one call per resource per sync
    interval would cost O(resources^2). The status timers share one snapshot per database, taken at most
    once per `max_age` seconds; a row's staleness is advanced by the snapshot's age. A table created,
    replaced or refreshed since the snapshot (another data timestamp) is looked up on its own."""

    def __init__(self, max_age: float):
        self.max_age = max_age
        self.calls = 0  # pgt_status() calls made, all databases (shown in debug logs and tests)
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}
        self._taken: dict[str, tuple[float, dict[str, pgtrickle.Status]]] = {}

    def lookup(self, key: str, conn: psycopg.Connection, table: pgtrickle.StreamTable) -> pgtrickle.Status | None:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # one snapshot per database at a time: timers firing together share it
            taken = self._taken.get(key)
            if taken is None or time.monotonic() - taken[0] > self.max_age:
                rows = {row.name: row for row in pgtrickle.status(conn)}
                self.calls += 1
                taken = self._taken[key] = (time.monotonic(), rows)
        row = taken[1].get(table.qualified_name)
        if row is None or row.data_timestamp != table.data_timestamp:
            return _status_of(conn, table)
        if row.staleness is None:
            return row
        return replace(row, staleness=row.staleness + timedelta(seconds=time.monotonic() - taken[0]))


def definition_matches(spec: StreamTableSpec, table: pgtrickle.StreamTable) -> bool:
    """Adoption rule: the same query (up to whitespace), and the same refresh mode unless AUTO is asked."""
    if not same_query(spec.query, table.user_query):
        return False
    return spec.refresh_mode == "AUTO" or spec.refresh_mode == table.refresh_mode


# -- writes ---------------------------------------------------------------------------------------------


def _lock(conn: psycopg.Connection, name: str) -> None:
    """Serialises reconciliations of one name (handlers, timers, a second operator) for this transaction: a
    row lock in demo_meta.operator_locks (sql/common/meta.sql), which only the owner role may take; an
    advisory key could be held by any role, the read-only ones included."""
    conn.execute("INSERT INTO demo_meta.operator_locks (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (name,))
    conn.execute("SELECT 1 FROM demo_meta.operator_locks WHERE name = %s FOR UPDATE", (name,))


def _create(conn: psycopg.Connection, spec: StreamTableSpec) -> None:
    pgtrickle.create_stream_table(
        conn, spec.name, spec.query, schedule=spec.schedule, refresh_mode=spec.refresh_mode, initialize=True
    )


def apply(
    conn: psycopg.Connection,
    spec: StreamTableSpec,
    *,
    managed: bool,
    suspended_by_operator: bool = False,
    claimed_by: Callable[[str], str | None] = lambda qualified_name: None,
) -> Outcome:
    """Brings the stream table in line with `spec`, in one transaction (all or nothing).

    `managed`: this resource created or adopted the stream table before (from its status);
    `suspended_by_operator`: the operator suspended it because of spec.suspend (so it may resume it);
    `claimed_by`: the other resource that already manages a stream table of that name, if any (it is
    never adopted a second time: deleting either resource would drop it under the other).
    """
    outcome = Outcome(managed=managed, suspended_by_operator=suspended_by_operator)
    try:
        with conn.transaction():
            _lock(conn, spec.name)
            _apply(conn, spec, outcome, claimed_by)
    except Exception as exc:
        outcome.problem = classify(exc, conn.info.user)
        failed = Outcome(managed=managed, suspended_by_operator=suspended_by_operator, problem=outcome.problem)
        outcome = failed  # the transaction rolled back: nothing that was planned happened
    return _observe_into(conn, spec, outcome)


def _apply(
    conn: psycopg.Connection, spec: StreamTableSpec, out: Outcome, claimed_by: Callable[[str], str | None]
) -> None:
    existing = pgtrickle.find_stream_table(conn, spec.name)
    if existing is None:
        _create(conn, spec)
        out.actions.append(f"created stream table {spec.name} ({spec.refresh_mode}, schedule {spec.schedule})")
        out.managed = True
        out.suspended_by_operator = False
        _apply_suspend(conn, spec, out, pgtrickle.find_stream_table(conn, spec.name))
        return

    if not out.managed:
        owner = claimed_by(existing.qualified_name)
        if owner is not None:
            out.problem = Problem(
                "NameConflict",
                f"stream table {existing.qualified_name} is already managed by StreamTable {owner}; not adopted",
                retryable=False,
            )
            return
        if not definition_matches(spec, existing):
            out.problem = Problem(
                "NameConflict",
                f"stream table {existing.qualified_name} already exists with a different definition "
                f"({existing.refresh_mode}: {' '.join(existing.user_query.split())[:200]}); not adopted",
                retryable=False,
            )
            return
        out.managed = True
        out.actions.append(f"adopted existing stream table {existing.qualified_name} (same definition)")

    if not same_query(spec.query, existing.user_query):
        if pgtrickle.has_dependents(conn, existing.pgt_id):
            pgtrickle.alter_stream_table(conn, spec.name, query=spec.query)
            out.actions.append(f"altered the query of {existing.qualified_name} in place (other stream tables read it)")
        else:
            pgtrickle.drop_stream_table(conn, spec.name)
            _create(conn, spec)
            out.actions.append(f"replaced {existing.qualified_name}: the query changed")
            out.suspended_by_operator = False
            _apply_suspend(conn, spec, out, pgtrickle.find_stream_table(conn, spec.name))
            return
        existing = pgtrickle.find_stream_table(conn, spec.name) or existing

    changes: dict[str, str] = {}
    if spec.refresh_mode != "AUTO" and spec.refresh_mode != existing.refresh_mode:
        changes["refresh_mode"] = spec.refresh_mode
    if spec.refresh_mode != "IMMEDIATE" and spec.schedule_key != schedule_key(existing.schedule):
        changes["schedule"] = spec.schedule
    if changes:
        pgtrickle.alter_stream_table(conn, spec.name, **changes)
        before = {"refresh_mode": existing.refresh_mode, "schedule": existing.schedule_label}
        detail = ", ".join(f"{key} {before[key]} -> {value}" for key, value in changes.items())
        out.actions.append(f"altered {existing.qualified_name}: {detail}")
    _apply_suspend(conn, spec, out, existing)


def _apply_suspend(
    conn: psycopg.Connection, spec: StreamTableSpec, out: Outcome, table: pgtrickle.StreamTable | None
) -> None:
    if table is None:
        return
    if spec.suspend and table.status != "SUSPENDED":
        pgtrickle.alter_stream_table(conn, spec.name, status="SUSPENDED")
        out.actions.append(f"suspended {table.qualified_name} (spec.suspend)")
        out.suspended_by_operator = True
    elif spec.suspend:
        pass  # already SUSPENDED (by us earlier, or by the engine): nothing to do
    elif out.suspended_by_operator and table.status == "SUSPENDED":
        pgtrickle.resume_stream_table(conn, spec.name)
        out.actions.append(f"resumed {table.qualified_name}")
        out.suspended_by_operator = False
    elif table.status != "SUSPENDED":
        out.suspended_by_operator = False


def _observe_into(
    conn: psycopg.Connection, spec: StreamTableSpec, outcome: Outcome, status_lookup: StatusLookup = _status_of
) -> Outcome:
    try:
        with conn.transaction():
            outcome.observation = observe(conn, spec.name, status_lookup)
    except Exception as exc:
        if outcome.problem is None:
            outcome.problem = classify(exc)
    return outcome


def sync(
    conn: psycopg.Connection,
    spec: StreamTableSpec,
    *,
    managed: bool,
    suspended_by_operator: bool,
    recreate: bool = True,
    status_lookup: StatusLookup = _status_of,
) -> Outcome:
    """The periodic check: reads the engine's status; re-creates a managed stream table that vanished
    (unless `recreate` is False: the last spec change has not been applied, its handler owns the table)."""
    outcome = _observe_into(
        conn, spec, Outcome(managed=managed, suspended_by_operator=suspended_by_operator), status_lookup
    )
    if not (recreate and managed and outcome.problem is None):
        return outcome
    if outcome.observation is None:
        outcome = apply(conn, spec, managed=managed, suspended_by_operator=suspended_by_operator)
        outcome.actions = [f"{action} (it had disappeared)" for action in outcome.actions]
    elif drift(spec, outcome.observation.table):
        # changed behind the operator's back (alter_stream_table by hand): the spec is the source of truth
        outcome = apply(conn, spec, managed=managed, suspended_by_operator=suspended_by_operator)
        outcome.actions = [f"{action} (it had been changed outside the operator)" for action in outcome.actions]
    return outcome


def drift(spec: StreamTableSpec, table: pgtrickle.StreamTable) -> list[str]:
    """How a managed stream table differs from its spec (what `apply` would change); [] when it does not."""
    found = []
    if not same_query(spec.query, table.user_query):
        found.append("query")
    if spec.refresh_mode != "AUTO" and spec.refresh_mode != table.refresh_mode:
        found.append("refresh_mode")
    if spec.refresh_mode != "IMMEDIATE" and spec.schedule_key != schedule_key(table.schedule):
        found.append("schedule")
    if spec.suspend and table.status != "SUSPENDED":
        found.append("status")
    return found


def remove(conn: psycopg.Connection | None, spec: StreamTableSpec, *, managed: bool) -> Outcome:
    """The finalizer's work: drop the stream table (deletionPolicy Delete) or leave it (Retain).
    Retain, and a table this resource does not manage, need no connection (`conn` may be None)."""
    outcome = Outcome(managed=managed)
    if spec.deletion_policy == "Retain":
        outcome.actions.append(f"retained stream table {spec.name} (deletionPolicy Retain)")
        return outcome
    if not managed:
        outcome.actions.append(f"left stream table {spec.name} alone: this resource never created or adopted it")
        return outcome
    if conn is None:
        raise ValueError("dropping a stream table needs a connection")
    try:
        with conn.transaction():
            _lock(conn, spec.name)
            if pgtrickle.find_stream_table(conn, spec.name) is not None:
                pgtrickle.drop_stream_table(conn, spec.name, cascade=False)
                outcome.actions.append(f"dropped stream table {spec.name}")
    except Exception as exc:
        outcome.problem = classify(exc, conn.info.user)
    return outcome


# -- status -----------------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str | None:
    if seconds is None or math.isnan(seconds):
        return None
    seconds = max(seconds, 0.0)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if hours < 48 else f"{hours // 24}d{hours % 24}h"


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def conditions(spec: StreamTableSpec, outcome: Outcome, now: datetime) -> list[dict[str, str]]:
    """Ready / Degraded / Stale, each with status, reason and message (lastTransitionTime added later)."""
    obs, problem = outcome.observation, outcome.problem
    table = obs.table if obs else None

    if problem is not None:
        ready = ("False", problem.reason, problem.message)
    elif table is None:
        ready = ("False", "NotFound", f"stream table {spec.name} does not exist")
    elif table.status == "ACTIVE":
        ready = ("True", "Active", f"{table.qualified_name} is ACTIVE ({table.refresh_mode}, {table.schedule_label})")
    elif table.status == "SUSPENDED" and spec.suspend:
        ready = ("False", "Suspended", f"{table.qualified_name} is suspended (spec.suspend is true)")
    elif table.status == "INITIALIZING":
        ready = ("False", "Initializing", f"{table.qualified_name} is initializing")
    else:
        ready = ("False", f"Engine{table.status.title()}", f"{table.qualified_name} is {table.status}")

    if problem is not None:
        degraded = ("True", problem.reason, problem.message)
    elif table is not None and (table.status == "ERROR" or (table.status == "SUSPENDED" and not spec.suspend)):
        detail = obs.last_error or f"{table.consecutive_errors} consecutive refresh errors"
        degraded = ("True", f"Engine{table.status.title()}", f"{table.qualified_name} is {table.status}: {detail}")
    elif table is not None and table.consecutive_errors > 0:
        detail = obs.last_error or "refresh failed"
        degraded = ("True", "RefreshFailing", f"{table.consecutive_errors} consecutive refresh errors: {detail}")
    else:
        degraded = ("False", "AsExpected", "no errors")

    stale = _stale(table, now)
    return [
        {"type": kind, "status": status, "reason": reason, "message": message}
        for kind, (status, reason, message) in ((READY, ready), (DEGRADED, degraded), (STALE, stale))
    ]


def _stale(table: pgtrickle.StreamTable | None, now: datetime) -> tuple[str, str, str]:
    if table is None or table.status != "ACTIVE":
        return ("Unknown", "NotActive", "freshness is only judged while the stream table is ACTIVE")
    if table.refresh_mode == "IMMEDIATE":
        return ("False", "Immediate", "maintained in the writing transaction")
    if table.schedule is not None and schedule_seconds(table.schedule) is None:
        return ("Unknown", "CronSchedule", f"cron schedule {table.schedule!r}: no fixed interval to judge by")
    interval = schedule_seconds(table.schedule) or 1.0  # calculated: at least every second upstream changes
    limit = max(STALE_INTERVALS * interval, STALE_FLOOR_SECONDS)
    if table.last_refresh_at is None:
        return ("True", "NeverRefreshed", "no refresh has completed yet")
    age = (now - table.last_refresh_at).total_seconds()
    if age > limit:
        return ("True", "RefreshOverdue", f"last refresh {format_duration(age)} ago, expected within {limit:g}s")
    return ("False", "Fresh", f"last refresh {format_duration(age)} ago")


def merge_conditions(
    new: Iterable[Mapping[str, str]],
    previous: Iterable[Mapping[str, Any]] | None,
    generation: int | None,
    now: datetime,
) -> list[dict[str, Any]]:
    """Keeps lastTransitionTime when a condition's status did not change (Kubernetes convention)."""
    before = {c.get("type"): c for c in previous or ()}
    stamp = now.isoformat().replace("+00:00", "Z")
    merged = []
    for condition in new:
        old = before.get(condition["type"])
        unchanged = old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime")
        merged.append(
            {
                **condition,
                "message": condition["message"][:MAX_MESSAGE],  # the CRD's maxLength, as metav1.Condition
                "lastTransitionTime": old["lastTransitionTime"] if unchanged else stamp,
                **({"observedGeneration": generation} if generation is not None else {}),
            }
        )
    return merged


def build_status(
    spec: StreamTableSpec,
    outcome: Outcome,
    *,
    database: str,
    generation: int | None,
    previous: Mapping[str, Any] | None,
    now: datetime,
) -> dict[str, Any]:
    """The resource's .status (what `kubectl get st` and `kubectl describe` show)."""
    obs = outcome.observation
    table = obs.table if obs else None
    staleness = _seconds(obs.status.staleness) if obs and obs.status else None
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "database": database,
        "sqlName": table.qualified_name if table else spec.name,
        "managed": outcome.managed,
        "suspendedByOperator": outcome.suspended_by_operator,
        "engineStatus": table.status if table else "Absent",
        "effectiveRefreshMode": table.refresh_mode if table else None,
        "schedule": table.schedule_label if table else None,
        "isPopulated": table.is_populated if table else None,
        "consecutiveErrors": table.consecutive_errors if table else None,
        "lastRefresh": _iso(table.last_refresh_at) if table else None,
        "dataTimestamp": _iso(table.data_timestamp) if table else None,
        "staleness": format_duration(staleness),
        "stalenessSeconds": None if staleness is None else round(staleness, 3),
        "conditions": merge_conditions(
            conditions(spec, outcome, now), (previous or {}).get("conditions"), generation, now
        ),
    }
    return status


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")
