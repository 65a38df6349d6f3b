"""The bootstrap against a hostile owner (issue 14, finding 1).

`demo` owns the scenario database and everything in it, and the operator holds its password. Whatever
`demo` plants there (views replacing the tables the bootstrap reads, triggers on its tables, functions and
relations shadowing built-ins in every schema it can create in, a database-wide search_path that puts them
first), the next bootstrap, which runs partly as a superuser, must leave `demo` unprivileged, and either
succeed or fail with a clear message.
"""

from __future__ import annotations

import contextlib
import uuid

import psycopg
import pytest
from psycopg import sql

from services.bootstrap.core import OWNER, RolePasswords, bootstrap
from services.common.cli import FatalError
from services.common.scenarios import get_scenario
from tests.support import TEST_PASSWORDS

PASSWORDS = RolePasswords(*TEST_PASSWORDS.values())

# Runs with whatever privileges its caller has; escalates `demo` when that caller is (or can become, by
# RESET ROLE after a superuser's SET ROLE demo) a superuser. Every call is logged.
TRAP_FUNCTION = """
CREATE TABLE public.trap_log (
    at timestamptz DEFAULT pg_catalog.clock_timestamp(),
    session_role text, current_role_name text, was_superuser boolean);
GRANT INSERT ON public.trap_log TO PUBLIC;
CREATE FUNCTION public.trap_escalate() RETURNS boolean LANGUAGE plpgsql AS $trap$
DECLARE
    superuser boolean;
BEGIN
    BEGIN
        EXECUTE 'RESET ROLE';  -- undoes a SET [LOCAL] ROLE demo made by a superuser session
    EXCEPTION WHEN OTHERS THEN NULL;
    END;
    SELECT r.rolsuper INTO superuser FROM pg_catalog.pg_roles r WHERE r.rolname = pg_catalog.current_user();
    INSERT INTO public.trap_log (session_role, current_role_name, was_superuser)
    VALUES (pg_catalog.session_user(), pg_catalog.current_user(), superuser);
    IF superuser THEN
        EXECUTE 'ALTER ROLE demo SUPERUSER CREATEROLE CREATEDB BYPASSRLS';
        EXECUTE 'GRANT pg_read_server_files, pg_execute_server_program TO demo';
    END IF;
    RETURN true;
END $trap$;
CREATE FUNCTION public.trap_trigger() RETURNS trigger LANGUAGE plpgsql AS $trap$
BEGIN
    PERFORM public.trap_escalate();
    RETURN NULL;
END $trap$;
"""

# Built-ins the bootstrap (or anything) might call unqualified, shadowed with the same signature.
SHADOWED_FUNCTIONS = [
    ("now", "", "timestamptz", "pg_catalog.now()"),
    ("hashtext", "text", "integer", "pg_catalog.hashtext($1)"),
    ("current_setting", "text", "text", "pg_catalog.current_setting($1)"),
    ("pg_advisory_lock", "bigint", "void", "pg_catalog.pg_advisory_lock($1)"),
    ("pg_get_userbyid", "oid", "name", "pg_catalog.pg_get_userbyid($1)"),
    ("to_regprocedure", "text", "regprocedure", "pg_catalog.to_regprocedure($1)"),
    ("version", "", "text", "pg_catalog.version()"),
    ("lower", "text", "text", "pg_catalog.lower($1)"),
    ("sha256", "bytea", "bytea", "pg_catalog.sha256($1)"),
]
# Catalog views/tables the bootstrap reads, shadowed by views that fire the trap.
SHADOWED_RELATIONS = ["pg_roles", "pg_namespace", "pg_proc", "pg_class", "pg_database", "pg_extension", "pg_depend"]


def _try(conn: psycopg.Connection, statement: sql.Composable) -> None:
    """Plants one trap where demo may (an existing function of another owner cannot be replaced)."""
    refused = (psycopg.errors.InsufficientPrivilege, psycopg.errors.DuplicateFunction, psycopg.errors.WrongObjectType)
    with contextlib.suppress(*refused):
        conn.execute(statement)


