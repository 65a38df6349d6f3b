"""Helpers shared by the test suites (not fixtures: those live in conftest.py)."""

from __future__ import annotations

import os
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
