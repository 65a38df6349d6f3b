"""The story the Overview tells, added to each snapshot (read through services.common.pgtrickle):

- the refresh cascade: every finished refresh of the last minute, one row per stream table in DAG order, so
  a burst or a price tick is seen travelling level by level down the DAG (each mark: action, rows changed);
- the DAG annotated with the scenario's level names (L1 … L10, showcase) and what each table demonstrates;
- pgtrickle.dependency_tree() as the engine prints it.
"""

from __future__ import annotations

import logging

import psycopg

from services.common import pgtrickle
from services.common.db import first_line
from services.common.scenarios import Scenario

log = logging.getLogger(__name__)

CASCADE_WINDOW_S = 60.0
CASCADE_LIMIT = 2000  # marks per snapshot at most (the newest): 60 s x 11 tables at 1/s is 660


def annotate_dag(dag: dict, scenario: Scenario, captions: dict[str, str]) -> None:
    """Adds `level` (the scenario's layer name: L1, L2, showcase ...) and `caption` to stream-table nodes."""
    layers = {st.name: st.layer for st in scenario.stream_tables}
    for node in dag["nodes"]:
        if node["kind"] != "source":
            node["level"] = layers.get(node["name"])
            node["caption"] = captions.get(node["name"])


def cascade(conn: psycopg.Connection, dag: dict, window_s: float = CASCADE_WINDOW_S) -> dict:
    """The last `window_s` seconds of refreshes, timed by the database clock (the history's clock)."""
    now = pgtrickle.database_now(conn)
    rows = [
        {"id": n["id"], "name": n["name"], "layer": n["layer"], "level": n.get("level")}
        for n in dag["nodes"]
        if n["kind"] != "source"
    ]
    marks = [
        {
            "id": ev.refresh_id,
            "table": f"{ev.pgt_schema}.{ev.pgt_name}",
            "t": round(ev.start_time.timestamp(), 3),
            "duration_ms": None if ev.duration_seconds is None else round(ev.duration_seconds * 1000, 2),
            "action": ev.action,
            "status": ev.status,
            "inserted": ev.rows_inserted,
            "deleted": ev.rows_deleted,
        }
        for ev in pgtrickle.refreshes_since(conn, window_s, CASCADE_LIMIT)
    ]
    return {"window_s": window_s, "now": round(now.timestamp(), 3), "rows": rows, "marks": marks}


def tree(conn: psycopg.Connection) -> list[dict] | None:
    """dependency_tree() lines in the engine's order; None when the engine cannot answer (the rest of the
    snapshot is still served: a savepoint keeps the transaction usable)."""
    try:
        with conn.transaction():
            return [
                {"line": t.tree_line, "node": t.node, "type": t.node_type, "status": t.status}
                for t in pgtrickle.dependency_tree(conn)
            ]
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError):
            raise
        log.warning("dependency_tree() failed", extra={"fields": {"error": first_line(exc)}})
        return None
