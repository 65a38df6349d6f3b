"""Bootstrap against a real PostgreSQL 18: idempotency, isolation, least privilege and clear failures."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from services.bootstrap.core import RolePasswords, bootstrap
from services.common import pgtrickle
from services.common.cli import FatalError
from services.common.scenarios import get_scenario
from tests.support import ROOT, TEST_PASSWORDS

PASSWORDS = RolePasswords(*TEST_PASSWORDS.values())


def _counts(url: str, scenario: str) -> dict[str, int]:
    spec = get_scenario(scenario)
    with psycopg.connect(url) as conn:
        counts = {t: _count(conn, "public", t) for t in spec.base_tables}
        for st in pgtrickle.stream_tables(conn):
            counts[f"st:{st.pgt_name}:{st.pgt_id}"] = _count(conn, st.pgt_schema, st.pgt_name)
    return counts


def _count(conn, schema: str, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))).fetchone()[0]


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.bootstrap", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **TEST_PASSWORDS, **(env or {})},
    )


def test_bootstrap_creates_scenario_as_declared(demo_db):
    db = demo_db("ecommerce")
    spec = get_scenario("ecommerce")
    with psycopg.connect(db.owner_url) as conn:
        tables = {st.pgt_name: st for st in pgtrickle.stream_tables(conn)}
        assert set(tables) == set(spec.stream_table_names)
        for declared in spec.stream_tables:
            st = tables[declared.name]
            assert (st.refresh_mode, st.schedule_label) == (declared.refresh_mode, declared.schedule)
            assert st.is_populated, f"{declared.name} should be populated right after bootstrap"
            owner = conn.execute(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = %s",
                (st.pgt_schema, st.pgt_name),
            ).fetchone()[0]
            assert owner == "demo"
        for table in spec.base_tables:
            assert _count(conn, "public", table) > 0, f"{table} has no seed rows"


def test_second_bootstrap_changes_nothing(demo_db, engine_server, capsys):
    db = demo_db("ecommerce")
    before = _counts(db.owner_url, "ecommerce")
    lines: list[str] = []
    bootstrap(
        engine_server[0], get_scenario("ecommerce"), db.engine, PASSWORDS, database=db.database, report=lines.append
    )
    assert _counts(db.owner_url, "ecommerce") == before  # same rows, same pgt_ids (nothing recreated)
    joined = "\n".join(lines)
    assert "schema.sql: already applied" in joined and "seed.sql: already applied" in joined
    assert "(0 created: none)" in joined
    assert lines[-1].endswith(f"(6 stream tables, engine {db.engine})")


def test_another_database_on_the_same_server_leaves_the_first_intact(demo_db):
    first = demo_db("ecommerce")
    with psycopg.connect(first.owner_url) as conn:  # make the first database differ from a fresh one
        conn.execute("INSERT INTO public.categories (name) VALUES ('Only in the first database')")
    before = _counts(first.owner_url, "ecommerce")
    second = demo_db("ecommerce")
    assert second.database != first.database
    assert _counts(first.owner_url, "ecommerce") == before
    with psycopg.connect(second.owner_url) as conn:
        assert (
            conn.execute("SELECT count(*) FROM categories WHERE name = 'Only in the first database'").fetchone()[0] == 0
        )


def test_reader_reads_stream_tables_and_catalog_only(demo_db):
    db = demo_db("ecommerce")
    with psycopg.connect(db.reader_url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM category_revenue").fetchone()[0] > 0
        assert len(pgtrickle.status(conn)) == 6
        assert len(pgtrickle.recent_refreshes(conn, 5)) > 0
        for statement in (
            "SELECT count(*) FROM orders",
            "INSERT INTO categories (name) VALUES ('x')",
            "DELETE FROM category_revenue",
            "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id) VALUES (1)",
            "SELECT * FROM demo_meta.generator_progress",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def test_writer_writes_exactly_the_generators_columns(demo_db):
    """Issue 14, finding 7: demo_writer INSERTs and UPDATEs only the columns the ecommerce generator writes
    (scenario.toml [writer]); before, it could UPDATE any column of orders (generator_run_id and
    generator_seq, the exactly-once evidence included), products.base_price, and INSERT into lookups."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.writer_url, autocommit=True) as conn:
        customer, product = conn.execute(
            "SELECT (SELECT min(id) FROM customers), (SELECT min(product_id) FROM product_catalog)"
        ).fetchone()
        conn.execute(
            "INSERT INTO orders (customer_id, product_id, quantity, unit_price, generator_run_id, generator_seq)"
            " VALUES (%s, %s, 1, 9.99, gen_random_uuid(), 1)",
            (customer, product),
        )
        conn.execute(
            "UPDATE product_catalog SET current_price = current_price, updated_at = now() WHERE product_id = %s",
            (product,),
        )
        for statement in (
            "INSERT INTO categories (name) VALUES ('Writer test category')",
            "INSERT INTO customers (name, country) VALUES ('Intruder', 'FR')",
            "UPDATE orders SET generator_run_id = gen_random_uuid()",
            "UPDATE orders SET generator_seq = generator_seq + 1",
            "UPDATE orders SET quantity = 99",
            "UPDATE products SET base_price = 0.01",
            "UPDATE product_catalog SET product_id = product_id",
            "DELETE FROM orders",
            "SELECT count(*) FROM category_revenue",
            "SELECT * FROM pgtrickle.pgt_stream_tables",
            "CREATE TABLE public.intruder (x int)",
            "TRUNCATE orders",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


def _ledger_session(url: str, token: str) -> psycopg.Connection:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SELECT set_config('demo.run_token', %s, false)", (token,))
    return conn


LEDGER_INSERT = """INSERT INTO demo_meta.generator_progress (run_id, scenario, last_batch, events_committed, run_key)
                   VALUES (%s, 'ecommerce', 1, 10, sha256(convert_to(current_setting('demo.run_token'), 'UTF8')))"""


def test_writer_reads_and_writes_only_its_own_runs_ledger_row(demo_db):
    """Issue 14, finding 7: a run's ledger row is keyed by the SHA-256 of the run's secret (row-level
    security); before, demo_writer could read and UPDATE every run's row."""
    db = demo_db("ecommerce")
    mine, theirs = str(uuid.uuid4()), str(uuid.uuid4())
    with _ledger_session(db.writer_url, "their-secret") as other:
        other.execute(LEDGER_INSERT, (theirs,))
    with _ledger_session(db.writer_url, "my-secret") as conn:
        conn.execute(LEDGER_INSERT, (mine,))
        conn.execute("UPDATE demo_meta.generator_progress SET last_batch = 2 WHERE run_id = %s", (mine,))
        visible = [str(r[0]) for r in conn.execute("SELECT run_id FROM demo_meta.generator_progress")]
        assert visible == [mine]
        changed = conn.execute(
            "UPDATE demo_meta.generator_progress SET last_batch = 99, events_committed = 0 WHERE run_id = %s",
            (theirs,),
        ).rowcount
        assert changed == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # a row under someone else's key
            conn.execute(
                "INSERT INTO demo_meta.generator_progress (run_id, scenario, last_batch, events_committed, run_key)"
                " VALUES (gen_random_uuid(), 'ecommerce', 1, 1, sha256('their-secret'))"
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # taking over a row by upsert
            conn.execute(LEDGER_INSERT + " ON CONFLICT (run_id) DO UPDATE SET last_batch = 99", (theirs,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM demo_meta.generator_progress")
    with psycopg.connect(db.writer_url, autocommit=True) as anonymous:  # no secret set: sees nothing
        assert anonymous.execute("SELECT count(*) FROM demo_meta.generator_progress").fetchone()[0] == 0
    with psycopg.connect(db.admin_url) as admin:
        rows = dict(admin.execute("SELECT run_id::text, last_batch FROM demo_meta.generator_progress").fetchall())
    assert rows == {mine: 2, theirs: 1}


def test_service_roles_cannot_connect_to_maintenance_databases_when_private(pg_server, engine_server):
    """Issue 14, finding 7: with private_maintenance_databases (the chart's StatefulSet, compose, make
    preview: the demo's own server), CONNECT on postgres and template1 is revoked from PUBLIC."""
    if engine_server[1] != "emulator":
        pytest.skip("changes the maintenance databases of the server: the local test server only")
    database = f"ecommerce_maint_{os.getpid()}"
    lines: list[str] = []
    try:
        bootstrap(
            engine_server[0],
            get_scenario("ecommerce"),
            "emulator",
            PASSWORDS,
            database=database,
            report=lines.append,
            private_maintenance_databases=True,
        )
        assert any("CONNECT revoked from PUBLIC" in line for line in lines)
        for role, password in (("demo_writer", PASSWORDS.writer), ("demo_reader", PASSWORDS.reader)):
            for maintenance in ("postgres", "template1"):
                with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
                    psycopg.connect(pg_server.url(maintenance, role, password), connect_timeout=5).close()
            psycopg.connect(pg_server.url(database, role, password), connect_timeout=5).close()
    finally:
        with psycopg.connect(engine_server[0], autocommit=True) as conn:  # the shared server, as it was
            for maintenance in ("postgres", "template1"):
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO PUBLIC").format(sql.Identifier(maintenance)))
        _drop_database(engine_server[0], database)


def test_owner_can_manage_stream_tables(demo_db):
    db = demo_db("ecommerce")
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        pgtrickle.create_stream_table(
            conn,
            "orders_per_customer",
            "SELECT customer_id, count(*) AS n FROM orders GROUP BY customer_id",
            schedule="5s",
            refresh_mode="DIFFERENTIAL",
        )
        assert "orders_per_customer" in {st.pgt_name for st in pgtrickle.stream_tables(conn)}
        pgtrickle.drop_stream_table(conn, "orders_per_customer")
        assert "orders_per_customer" not in {st.pgt_name for st in pgtrickle.stream_tables(conn)}


# -- command line and failures ---------------------------------------------------------------------------


def test_cli_bootstraps_and_prints_one_line_per_step(pg_server, engine_server):
    if engine_server[1] != "emulator":
        pytest.skip("CLI run uses the local server with the emulator; the extension path is covered above")
    database = f"ecommerce_cli_{os.getpid()}"
    try:
        result = _run_cli(
            "--scenario",
            "ecommerce",
            "--engine",
            "emulator",
            "--database",
            database,
            env={"DATABASE_URL": pg_server.admin_url},
        )
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert all(line.startswith("bootstrap [") for line in lines)
        assert "ready: scenario ecommerce in database " + database in lines[-1]
    finally:
        _drop_database(pg_server.admin_url, database)


def test_unknown_scenario_exits_2_with_message():
    result = _run_cli("--scenario", "weather", "--engine", "emulator")
    assert result.returncode == 2
    assert "weather" in result.stderr and "ecommerce" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_engine_and_missing_passwords_exit_2(pg_server):
    bad_engine = _run_cli("--engine", "magic", env={"DATABASE_URL": pg_server.admin_url})
    assert bad_engine.returncode == 2 and "extension, emulator" in bad_engine.stderr
    no_pw = subprocess.run(
        [sys.executable, "-m", "services.bootstrap", "--engine", "emulator"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("DEMO_")},
    )
    assert no_pw.returncode == 2 and "DEMO_PASSWORD" in no_pw.stderr and "Traceback" not in no_pw.stderr


def test_unreachable_server_exits_1_naming_the_target():
    from devenv.postgres import free_port

    port = free_port()
    result = _run_cli(
        "--engine",
        "emulator",
        env={"DATABASE_URL": f"postgresql://postgres@127.0.0.1:{port}/postgres", "BOOTSTRAP_CONNECT_TIMEOUT": "1"},
    )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr and "cannot connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_extension_engine_without_pg_trickle_names_the_image(pg_server, engine_server):
    if engine_server[1] == "extension":
        pytest.skip("this server has pg_trickle")
    database = f"ecommerce_noext_{os.getpid()}"
    try:
        with pytest.raises(FatalError) as failure:
            bootstrap(
                pg_server.admin_url,
                get_scenario("ecommerce"),
                "extension",
                PASSWORDS,
                database=database,
                report=lambda line: None,
            )
        message = str(failure.value)
        assert "pg_trickle extension is not installed" in message
        assert "ghcr.io/trickle-labs/pg_trickle" in message and "--engine emulator" in message
    finally:
        _drop_database(pg_server.admin_url, database)


def test_extension_engine_refuses_a_database_holding_the_emulator(demo_db, engine_server):
    if engine_server[1] == "extension":
        pytest.skip("needs the emulator")
    db = demo_db("ecommerce")
    with pytest.raises(FatalError, match="holds the pg_trickle emulator"):
        bootstrap(
            engine_server[0],
            get_scenario("ecommerce"),
            "extension",
            PASSWORDS,
            database=db.database,
            report=lambda line: None,
        )


# Every pgtrickle function that changes something, called the way pg_trickle documents it.
_MUTATING_CALLS = (
    "SELECT pgtrickle.refresh_stream_table('category_revenue')",
    "SELECT pgtrickle.alter_stream_table('category_revenue', schedule => '9s')",
    "SELECT pgtrickle.alter_stream_table('category_revenue', status => 'SUSPENDED')",
    "SELECT pgtrickle.resume_stream_table('category_revenue')",
    "SELECT pgtrickle.drop_stream_table('top_10_customers')",
    "SELECT pgtrickle.create_stream_table('intruder', 'SELECT 1 AS x')",
    "SELECT pgtrickle.create_stream_table_if_not_exists('intruder', 'SELECT 1 AS x')",
)
_EMULATOR_CALLS = (
    "SELECT pgtrickle.emulator_tick()",
    "CALL pgtrickle.emulator_run(10, 1)",
    "SELECT pgtrickle.emulator_finish_refresh(1)",
    "SELECT pgtrickle.emulator_record_no_data(1)",
    "SELECT pgtrickle.emulator_apply(1)",
    "SELECT pgtrickle.emulator_attach_capture('public.orders'::regclass)",
    "SELECT pgtrickle.emulator_detach_capture_if_unused('public.orders'::regclass)",
)


@pytest.mark.parametrize("role", ["reader", "writer"])
def test_reader_and_writer_cannot_change_stream_tables_through_pgtrickle_functions(demo_db, role):
    db = demo_db("ecommerce")
    calls = _MUTATING_CALLS + (_EMULATOR_CALLS if db.engine == "emulator" else ())
    with psycopg.connect(db.owner_url) as conn:
        before = (
            conn.execute("SELECT count(*), max(refresh_id) FROM pgtrickle.pgt_refresh_history").fetchone(),
            conn.execute(
                "SELECT array_agg((pgt_name, schedule, status, refresh_mode)::text ORDER BY pgt_id)"
                " FROM pgtrickle.pgt_stream_tables"
            ).fetchone(),
        )
    url = db.reader_url if role == "reader" else db.writer_url
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in calls:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
    with psycopg.connect(db.owner_url) as conn:
        after = (
            conn.execute("SELECT count(*), max(refresh_id) FROM pgtrickle.pgt_refresh_history").fetchone(),
            conn.execute(
                "SELECT array_agg((pgt_name, schedule, status, refresh_mode)::text ORDER BY pgt_id)"
                " FROM pgtrickle.pgt_stream_tables"
            ).fetchone(),
        )
    assert after == before


@pytest.mark.parametrize("database", ["postgres", "template1", "x" * 64])
def test_reserved_or_overlong_database_names_exit_2(pg_server, database):
    result = _run_cli("--engine", "emulator", "--database", database, env={"DATABASE_URL": pg_server.admin_url})
    assert result.returncode == 2, result.stderr
    assert "bootstrap: configuration error: database" in result.stderr and "Traceback" not in result.stderr
    assert result.stdout == ""  # stopped before touching the server


def test_existing_database_of_another_owner_is_not_taken_over(pg_server, engine_server):
    if engine_server[1] != "emulator":
        pytest.skip("uses the local server")
    database = f"someone_elses_{os.getpid()}"
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    try:
        result = _run_cli("--engine", "emulator", "--database", database, env={"DATABASE_URL": pg_server.admin_url})
        assert result.returncode == 1, result.stderr
        assert f"database {database} exists and is owned by" in result.stderr and "Traceback" not in result.stderr
        with psycopg.connect(pg_server.admin_url) as conn:
            acl = conn.execute("SELECT datacl FROM pg_database WHERE datname = %s", (database,)).fetchone()[0]
        assert acl is None  # PUBLIC's default CONNECT was left alone
    finally:
        _drop_database(pg_server.admin_url, database)


def test_role_passwords_reach_the_server_hashed_only(pg_server, engine_server):
    if engine_server[1] != "emulator":
        pytest.skip("reads the local server's log")
    database = f"ecommerce_pwlog_{os.getpid()}"
    logged = pg_server.admin_url + ("&" if "?" in pg_server.admin_url else "?") + "options=-c%20log_statement%3Dall"
    try:
        bootstrap(logged, get_scenario("ecommerce"), "emulator", PASSWORDS, database=database, report=lambda _: None)
        log = pg_server.log_tail(5000)
        assert "ALTER ROLE" in log or "CREATE ROLE" in log  # the statements were logged...
        for password in TEST_PASSWORDS.values():
            assert password not in log  # ...without a plaintext password
        with psycopg.connect(pg_server.admin_url) as conn:
            hashes = conn.execute(
                "SELECT rolpassword FROM pg_authid WHERE rolname IN ('demo', 'demo_writer', 'demo_reader')"
            ).fetchall()
        assert len(hashes) == 3 and all(h.startswith("SCRAM-SHA-256$") for (h,) in hashes)
        with psycopg.connect(
            make_conninfo(pg_server.admin_url, dbname=database, user="demo_reader", password=PASSWORDS.reader)
        ) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "demo_reader"
    finally:
        _drop_database(pg_server.admin_url, database)