def _plant_traps(owner_url: str, database: str, superuser: str) -> list[str]:
    """Plants every trap as `demo`; returns the schemas demo could create objects in."""
    with psycopg.connect(owner_url, autocommit=True) as conn:
        conn.execute(TRAP_FUNCTION)
        # A schema named after the superuser: first on the default search_path ("$user", public).
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(superuser)))
        schemas = [
            row[0]
            for row in conn.execute(
                "SELECT nspname FROM pg_catalog.pg_namespace WHERE pg_catalog.has_schema_privilege(oid, 'CREATE')"
                " AND nspname NOT LIKE 'pg\\_temp\\_%' AND nspname NOT LIKE 'pg\\_toast%' ORDER BY 1"
            )
        ]
        for schema in schemas:
            for name, args, returns, call in SHADOWED_FUNCTIONS:
                _try(
                    conn,
                    sql.SQL("CREATE OR REPLACE FUNCTION {}({}) RETURNS {} LANGUAGE sql AS {}").format(
                        sql.Identifier(schema, name),
                        sql.SQL(args),
                        sql.SQL(returns),
                        sql.Literal(f"SELECT public.trap_escalate(); SELECT {call}"),
                    ),
                )
            for relation in SHADOWED_RELATIONS:
                _try(
                    conn,
                    sql.SQL("CREATE OR REPLACE VIEW {} AS SELECT * FROM {} WHERE public.trap_escalate()").format(
                        sql.Identifier(schema, relation), sql.Identifier("pg_catalog", relation)
                    ),
                )
        # The attack: the bootstrap's ledger replaced by a view that calls the trap.
        conn.execute("ALTER TABLE demo_meta.bootstrap_steps RENAME TO bootstrap_steps_real")
        conn.execute(
            "CREATE VIEW demo_meta.bootstrap_steps AS"
            " SELECT * FROM demo_meta.bootstrap_steps_real WHERE public.trap_escalate()"
        )
        # Triggers on every table demo owns (base tables, stream tables, its ledger rows).
        tables = conn.execute(
            "SELECT c.oid::regclass::text FROM pg_catalog.pg_class c"
            " WHERE c.relkind IN ('r', 'p') AND c.relowner = (SELECT oid FROM pg_catalog.pg_roles"
            " WHERE rolname = pg_catalog.current_user())"
            " AND c.relnamespace <> 'pg_catalog'::regnamespace AND c.oid <> 'public.trap_log'::regclass"
        ).fetchall()
        for (table,) in tables:
            conn.execute(
                sql.SQL(
                    "CREATE TRIGGER zz_trap BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {}"
                    " FOR EACH STATEMENT EXECUTE FUNCTION public.trap_trigger()"
                ).format(sql.SQL(table))
            )
        # Every later session in this database, superusers' included, starts with demo's schemas first.
        conn.execute(
            sql.SQL("ALTER DATABASE {} SET search_path = {}, public, demo_meta, pg_catalog").format(
                sql.Identifier(database), sql.Identifier(superuser)
            )
        )
    return schemas


def _privileges(admin_url: str) -> tuple[tuple, list[str]]:
    with psycopg.connect(admin_url) as conn:
        attributes = conn.execute(
            "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication"
            " FROM pg_catalog.pg_roles WHERE rolname = %s",
            (OWNER,),
        ).fetchone()
        memberships = [
            row[0]
            for row in conn.execute(
                "SELECT pg_catalog.pg_get_userbyid(m.roleid) FROM pg_catalog.pg_auth_members m"
                " WHERE m.member = (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s) ORDER BY 1",
                (OWNER,),
            )
        ]
    return attributes, memberships


@pytest.fixture
def restore_demo(engine_server):
    """Undoes an escalation even when the test fails (roles are shared by the whole test session)."""
    yield
    with psycopg.connect(engine_server[0], autocommit=True) as conn:
        conn.execute("ALTER ROLE demo NOSUPERUSER NOCREATEROLE NOCREATEDB NOBYPASSRLS")
        for role in ("pg_read_server_files", "pg_execute_server_program"):
            conn.execute(sql.SQL("REVOKE {} FROM demo").format(sql.Identifier(role)))


def test_bootstrap_over_a_trapped_database_leaves_demo_unprivileged(demo_db, engine_server, restore_demo):
    db = demo_db("ecommerce")
    admin_url = engine_server[0]
    with psycopg.connect(admin_url) as conn:
        superuser = conn.execute("SELECT current_user").fetchone()[0]
    before = _privileges(admin_url)
    assert before[0] == (False, False, False, False, False)
    schemas = _plant_traps(db.owner_url, db.database, superuser)
    assert {"public", "demo_meta", superuser} <= set(schemas)

    lines: list[str] = []
    try:
        bootstrap(admin_url, get_scenario("ecommerce"), db.engine, PASSWORDS, database=db.database, report=lines.append)
        outcome = "succeeded"
    except FatalError as exc:  # a clean failure is acceptable; an escalation is not
        outcome = f"failed: {exc}"
        assert "\n" not in str(exc)

    assert _privileges(admin_url) == before, f"bootstrap {outcome}; demo gained privileges"
    with psycopg.connect(db.owner_url) as conn:
        fired = conn.execute(
            "SELECT session_role, current_role_name FROM public.trap_log WHERE was_superuser"
        ).fetchall()
        ran = conn.execute("SELECT count(*) FROM public.trap_log").fetchone()[0]
    assert fired == [], f"demo's code ran with superuser privileges: {fired}"
    # The traps are live (they ran as demo during the bootstrap's owner work), and the bootstrap finished.
    assert ran > 0, outcome
    assert outcome == "succeeded", outcome
    assert lines[-1].startswith(f"bootstrap [{len(lines)}] ready:")


