"""What the page shows about the engine, read through services.common.pgtrickle (the only module that
reads pgtrickle.*): the version, the DAG with a layered layout, and the internals (status, refresh feed,
refresh efficiency, the Refresh Mode Advisor, health checks)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable

import psycopg

from services.common import pgtrickle
from services.common.db import first_line
from services.dashboard.scenarios import jsonable

log = logging.getLogger(__name__)

EMULATOR_LABEL = "emulator: full recomputation, differential figures not measured"


def engine(conn: psycopg.Connection) -> dict:
    version = pgtrickle.version(conn)
    name = pgtrickle.engine_of(version)
    label = EMULATOR_LABEL if name == pgtrickle.ENGINE_EMULATOR else f"pg_trickle {version}"
    return {"name": name, "version": version, "label": label}


def _short(schema: str, name: str) -> str:
    return name if schema == "public" else f"{schema}.{name}"


def layered_layout(nodes: dict[str, dict], edges: list[tuple[str, str]]) -> None:
    """Sets node["layer"] (sources 0, a stream table one more than its deepest input) and node["order"]
    (position in its layer, by the barycenter heuristic so that edges cross little)."""
    parents: dict[str, list[str]] = defaultdict(list)
    children: dict[str, list[str]] = defaultdict(list)
    for source, target in edges:
        parents[target].append(source)
        children[source].append(target)

    def layer_of(node_id: str, seen: frozenset = frozenset()) -> int:
        node = nodes[node_id]
        if "layer" not in node:
            inputs = [p for p in parents[node_id] if p in nodes and p not in seen]
            node["layer"] = 1 + max((layer_of(p, seen | {node_id}) for p in inputs), default=-1)
        return node["layer"]

    for node_id in nodes:
        layer_of(node_id)
    layers: dict[int, list[str]] = defaultdict(list)
    for node_id in sorted(nodes, key=lambda n: (nodes[n]["kind"] != "source", n)):
        layers[nodes[node_id]["layer"]].append(node_id)
    position = {node_id: i for members in layers.values() for i, node_id in enumerate(members)}

    def reorder(layer: int, neighbours: dict[str, list[str]]) -> None:
        def barycenter(node_id: str) -> float:
            linked = [position[n] for n in neighbours[node_id] if n in position]
            return sum(linked) / len(linked) if linked else position[node_id]

        layers[layer].sort(key=lambda n: (barycenter(n), n))
        position.update({node_id: i for i, node_id in enumerate(layers[layer])})

    depth = max(layers, default=0)
    for _ in range(2):  # a few sweeps down and up are plenty for DAGs of this size
        for layer in range(1, depth + 1):
            reorder(layer, parents)
        for layer in range(depth - 1, -1, -1):
            reorder(layer, children)
    for node_id, i in position.items():
        nodes[node_id]["order"] = i


def dag(conn: psycopg.Connection) -> dict:
    tables = pgtrickle.stream_tables(conn)
    staleness = {row.name: row.staleness for row in pgtrickle.status(conn)}
    nodes: dict[str, dict] = {}
    for st in tables:
        nodes[st.qualified_name] = {
            "id": st.qualified_name,
            "name": _short(st.pgt_schema, st.pgt_name),
            "kind": "stream_table",
            "status": st.status,
            "mode": st.refresh_mode,
            "schedule": st.schedule_label,
            "is_populated": st.is_populated,
            "consecutive_errors": st.consecutive_errors,
            "data_timestamp": jsonable(st.data_timestamp),
            "last_refresh_at": jsonable(st.last_refresh_at),
            "staleness_s": jsonable(staleness.get(st.qualified_name)),
        }
    edges = []
    for dep in pgtrickle.dependencies(conn):
        if dep.source not in nodes:
            nodes[dep.source] = {"id": dep.source, "name": _short(dep.source_schema, dep.source_name), "kind": "source"}
        edges.append((dep.source, f"{dep.pgt_schema}.{dep.pgt_name}"))
    layered_layout(nodes, edges)
    return {
        "nodes": sorted(nodes.values(), key=lambda n: (n["layer"], n["order"])),
        "edges": [{"from": a, "to": b} for a, b in edges],
        "layers": 1 + max((n["layer"] for n in nodes.values()), default=-1),
    }


def keeps(rec: pgtrickle.Recommendation) -> bool:
    """True when the Advisor recommends no change of the configured mode (KEEP, or the configured mode itself,
    which pg_trickle repeats after a NO_DATA refresh: Recommendation.switch_to)."""
    return rec.switch_to is None


def verdict(rec: pgtrickle.Recommendation) -> str:
    """The Advisor's answer in the seed dashboard's words: "✓ KEEP <current mode>" or "→ SWITCH TO <mode>"."""
    if keeps(rec):
        return f"\u2713 KEEP {rec.current_mode}"
    return f"\u2192 SWITCH TO {rec.recommended_mode}"


def live_internals(conn: psycopg.Connection, refresh_limit: int = 20) -> dict:
    """What changes every refresh and is cheap to read: pgt_status() and the newest refreshes."""
    return {
        "status": [
            {
                "name": row.name,
                "status": row.status,
                "mode": row.refresh_mode,
                "schedule": row.schedule or "calculated",
                "is_populated": row.is_populated,
                "consecutive_errors": row.consecutive_errors,
                "staleness_s": jsonable(row.staleness),
            }
            for row in pgtrickle.status(conn)
        ],
        # Error messages of failed refreshes stay in pgtrickle.pgt_refresh_history: the page shows FAILED.
        "refreshes": [
            {
                "id": ev.refresh_id,
                "name": _short(ev.pgt_schema, ev.pgt_name),
                "action": ev.action,
                "status": ev.status,
                "start_time": jsonable(ev.start_time),
                "duration_ms": None if ev.duration_seconds is None else round(ev.duration_seconds * 1000, 2),
                "rows_inserted": ev.rows_inserted,
                "rows_deleted": ev.rows_deleted,
                "initiated_by": ev.initiated_by,
                "was_full_fallback": ev.was_full_fallback,
            }
            for ev in pgtrickle.recent_refreshes(conn, refresh_limit)
        ],
    }


# The slow internals are the engine's own analyses: one that fails (a missing privilege, a statement
# timeout, a function the engine lacks) empties its panel only, which says in words what could not be read.
SLOW_PANELS = {
    "efficiency": "refresh efficiency (pgtrickle.refresh_efficiency())",
    "advisor": "the Refresh Mode Advisor (pgtrickle.recommend_refresh_mode())",
    "health": "the health checks (pgtrickle.health_check())",
}


def unreadable(what: str, exc: psycopg.Error) -> str:
    """Why a panel is empty, in words (never the database's own message, which may name internals)."""
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        cause = "the dashboard's database role lacks a privilege it needs (permission denied)"
    elif isinstance(exc, psycopg.errors.QueryCanceled):
        cause = "it took longer than the statement timeout"
    else:
        cause = f"the database reported an error (SQLSTATE {exc.sqlstate or 'unknown'})"
    return f"Could not read {what}: {cause}. The rest of the page is live."


def isolated(
    conn: psycopg.Connection, panel: str, read: Callable[[psycopg.Connection], list]
) -> tuple[list, str | None]:
    """Runs one panel's read in a savepoint: its failure rolls back that read only. A broken connection is
    not the panel's fault and is raised (the snapshot then answers 503)."""
    try:
        with conn.transaction():
            return read(conn), None
    except psycopg.Error as exc:
        if conn.broken or conn.closed:
            raise
        log.warning(
            "internals panel unavailable",
            extra={"fields": {"panel": panel, "sqlstate": exc.sqlstate, "error": first_line(exc)}},
        )
        return [], unreadable(SLOW_PANELS[panel], exc)


def _efficiency(conn: psycopg.Connection) -> list:
    return [
        {
            "name": _short(e.pgt_schema, e.pgt_name),
            "mode": e.refresh_mode,
            "total_refreshes": e.total_refreshes,
            "diff_count": e.diff_count,
            "full_count": e.full_count,
            # pg_trickle averages history durations it writes as 0 (one now()): 0 is shown as unmeasured.
            "avg_diff_ms": pgtrickle.measured_ms(e.avg_diff_ms),
            "avg_full_ms": pgtrickle.measured_ms(e.avg_full_ms),
            "avg_change_ratio": e.avg_change_ratio,
            "diff_speedup": e.diff_speedup,
        }
        for e in pgtrickle.refresh_efficiency(conn)
    ]


def _advisor(conn: psycopg.Connection) -> list:
    return [
        {
            "name": _short(r.pgt_schema, r.pgt_name),
            "current_mode": r.current_mode,
            "effective_mode": r.effective_mode,
            "recommended_mode": r.recommended_mode,
            "verdict": verdict(r),
            "keep": keeps(r),
            "confidence": r.confidence,
            "reason": r.reason,
        }
        for r in pgtrickle.recommend_refresh_mode(conn)
    ]


def _health(conn: psycopg.Connection) -> list:
    return [{"check": h.check_name, "severity": h.severity, "detail": h.detail} for h in pgtrickle.health_check(conn)]


def slow_internals(conn: psycopg.Connection) -> dict:
    """Aggregates over the refresh history (efficiency, the Advisor) and health checks: they move slowly.
    `unavailable` maps each panel that could not be read to a sentence saying so."""
    result: dict = {"unavailable": {}}
    for panel, read in (("efficiency", _efficiency), ("advisor", _advisor), ("health", _health)):
        rows, problem = isolated(conn, panel, read)
        result[panel] = rows
        if problem:
            result["unavailable"][panel] = problem
    return result
