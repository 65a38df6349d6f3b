"""Helpers shared by the test suites (not fixtures: those live in conftest.py)."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EMULATOR_SQL = ROOT / "sql" / "emulator" / "pgtrickle_emulator.sql"
OUTPUT_DIR = ROOT / "test-output"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def missing_prerequisite(reason: str) -> None:
    """Skips the test locally; fails it under CI=true, where every prerequisite must be installed."""
    if in_ci():
        pytest.fail(f"prerequisite missing under CI: {reason}")
    pytest.skip(reason)


def require_tool(executable: str, hint: str) -> str:
    path = shutil.which(executable)
    if path is None:
        missing_prerequisite(f"{executable} not found ({hint})")
    return path


def load_emulator(conn) -> None:
    """Installs the pg_trickle emulator into the database `conn` is connected to."""
    conn.execute(EMULATOR_SQL.read_text())


# Passwords the test suite gives the demo roles (test servers only; never used in manifests).
TEST_PASSWORDS = {
    "DEMO_PASSWORD": "owner-test-pw",
    "DEMO_WRITER_PASSWORD": "writer-test-pw",
    "DEMO_READER_PASSWORD": "reader-test-pw",
}


# -- stream tables vs their defining queries (any scenario) ------------------------------------------------
_CREATE_STREAM_TABLE = re.compile(
    r"create_stream_table_if_not_exists\(\s*name\s*=>\s*'(?P<name>\w+)',\s*query\s*=>\s*\$\$(?P<query>.*?)\$\$,"
    r"\s*schedule\s*=>\s*'(?P<schedule>[^']+)',\s*refresh_mode\s*=>\s*'(?P<mode>\w+)'\s*\)",
    re.DOTALL,
)


def scenario_defining_queries(scenario: str) -> dict[str, dict[str, str]]:
    """name -> {query, schedule, mode}, in file order, parsed from sql/<scenario>/stream_tables.sql (the
    queries as written: the real engine stores TopK queries without their ORDER BY ... LIMIT)."""
    text = (ROOT / "sql" / scenario / "stream_tables.sql").read_text()
    return {
        m["name"]: {"query": m["query"], "schedule": m["schedule"], "mode": m["mode"]}
        for m in _CREATE_STREAM_TABLE.finditer(text)
    }


def _stored_and_fresh(conn, name: str, query: str, exact_text: bool):
    from psycopg import sql

    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(sql.SQL(query)))
        names = [col.name for col in cur.description]
    columns = sql.SQL(", ").join(sql.Identifier(n) for n in names)
    if exact_text:  # each row as its text form: 1.5 and 1.50 differ, as do 0 and 0.00
        stored = sql.SQL("SELECT ROW({})::text AS r FROM {}").format(columns, sql.Identifier(name))
        fresh = sql.SQL("SELECT ROW({})::text AS r FROM ({}) AS q").format(
            sql.SQL(", ").join(sql.SQL("q.{}").format(sql.Identifier(n)) for n in names), sql.SQL(query)
        )
    else:
        stored = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(name))
        fresh = sql.SQL("SELECT * FROM ({}) AS q").format(sql.SQL(query))
    return stored, fresh


def stream_table_differences(conn, name: str, query: str, *, exact_text: bool = False) -> tuple[int, int, int]:
    """(rows stored, stored rows the query does not produce, produced rows not stored), as multisets over
    the query's own columns (the engine adds bookkeeping columns such as __pgt_row_id). Rows compare with
    their types' equality, or with exact_text by their text form (stricter: numeric scales must match)."""
    from psycopg import sql

    stored, fresh = _stored_and_fresh(conn, name, query, exact_text)
    (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
    (extra,) = conn.execute(sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) AS d").format(stored, fresh)).fetchone()
    (missing,) = conn.execute(sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) AS d").format(fresh, stored)).fetchone()
    return rows, extra, missing


def stream_table_difference_samples(conn, name: str, query: str, limit: int = 5) -> tuple[list[str], list[str]]:
    """Up to `limit` rows (text form) stored but not produced by the query, and produced but not stored:
    for failure messages."""
    from psycopg import sql

    stored, fresh = _stored_and_fresh(conn, name, query, True)
    pick = "SELECT r FROM ({} EXCEPT ALL {}) AS d ORDER BY r LIMIT {}"
    extra = [r for (r,) in conn.execute(sql.SQL(pick).format(stored, fresh, sql.Literal(limit)))]
    missing = [r for (r,) in conn.execute(sql.SQL(pick).format(fresh, stored, sql.Literal(limit)))]
    return extra, missing
