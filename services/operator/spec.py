"""The StreamTable custom resource: its API coordinates and its spec, validated and normalised.

The CRD (helm/pg-trickle-demo/files/crds/streamtables.pgtrickle.io.yaml) validates the same rules at admission;
these checks keep the operator safe when it is handed something the API server did not validate.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

GROUP = "pgtrickle.io"
VERSION = "v1alpha1"
PLURAL = "streamtables"
KIND = "StreamTable"
FINALIZER = "pgtrickle.io/finalizer"

REFRESH_MODES = ("AUTO", "FULL", "DIFFERENTIAL", "IMMEDIATE")
DELETION_POLICIES = ("Delete", "Retain")
DEFAULT_SCHEDULE = "calculated"

# An unquoted SQL name, optionally schema-qualified (what pg_trickle's name argument resolves as written).
NAME_PATTERN = r"^[a-z_][a-z0-9_]{0,62}(\.[a-z_][a-z0-9_]{0,62})?$"
# pg_trickle's schedules (reference section 3): 'calculated' (any case), durations such as 1s, 5m, 1h30m,
# bare seconds, or cron ('@hourly' or 5-6 space-separated fields).
SCHEDULE_PATTERN = r"^([Cc][Aa][Ll][Cc][Uu][Ll][Aa][Tt][Ee][Dd]|([0-9]+[smhdw])+|[0-9]+|@[a-z]+|[^ ]+( [^ ]+){4,5})$"
_DURATION = re.compile(r"([0-9]+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class SpecError(ValueError):
    """The resource's spec cannot be applied as written (shown in the Degraded condition)."""


@dataclass(frozen=True)
class StreamTableSpec:
    name: str  # SQL name, as pg_trickle receives it
    query: str
    schedule: str
    refresh_mode: str
    database: str | None  # None = the scenario database
    suspend: bool
    deletion_policy: str

    @property
    def schedule_key(self) -> str | None:
        """The schedule as the catalog stores it, comparable: None = calculated (and IMMEDIATE)."""
        if self.refresh_mode == "IMMEDIATE":
            return None
        return schedule_key(self.schedule)


def default_sql_name(resource_name: str) -> str:
    """metadata.name as a SQL name: Kubernetes names may contain '-' (and '.'), SQL names get '_'."""
    return re.sub(r"[^a-z0-9_]", "_", resource_name.lower())


def schedule_key(schedule: str | None) -> str | None:
    """Normalises a schedule for comparison: calculated -> None, durations -> total seconds ('90s'),
    cron -> its text with single spaces."""
    if schedule is None:
        return None
    text = schedule.strip()
    if text.lower() == "calculated":
        return None
    if text.isdigit():
        return f"{int(text)}s"
    if re.fullmatch(r"([0-9]+[smhdw])+", text):
        return f"{sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION.findall(text))}s"
    return " ".join(text.split())


def schedule_seconds(schedule: str | None) -> float | None:
    """Seconds of a duration schedule; None for calculated and cron."""
    key = schedule_key(schedule)
    if key is None or not re.fullmatch(r"[0-9]+s", key):
        return None
    return float(key[:-1])


def parse_spec(spec: Mapping[str, Any], resource_name: str) -> StreamTableSpec:
    """Validates a StreamTable spec (what the CRD schema also enforces) and fills the defaults."""
    name = spec.get("name") or default_sql_name(resource_name)
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise SpecError(f"spec.name {name!r} is not a lower-case SQL name (optionally schema.name)")
    query = spec.get("query")
    if not isinstance(query, str) or not query.strip():
        raise SpecError("spec.query is required and must not be empty")
    schedule = spec.get("schedule") or DEFAULT_SCHEDULE
    if not isinstance(schedule, str) or not re.fullmatch(SCHEDULE_PATTERN, schedule.strip()):
        raise SpecError(f"spec.schedule {schedule!r} is not a duration (1s, 5m, 1h30m), 'calculated' or cron")
    mode = str(spec.get("refreshMode") or "AUTO").upper()
    if mode not in REFRESH_MODES:
        raise SpecError(f"spec.refreshMode {mode!r} is not one of {', '.join(REFRESH_MODES)}")
    policy = spec.get("deletionPolicy") or "Delete"
    if policy not in DELETION_POLICIES:
        raise SpecError(f"spec.deletionPolicy {policy!r} is not one of {', '.join(DELETION_POLICIES)}")
    database = spec.get("database") or None
    return StreamTableSpec(
        name=name,
        query=query.strip().rstrip(";").strip(),
        schedule=schedule.strip(),
        refresh_mode=mode,
        database=database,
        suspend=bool(spec.get("suspend", False)),
        deletion_policy=policy,
    )


def same_query(a: str, b: str) -> bool:
    """Two defining queries are the same definition when they differ only in whitespace and a final ';'."""

    def norm(text: str) -> str:
        return " ".join(text.strip().rstrip(";").split())

    return norm(a) == norm(b)