def test_demo_cannot_plant_triggers_on_objects_it_does_not_own(demo_db):
    """TRIGGER privilege on a superuser-owned table (the engine's catalog, the bootstrap's ledger) lets
    its owner's writes run demo's code."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.admin_url) as conn:
        granted = conn.execute(
            """SELECT c.oid::regclass::text FROM pg_catalog.pg_class c
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                  AND NOT pg_catalog.pg_has_role('demo', c.relowner, 'USAGE')
                  AND (pg_catalog.has_table_privilege('demo', c.oid, 'TRIGGER')
                       OR pg_catalog.has_table_privilege('demo', c.oid, 'TRUNCATE')
                       OR pg_catalog.has_table_privilege('demo', c.oid, 'REFERENCES'))
                ORDER BY 1"""
        ).fetchall()
    assert granted == []


def test_superuser_owned_security_definer_functions_have_a_safe_search_path(demo_db):
    """Every SECURITY DEFINER function a superuser owns in a scenario database pins search_path to pg_catalog,
    then pg_temp (explicitly last), with no schema another role can create objects in. Those `demo` owns (the
    capture functions create_stream_table makes as its caller, with pg_trickle's own search_path
    `pgtrickle_changes, pgtrickle, pg_catalog, pg_temp`, src/cdc/triggers.rs; the advisor wrapper) run as
    `demo` and so raise nobody above `demo`; their search_path is fixed too, and no service role can create in
    any schema of it."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.admin_url) as conn:
        rows = conn.execute(
            """SELECT p.oid::regprocedure::text, r.rolsuper, r.rolname,
                      (SELECT pg_catalog.substr(c, 13) FROM pg_catalog.unnest(p.proconfig) c
                        WHERE c LIKE 'search_path=%%')
                 FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_roles r ON r.oid = p.proowner
                WHERE p.prosecdef AND p.pronamespace <> 'pg_catalog'::regnamespace
                  AND p.pronamespace <> 'information_schema'::regnamespace"""
        ).fetchall()
        assert any(superuser for _, superuser, _, _ in rows), "the emulator's own functions are SECURITY DEFINER"
        for function, superuser, owner, path in rows:
            assert path is not None, f"{function} has no fixed search_path"
            parts = [part.strip().strip('"') for part in path.split(",")]
            if superuser:
                assert parts == ["pg_catalog", "pg_temp"], f"{function}: search_path={path}"
                continue
            assert owner == "demo", function
            assert parts[-1] == "pg_temp", f"{function}: pg_temp must come last ({path})"
            for schema in set(parts) - {"pg_catalog", "pg_temp"}:
                for role in ("demo_writer", "demo_reader", "public"):
                    can = conn.execute("SELECT has_schema_privilege(%s, %s, 'CREATE')", (role, schema)).fetchone()[0]
                    assert not can, f"{function}: {role} may create in {schema}"


@pytest.mark.parametrize("schema", ["demo_bootstrap", "pgtrickle"])
def test_schemas_planted_by_demo_before_the_bootstrap_are_refused(pg_server, engine_server, schema):
    """`demo` owns the database, so it can create the ledger's schema or the engine's first: the bootstrap
    must neither record its steps there nor take demo's pgtrickle for an installed emulator (whose
    functions it would then trust)."""
    if engine_server[1] != "emulator":
        pytest.skip("creates a database on the local test server")
    database = f"ecommerce_planted_{schema}_{uuid.uuid4().hex[:6]}"
    admin_url = engine_server[0]
    try:
        bootstrap(admin_url, get_scenario("ecommerce"), "emulator", PASSWORDS, database=database, report=lambda _: None)
        with psycopg.connect(pg_server.url(database), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        with psycopg.connect(pg_server.url(database, OWNER, PASSWORDS.owner), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        with pytest.raises(FatalError, match=r"not owned by a superuser|not a superuser") as failure:
            bootstrap(admin_url, get_scenario("ecommerce"), "emulator", PASSWORDS, database=database, report=print)
        assert f"schema {schema} " in str(failure.value) or f"schemas not owned by a superuser: {schema} " in str(
            failure.value
        )
        assert "\n" not in str(failure.value)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
