"""Scenario knowledge of the dashboard: one module per scenario, found by name.

A module `services/dashboard/scenarios/<name>.py` (name as registered in
services.common.scenarios.SCENARIO_NAMES) defines `View`, a subclass of `ScenarioView`. Its `read(conn)`
queries the scenario's STREAM TABLES only (never the growing base tables, so the page's cost does not grow
with the event history) and returns `ScenarioData`: panels described as data (a chart and/or a table with
typed columns), header tiles and the figures kept for the history charts. The page's JavaScript renders
any panel from that description, so a new scenario needs a new module here and no shared code.

Values are JSON-ready: numbers as float/int, timestamps as ISO-8601 strings, text as str (the page
always inserts text with textContent: names such as `<img src=x onerror=...>` stay text).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from services.common.scenarios import scenario_class

# Column formats the page knows: text, int, money, number, pct (a change already in percent: signed and
# coloured), share (a part of a whole already in percent: unsigned, neutral), price,
# time (ISO timestamp), badge (a level such as HIGH/MEDIUM/LOW or OK/WARNING/BREACH), direction
# (up/down/flat), utilisation (a ratio, 1.0 = the limit, drawn as a bar).
FORMATS = ("text", "int", "money", "number", "pct", "share", "price", "time", "badge", "direction", "utilisation")


def jsonable(value: Any) -> Any:
    """JSON-ready: numeric NaN and infinities (possible in numeric and float8 columns) become None, since
    json.dumps would write NaN, which is not JSON: the page's response.json() would fail on every poll."""
    if isinstance(value, Decimal):
        return float(value) if value.is_finite() else None
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    return value


def fetch(conn: psycopg.Connection, query: str, params: tuple = ()) -> list[dict[str, Any]]:
    """Rows as dicts of JSON-ready values. `query` is a constant of the scenario module (no user input)."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)  # type: ignore[arg-type]
        return [{key: jsonable(value) for key, value in row.items()} for row in cur.fetchall()]


def column(key: str, label: str, fmt: str = "text") -> dict[str, str]:
    assert fmt in FORMATS, fmt
    return {"key": key, "label": label, "format": fmt}


def chart(kind: str, labels: list, datasets: list[dict], *, fmt: str = "number", stacked: bool = False) -> dict:
    """kind: bar (vertical), hbar (horizontal) or doughnut. A dataset: {"label", "values", "palette"?}
    where palette "risk" colours by label (HIGH red, MEDIUM amber, LOW green)."""
    assert kind in ("bar", "hbar", "doughnut"), kind
    return {"type": kind, "labels": labels, "datasets": datasets, "format": fmt, "stacked": stacked}


def panel(
    panel_id: str,
    title: str,
    sources: list[str],
    *,
    note: str | None = None,
    chart: dict | None = None,
    columns: list[dict] | None = None,
    rows: list[dict] | None = None,
    empty: str = "No rows yet",
    key: str | None = None,
    wide: bool = False,
) -> dict:
    """`key` names the column that identifies a row (default: the first column); the page highlights rows
    whose key it has not shown before."""
    table = None
    if columns is not None:
        table = {"columns": columns, "rows": rows or [], "empty": empty, "key": key or columns[0]["key"]}
    return {
        "id": panel_id,
        "title": title,
        "sources": sources,
        "note": note,
        "chart": chart,
        "table": table,
        "wide": wide,
    }


def tile(label: str, value: Any, fmt: str = "number", hint: str | None = None) -> dict:
    return {"label": label, "value": jsonable(value), "format": fmt, "hint": hint}


@dataclass
class ScenarioData:
    panels: list[dict]
    tiles: list[dict]
    # name -> number, sampled into the history charts (see ScenarioView.history_charts)
    figures: dict[str, float] = field(default_factory=dict)


class ScenarioView(ABC):
    """One per process (it may keep state between reads, e.g. the last price for tick directions)."""

    name: str
    burst_label: str = "Burst now"  # the generator control button (POST /control/burst)
    # History charts: {"id", "title", "format", "mode": "value" | "rate", and "keys": [figure names] or
    # "prefix": "figure-name-prefix:" (one series per matching figure, named after the rest of the key)}.
    # "rate" plots the change per second between samples (e.g. revenue per second: flash sales spike).
    history_charts: list[dict] = []
    # Stream-table name -> what it demonstrates, shown under its DAG node (as pg_trickle's own demo does).
    captions: dict[str, str] = {}

    @abstractmethod
    def read(self, conn: psycopg.Connection) -> ScenarioData:
        """Reads the scenario's stream tables (and nothing else)."""


def load_view(name: str) -> ScenarioView:
    """The dashboard view of scenario `name`, found by module name."""
    return scenario_class(__name__, name, "View", ScenarioView)()
