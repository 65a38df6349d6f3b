"""Thin kopf handlers: parse the spec, call `reconcile`, write .status, post Events, schedule retries."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import kopf
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from services.common.db import make_pool
from services.operator import health, reconcile
from services.operator.config import APPLICATION_NAME, OperatorConfig
from services.operator.reconcile import Outcome
from services.operator.spec import FINALIZER, GROUP, PLURAL, VERSION, SpecError, StreamTableSpec, parse_spec

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_MS = 60_000  # an initial full refresh of a large query may take a while
CONNECT_WAIT_S = 5.0


class Databases:
    """One small autocommit pool per database (a StreamTable's spec.database may name another one)."""

    def __init__(self, config: OperatorConfig, *, connect_wait: float = CONNECT_WAIT_S):
        self.config = config
        self.connect_wait = connect_wait
        self._pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()

    def pool(self, database: str | None) -> ConnectionPool:
        key = database or self.config.default_database
        with self._lock:
            if key not in self._pools:

                def autocommit(conn: psycopg.Connection) -> None:
                    conn.autocommit = True

                pool = make_pool(
                    self.config.conninfo_for(database),
                    application_name=APPLICATION_NAME,
                    statement_timeout_ms=STATEMENT_TIMEOUT_MS,
                    min_size=1,
                    max_size=4,
                    configure=autocommit,
                )
                pool.open(wait=False)
                self._pools[key] = pool
            return self._pools[key]

    @contextmanager
    def connection(self, database: str | None) -> Iterator[psycopg.Connection]:
        with self.pool(database).connection(timeout=self.connect_wait) as conn:
            yield conn

    def run(
        self,
        database: str | None,
        work: Callable[[psycopg.Connection], Outcome],
        *,
        managed: bool,
        suspended_by_operator: bool = False,
    ) -> Outcome:
        """Runs `work` on a pooled connection; an unreachable database becomes a retryable problem (and
        nothing was done: `managed` and `suspended_by_operator` are returned as they were)."""
        try:
            with self.connection(database) as conn:
                return work(conn)
        except (PoolTimeout, psycopg.OperationalError) as exc:
            return Outcome(
                managed=managed,
                suspended_by_operator=suspended_by_operator,
                problem=self.diagnose(database, exc),
            )

    def diagnose(self, database: str | None, exc: BaseException) -> reconcile.Problem:
        """Why no connection could be had: the pool only says it timed out, so one direct attempt fetches
        the server's own message, and the default database tells whether spec.database exists at all."""
        if isinstance(exc, PoolTimeout):
            try:
                with psycopg.connect(
                    self.config.conninfo_for(database), connect_timeout=3, application_name=APPLICATION_NAME
                ):
                    pass
            except psycopg.Error as direct:
                exc = direct
        problem = reconcile.classify(exc)
        name = database or self.config.default_database
        if problem.reason == "DatabaseUnavailable" and name != self.config.default_database:
            try:
                with self.connection(None) as conn:
                    row = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone()
            except (PoolTimeout, psycopg.Error):
                return problem  # the server itself is unreachable
            if row is None:
                self.discard(name)  # its pool would keep reconnecting (and logging) in the background
                return reconcile.Problem("DatabaseMissing", f'database "{name}" does not exist', retryable=True)
        return problem

    def discard(self, database: str) -> None:
        with self._lock:
            pool = self._pools.pop(database, None)
        if pool is not None:
            pool.close(timeout=2)

    def close(self) -> None:
        with self._lock:
            for pool in self._pools.values():
                pool.close(timeout=2)
            self._pools.clear()


@dataclass
class Ownership:
    """What this process last decided about one resource, kept in kopf's per-resource memo.

    kopf runs a resource's timer concurrently with its change handlers, and hands each the body as last
    seen on the watch stream, which lags behind the handlers' own status patches (and the timer's patch
    lands whenever it is sent). kopf may even run a change handler again on a stale body: it waits for
    the resourceVersion of its own patch for settings.persistence.consistency_timeout (5 s) only, then
    assumes consistency (kopf/_core/reactor/processing.py). A status snapshot is therefore no authority
    on ownership: read from one that predates a handler's patch (or written back from one), `managed` and
    `suspendedByOperator` could be lost (a stream table this resource created would then be "adopted"
    again, or left behind on delete; a table the operator suspended would never be resumed). So the
    change handlers record here, under `lock`, the generation they work on and the ownership they
    decided, and skip a body older than that generation; the timer holds the same lock while it works,
    skips a tick whose snapshot is of another generation, and takes ownership from here. Only the change
    handlers write observedGeneration, managed, specApplied and suspendedByOperator (the timer writes the
    last only when it re-created a vanished table itself). After a restart (empty memo) the resource's
    status is the record, as the resume handler reads it.
    """

    lock: threading.Lock = field(default_factory=threading.Lock)
    generation: int | None = None  # the generation the change handlers last worked on (None: not yet)
    managed: bool | None = None
    suspended_by_operator: bool | None = None
    applied: bool | None = None  # the last spec change was applied without a problem

    def known(self, status: Mapping[str, Any]) -> tuple[bool, bool, bool]:
        """(managed, suspended_by_operator, applied): this record's, else the resource's status."""
        return (
            bool(status.get("managed", False)) if self.managed is None else self.managed,
            bool(status.get("suspendedByOperator", False))
            if self.suspended_by_operator is None
            else self.suspended_by_operator,
            bool(status.get("specApplied", True)) if self.applied is None else self.applied,
        )


_OWNERSHIP_LOCK = threading.Lock()


def _older(generation: Any, than: Any) -> bool:
    return isinstance(generation, int) and isinstance(than, int) and generation < than


def ownership(memo: Any) -> Ownership:
    """The resource's Ownership record (created on first use; sync handlers run in several threads)."""
    with _OWNERSHIP_LOCK:
        record = getattr(memo, "ownership", None)
        if record is None:
            record = memo.ownership = Ownership()
        return record


def make_settings() -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    # Our own finalizer and annotations; nothing under .status but ours (the CRD's schema is structural).
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    # Resources are discovered once at start-up (the chart installs the CRD first) and only the configured
    # namespace is served: no cluster-wide list/watch of namespaces or CRDs, so a namespaced Role suffices.
    settings.scanning.disabled = True
    # No Events from kopf's log lines (a retried handler would post one per retry); ours are posted
    # explicitly, a Warning once per new problem (see _report).
    settings.posting.level = logging.CRITICAL
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    return settings


def _now() -> datetime:
    return datetime.now(UTC)


def _report(body: Any, outcome: Outcome, previous: Mapping[str, Any] | None) -> None:
    """One Normal Event (and an INFO log line) per action; a Warning Event once per new problem."""
    meta = body.get("metadata", {})
    where = {"namespace": meta.get("namespace"), "resource": meta.get("name")}
    for action in outcome.actions:
        kopf.event(body, type="Normal", reason=_reason(action), message=action)
        log.info(action, extra={"fields": where})
    if outcome.gave_up is not None:
        kopf.event(body, type="Warning", reason=outcome.gave_up.reason, message=outcome.gave_up.message)
        log.warning(outcome.gave_up.message, extra={"fields": {**where, "reason": outcome.gave_up.reason}})
    problem = outcome.problem
    if problem is None:
        return
    degraded = next((c for c in (previous or {}).get("conditions", []) if c.get("type") == "Degraded"), {})
    if degraded.get("reason") != problem.reason or degraded.get("message") != problem.message:
        kopf.event(body, type="Warning", reason=problem.reason, message=problem.message)
        log.warning(
            problem.message,
            extra={"fields": {**where, "reason": problem.reason, "retry": problem.retryable}},
        )


def _reason(action: str) -> str:
    verb = action.split(" ", 1)[0]
    return {
        "created": "Created",
        "adopted": "Adopted",
        "replaced": "Replaced",
        "altered": "Altered",
        "suspended": "Suspended",
        "resumed": "Resumed",
        "dropped": "Dropped",
        "retained": "Retained",
        "left": "Retained",
        "released": "Released",
    }.get(verb, "Reconciled")


RELEASE_HINT = (
    "; the finalizer stays until this succeeds (set spec.deletionPolicy: Retain to release the resource"
    " and keep the table)"
)


def removal(
    databases: Databases, desired: StreamTableSpec, *, managed: bool, waited: float = 0.0, timeout: float = 0.0
) -> Outcome:
    """The finalizer's work. A database that no longer exists cannot hold the stream table: the resource is
    released. A server unreachable for `timeout` seconds (`waited` so far; 0 = wait forever) releases it
    too, with a Warning: the stream table is left behind, but a namespace being deleted does not hang on
    it. Any other problem keeps the finalizer, and its message says how to let go without dropping."""
    if desired.deletion_policy == "Retain" or not managed:
        return reconcile.remove(None, desired, managed=managed)  # nothing to drop: no database needed
    outcome = databases.run(
        desired.database, lambda conn: reconcile.remove(conn, desired, managed=managed), managed=managed
    )
    problem = outcome.problem
    if problem is None:
        return outcome
    if problem.reason == "DatabaseMissing":
        gone = f"released: {problem.message}, so neither does stream table {desired.name}"
        return Outcome(managed=managed, actions=[gone])
    if problem.reason == "DatabaseUnavailable" and timeout > 0 and waited >= timeout:
        message = (
            f"gave up dropping stream table {desired.name} after {waited:.0f}s (OPERATOR_DELETE_TIMEOUT): "
            f"{problem.message}; the resource is released and the stream table may remain"
        )
        return Outcome(managed=managed, gave_up=reconcile.Problem("DropAbandoned", message, retryable=False))
    outcome.problem = reconcile.Problem(problem.reason, problem.message + RELEASE_HINT, problem.retryable)
    return outcome


def build_registry(
    config: OperatorConfig, databases: Databases, *, login: Callable[..., Any] | None = None
) -> kopf.OperatorRegistry:
    """The operator's handlers. `login`: how to reach the Kubernetes API; by default kopf's own handlers (the
    pod's service account in a cluster, else the kubeconfig: services/operator/health.py, login)."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login or health.login)
    on = {"group": GROUP, "version": VERSION, "plural": PLURAL, "registry": registry}
    retry_delay = config.sync_interval
    snapshots = reconcile.StatusSnapshots(max_age=config.sync_interval)

    def database_of(desired: StreamTableSpec) -> str:
        return desired.database or config.default_database

    def invalid(body: Any, meta: Mapping, status: Mapping, patch: kopf.Patch, exc: SpecError) -> None:
        message = str(exc)
        previous = [c for c in status.get("conditions", []) if c.get("type") == "Degraded"]
        if not previous or previous[0].get("message") != message:
            kopf.event(body, type="Warning", reason="InvalidSpec", message=message)
        now = _now()
        conditions = [
            {"type": "Ready", "status": "False", "reason": "InvalidSpec", "message": message},
            {"type": "Degraded", "status": "True", "reason": "InvalidSpec", "message": message},
        ]
        patch.status["observedGeneration"] = meta.get("generation")
        patch.status["specApplied"] = False
        patch.status["conditions"] = reconcile.merge_conditions(
            conditions, status.get("conditions"), meta.get("generation"), now
        )

    def write(
        patch: kopf.Patch,
        desired: StreamTableSpec,
        outcome: Outcome,
        meta: Mapping,
        status: Mapping,
        *,
        leave: tuple[str, ...] = (),
    ) -> None:
        """Patches .status with what `outcome` says, except the keys in `leave`."""
        new = reconcile.build_status(
            desired,
            outcome,
            database=database_of(desired),
            generation=meta.get("generation"),
            previous=status,
            now=_now(),
        )
        for key, value in new.items():
            if key not in leave:
                patch.status[key] = value

    @kopf.index(**on, id="owners")
    def owners(name, status, **_):
        """(database, schema.name) -> the resources managing that stream table (one, normally)."""
        if status.get("managed") and status.get("sqlName") and status.get("database"):
            return {(status["database"], status["sqlName"]): name}
        return None

    @kopf.on.create(**on)
    @kopf.on.update(**on, field="spec")
    @kopf.on.resume(**on)
    def apply_spec(body, spec, meta, status, patch, memo, owners: kopf.Index, **_):
        """Create / alter / replace / suspend / resume so that the stream table matches the spec."""
        record = ownership(memo)
        with record.lock:
            generation = meta.get("generation")
            if _older(generation, record.generation):
                # a stale body (kopf may re-run a handler on one, see Ownership): its spec is superseded
                log.info(
                    "skipped generation %s of %s: generation %s was handled already",
                    generation,
                    meta.get("name"),
                    record.generation,
                )
                return
            record.generation = generation
            try:
                desired = parse_spec(spec, meta["name"])
            except SpecError as exc:
                record.applied = False
                invalid(body, meta, status, patch, exc)
                return
            managed, suspended_by_operator, _ = record.known(status)

            def claimed_by(qualified_name: str) -> str | None:
                others = [n for n in owners.get((database_of(desired), qualified_name), []) if n != meta["name"]]
                return others[0] if others else None

            outcome = databases.run(
                desired.database,
                lambda conn: reconcile.apply(
                    conn,
                    desired,
                    managed=managed,
                    suspended_by_operator=suspended_by_operator,
                    claimed_by=claimed_by,
                ),
                managed=managed,
                suspended_by_operator=suspended_by_operator,
            )
            record.managed = outcome.managed
            record.suspended_by_operator = outcome.suspended_by_operator
            record.applied = outcome.problem is None
        write(patch, desired, outcome, meta, status)
        # False until this generation is applied: the status timer then leaves Ready/Degraded to this handler
        patch.status["specApplied"] = outcome.problem is None
        _report(body, outcome, status)
        if outcome.problem is not None and outcome.problem.retryable:
            # kopf calls this handler again after the delay (a dependency may exist by then)
            raise kopf.TemporaryError(outcome.problem.message, delay=retry_delay)

    @kopf.timer(**on, interval=config.sync_interval, initial_delay=config.sync_interval, idle=None)
    def sync_status(body, spec, meta, status, patch, memo, **_):
        """Status from pgt_status every OPERATOR_SYNC_INTERVAL; re-creates a managed table that vanished."""
        record = ownership(memo)
        if not record.lock.acquire(blocking=False):
            return  # a change handler is at work on this resource: its status patch is the newer one
        try:
            sync_locked(body, spec, meta, status, patch, record)
        finally:
            record.lock.release()

    def sync_locked(body, spec, meta, status, patch, record: Ownership) -> None:
        generation = meta.get("generation")
        if record.generation is not None and record.generation != generation:
            return  # this snapshot is of another generation than the change handlers last worked on
        if record.generation is None and status.get("observedGeneration") != generation:
            return  # the change handlers have not finished with this generation: leave the status to them
        try:
            desired = parse_spec(spec, meta["name"])
        except SpecError:
            return
        # The last spec change failed (bad query, name conflict, missing dependency...): its handler owns
        # Ready/Degraded and the table; the timer only refreshes the engine's figures and Stale.
        managed, suspended_by_operator, applied = record.known(status)
        outcome = databases.run(
            desired.database,
            lambda conn: reconcile.sync(
                conn,
                desired,
                managed=managed,
                suspended_by_operator=suspended_by_operator,
                recreate=applied,
                status_lookup=lambda c, table: snapshots.lookup(database_of(desired), c, table),
            ),
            managed=managed,
            suspended_by_operator=suspended_by_operator,
        )
        if outcome.problem is not None and outcome.problem.reason in ("DatabaseUnavailable", "Timeout"):
            # keep the last known engine figures; only the conditions say the database is unreachable or slow
            conditions = reconcile.conditions(desired, outcome, _now())
            patch.status["conditions"] = reconcile.merge_conditions(
                conditions, status.get("conditions"), generation, _now()
            )
        else:
            # ownership is the change handlers' to write (see Ownership): this snapshot may predate theirs
            write(patch, desired, outcome, meta, status, leave=("observedGeneration", "managed", "suspendedByOperator"))
            if outcome.suspended_by_operator != suspended_by_operator:
                # re-created a vanished table (and suspended it per spec.suspend): this timer decided it
                record.suspended_by_operator = outcome.suspended_by_operator
                patch.status["suspendedByOperator"] = outcome.suspended_by_operator
            if not applied:
                kept = {
                    c.get("type"): c for c in status.get("conditions", []) if c.get("type") in ("Ready", "Degraded")
                }
                patch.status["conditions"] = [kept.get(c["type"], c) for c in patch.status["conditions"]]
        _report(body, outcome, status)

    @kopf.on.delete(**on)
    def remove(body, spec, meta, status, patch, runtime, memo, **_):
        """The finalizer: drop the stream table (deletionPolicy Delete) or keep it (Retain)."""
        try:
            desired = parse_spec(spec, meta["name"])
        except SpecError:
            return  # nothing was ever created from an invalid spec
        record = ownership(memo)
        with record.lock:
            managed, _, _ = record.known(status)
            outcome = removal(
                databases,
                desired,
                managed=managed,
                waited=runtime.total_seconds(),
                timeout=config.delete_timeout,
            )
        _report(body, outcome, status)
        if outcome.problem is not None:
            problem = outcome.problem
            conditions = [
                {"type": "Ready", "status": "False", "reason": problem.reason, "message": problem.message},
                {"type": "Degraded", "status": "True", "reason": problem.reason, "message": problem.message},
            ]
            patch.status["conditions"] = reconcile.merge_conditions(
                conditions, status.get("conditions"), meta.get("generation"), _now()
            )
            # Keep the finalizer until it can be dropped (e.g. other stream tables still read it).
            raise kopf.TemporaryError(f"{outcome.problem.reason}: {outcome.problem.message}", delay=retry_delay)

    @kopf.on.probe(id="uptime", registry=registry)
    def uptime(**_):
        return round(time.monotonic() - started, 1)

    started = time.monotonic()
    return registry
