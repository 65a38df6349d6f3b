"""pg_trickle's privilege model, and the demo's roles working within it (issue 11).

pg_trickle 0.67 closes its change-buffer schema to PUBLIC (src/lib.rs, "F51"); create_stream_table creates
each source's buffer `pgtrickle_changes.changes_<stable name>` and its capture trigger functions with plain
SPI, as the calling role (src/api/helpers.rs setup_cdc_for_source; src/cdc/mod.rs create_change_buffer_table,
create_change_trigger); the capture functions are SECURITY DEFINER with a fixed search_path; the advisor counts
buffer rows as the caller (src/diagnostics.rs, gather_change_ratio); change_buffer_sizes reads catalog and
statistics only (src/monitor/mod.rs). Every test here runs unchanged against the real extension (`make
test-real`): they use only pg_trickle's SQL surface (pgtrickle.source_stable_name exists in 0.67,
src/citus.rs) and PostgreSQL's catalogs.
"""

from __future__ import annotations

import threading
import uuid

import psycopg
import pytest
import xxhash
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool

from services.bootstrap.core import Bootstrap, RolePasswords
from services.common import pgtrickle
from services.common.cli import FatalError
from services.common.scenarios import get_scenario
from services.dashboard import catalog
from services.dashboard.app import close_app, create_app
from services.dashboard.config import load_config
from services.exporter.analyses import AnalysesReader
from services.exporter.collector import PgTrickleCollector
from services.operator import reconcile
from services.operator.spec import parse_spec
from tests.dashboard_support import dashboard_env
from tests.support import TEST_PASSWORDS

CHANGES = "pgtrickle_changes"
STABLE_HASH_SEED = 0x517CC1B727220A95  # src/citus.rs, STABLE_HASH_SEED


def stable_name(schema: str, table: str) -> str:
    """src/citus.rs, stable_hash: lower_hex(xxh64("schema.table", seed)), 16 characters."""
    return format(xxhash.xxh64(f"{schema}.{table}".encode(), seed=STABLE_HASH_SEED).intdigest(), "016x")


def buffer_of(conn: psycopg.Connection, table: str, schema: str = "public") -> str | None:
    """The name of the source's change buffer in pgtrickle_changes, or None when it has none."""
    row = conn.execute(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relname = %s",
        (CHANGES, f"changes_{stable_name(schema, table)}"),
    ).fetchone()
    return row[0] if row else None


def capture_triggers(conn: psycopg.Connection, table: str) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname LIKE 'pg\\_trickle\\_cdc\\_%%'"
            " ORDER BY 1",
            (f"public.{table}",),
        ).fetchall()
    ]


def schema_grants(conn: psycopg.Connection) -> dict[str, set[str]]:
    """grantee ('PUBLIC' for 0) -> privileges on pgtrickle_changes."""
    grants: dict[str, set[str]] = {}
    for grantee, privilege in conn.execute(
        """SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END, a.privilege_type
             FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
            WHERE n.nspname = %s""",
        (CHANGES,),
    ).fetchall():
        grants.setdefault(grantee, set()).add(privilege)
    return grants


@pytest.fixture
def shop(demo_db):
    return demo_db("ecommerce")


def test_change_schema_is_closed_to_public_and_open_to_the_owner_only(shop):
    with psycopg.connect(shop.admin_url, autocommit=True) as admin:
        grants = schema_grants(admin)
        assert "PUBLIC" not in grants, grants
        assert grants.get("demo") == {"USAGE", "CREATE"}, grants
        for role in ("demo_writer", "demo_reader"):
            assert role not in grants, grants
            for privilege in ("USAGE", "CREATE"):
                assert not admin.execute(
                    "SELECT has_schema_privilege(%s, %s, %s)", (role, CHANGES, privilege)
                ).fetchone()[0], (role, privilege)


def test_every_source_has_its_buffer_named_as_pg_trickle_names_it_owned_by_demo(shop):
    with psycopg.connect(shop.admin_url, autocommit=True) as admin:
        for table in ("customers", "orders", "products", "categories", "product_catalog"):
            (oid,) = admin.execute("SELECT %s::regclass::oid", (f"public.{table}",)).fetchone()
            assert admin.execute("SELECT pgtrickle.source_stable_name(%s)", (oid,)).fetchone()[0] == stable_name(
                "public", table
            )
            buffer = buffer_of(admin, table)
            assert buffer is not None, f"no change buffer for {table}"
            owner = admin.execute(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE relnamespace = %s::regnamespace AND relname = %s",
                (CHANGES, buffer),
            ).fetchone()[0]
            assert owner == "demo", f"{buffer} is owned by {owner}: the bootstrap must create stream tables as demo"
            assert capture_triggers(admin, table), f"no capture trigger on {table}"
        # change_buffer_sizes(): schema-qualified sources, a size for every buffer, never NULL.
        rows = pgtrickle.change_buffer_sizes(admin)
        assert rows
        for row in rows:
            assert row.source_table.count(".") == 1, row
            assert row.pending_rows is not None and row.buffer_bytes is not None, row
            if row.source_table.removeprefix("public.") in get_scenario("ecommerce").base_tables:
                assert row.buffer_bytes > 0, row  # a stream-table source has no changes_<stable name> buffer


def test_a_role_with_the_api_but_no_rights_on_the_change_schema_is_refused(shop):
    role = f"pgt_api_only_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(shop.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
        try:
            r = sql.Identifier(role)
            # Everything of the pgtrickle API and catalog, a schema to create in, but nothing on pgtrickle_changes.
            admin.execute(sql.SQL("GRANT USAGE ON SCHEMA pgtrickle TO {}").format(r))
            admin.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA pgtrickle TO {}").format(r))
            admin.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA pgtrickle TO {}").format(r))
            admin.execute(sql.SQL("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgtrickle TO {}").format(r))
            admin.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA public TO {}").format(r))
            # The emulator validates a query as a temporary view (pg_trickle needs no TEMP): as the owner has.
            admin.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(sql.Identifier(shop.database), r))
            with admin.transaction():
                admin.execute(sql.SQL("SET LOCAL ROLE {}").format(r))
                admin.execute("CREATE TABLE api_only_src (id int PRIMARY KEY, v int)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused, admin.transaction():
                admin.execute(sql.SQL("SET LOCAL ROLE {}").format(r))
                admin.execute("SELECT pgtrickle.create_stream_table('api_only_st', 'SELECT id, v FROM api_only_src')")
            assert CHANGES in str(refused.value)
            assert pgtrickle.find_stream_table(admin, "api_only_st") is None  # nothing half-created
            assert buffer_of(admin, "api_only_src") is None and capture_triggers(admin, "api_only_src") == []
            # The grant pg_trickle needs, and nothing more: now it works, and the buffer is the role's.
            admin.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(sql.Identifier(CHANGES), r))
            with admin.transaction():
                admin.execute(sql.SQL("SET LOCAL ROLE {}").format(r))
                admin.execute("SELECT pgtrickle.create_stream_table('api_only_st', 'SELECT id, v FROM api_only_src')")
                admin.execute("SELECT pgtrickle.drop_stream_table('api_only_st')")
        finally:
            admin.execute("DROP TABLE IF EXISTS api_only_src")
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_the_owner_creates_alters_refreshes_and_drops_and_the_buffer_goes_with_the_last_reader(shop):
    with psycopg.connect(shop.owner_url, autocommit=True) as owner:
        assert owner.execute("SELECT current_user").fetchone()[0] == "demo"
        owner.execute("CREATE TABLE priv_src (id int PRIMARY KEY, v int NOT NULL)")
        owner.execute("INSERT INTO priv_src SELECT g, g FROM generate_series(1, 10) g")
        pgtrickle.create_stream_table(owner, "priv_a", "SELECT id, v FROM priv_src", schedule="1m", refresh_mode="FULL")
        pgtrickle.create_stream_table(owner, "priv_b", "SELECT count(*) AS n FROM priv_src", schedule="1m")
        assert buffer_of(owner, "priv_src") is not None
        assert capture_triggers(owner, "priv_src")
        pgtrickle.alter_stream_table(owner, "priv_a", schedule="2m")
        owner.execute("UPDATE priv_src SET v = v + 1 WHERE id <= 3")
        pgtrickle.refresh_stream_table(owner, "priv_a")
        pgtrickle.refresh_stream_table(owner, "priv_b")
        assert owner.execute("SELECT sum(v) FROM priv_a").fetchone()[0] == 55 + 3
        pgtrickle.drop_stream_table(owner, "priv_a")
        assert buffer_of(owner, "priv_src") is not None, "priv_b still reads priv_src"
        pgtrickle.drop_stream_table(owner, "priv_b")
        assert buffer_of(owner, "priv_src") is None, "the last stream table over priv_src took its buffer along"
        assert capture_triggers(owner, "priv_src") == []


def test_the_operator_reconciles_as_demo_within_the_privileges(shop):
    with psycopg.connect(shop.owner_url, autocommit=True) as owner:
        owner.execute("CREATE TABLE op_priv_src (id int PRIMARY KEY, grp int NOT NULL)")
        owner.execute("INSERT INTO op_priv_src SELECT g, g % 3 FROM generate_series(1, 30) g")
        query = "SELECT grp, count(*) AS n FROM op_priv_src GROUP BY grp"
        fields = {"name": "op_priv", "query": query, "schedule": "1m", "refreshMode": "FULL"}
        desired = parse_spec(fields, "op-priv")
        created = reconcile.apply(owner, desired, managed=False)
        assert created.problem is None, created.problem
        assert buffer_of(owner, "op_priv_src") is not None
        altered = reconcile.apply(owner, parse_spec({**fields, "schedule": "2m"}, "op-priv"), managed=True)
        assert altered.problem is None, altered.problem
        assert pgtrickle.find_stream_table(owner, "op_priv").schedule == "2m"
        pgtrickle.refresh_stream_table(owner, "op_priv")
        removed = reconcile.remove(owner, desired, managed=True)
        assert removed.problem is None, removed.problem
        assert pgtrickle.find_stream_table(owner, "op_priv") is None
        assert buffer_of(owner, "op_priv_src") is None and capture_triggers(owner, "op_priv_src") == []

    # Without its grant on pgtrickle_changes the operator reports a PermissionDenied condition naming the role
    # and the schema, and nothing is half-created.
    with psycopg.connect(shop.admin_url, autocommit=True) as admin:
        admin.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM demo").format(sql.Identifier(CHANGES)))
    with psycopg.connect(shop.owner_url, autocommit=True) as owner:
        refused = reconcile.apply(owner, desired, managed=False)
        assert refused.problem is not None and refused.problem.reason == "PermissionDenied"
        assert "role demo" in refused.problem.message and CHANGES in refused.problem.message
        assert not refused.problem.retryable
        assert pgtrickle.find_stream_table(owner, "op_priv") is None and buffer_of(owner, "op_priv_src") is None


def test_the_writers_changes_land_in_the_buffer_without_any_grant_there(shop):
    with psycopg.connect(shop.admin_url, autocommit=True) as admin:
        buffer = buffer_of(admin, "orders")  # the table the generator writes (its only INSERT grant)
        sequence = sql.Identifier(CHANGES, f"{buffer}_change_id_seq")
        # A sequence is not transactional and a refresh does not rewind it: this holds even if the real
        # engine's scheduler consumes the rows before we look.
        before = admin.execute(sql.SQL("SELECT last_value, is_called FROM {}").format(sequence)).fetchone()
        with psycopg.connect(shop.writer_url, autocommit=True) as writer:
            assert not writer.execute("SELECT has_schema_privilege(%s, 'USAGE')", (CHANGES,)).fetchone()[0]
            writer.execute(
                "INSERT INTO orders (customer_id, product_id, quantity, unit_price)"
                " VALUES (1, 1, 7001, 1), (1, 1, 7002, 1)"
            )
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                writer.execute(
                    sql.SQL("INSERT INTO {} (lsn, action) VALUES (pg_current_wal_lsn(), 'I')").format(
                        sql.Identifier(CHANGES, buffer)
                    )
                )
        after = admin.execute(sql.SQL("SELECT last_value FROM {}").format(sequence)).fetchone()[0]
        assert after - (before[0] if before[1] else before[0] - 1) == 2, "two inserted rows, two buffer rows"
        if shop.engine == "emulator":  # no scheduler runs here: the rows are still pending
            rows = admin.execute(
                sql.SQL("SELECT action, quantity FROM {} ORDER BY change_id DESC LIMIT 2").format(
                    sql.Identifier(CHANGES, buffer)
                )
            ).fetchall()
            assert sorted(rows) == [("I", 7001), ("I", 7002)]


def test_the_reader_runs_every_monitoring_read_of_the_dashboard_and_the_exporter(shop):
    with psycopg.connect(shop.reader_url) as reader:
        # The advisor itself counts buffer rows as the caller: refused to the reader, as on pg_trickle ...
        with pytest.raises(psycopg.errors.InsufficientPrivilege), reader.transaction():
            reader.execute("SELECT * FROM pgtrickle.recommend_refresh_mode()").fetchall()
        # ... which is why the reader goes through the owner's wrapper (and only gets the advisor's answer).
        names = {(r.pgt_schema, r.pgt_name) for r in pgtrickle.recommend_refresh_mode(reader)}
        assert names == {("public", n) for n in get_scenario("ecommerce").stream_table_names}
        slow = catalog.slow_internals(reader)
        assert slow["unavailable"] == {}, slow["unavailable"]
        assert slow["advisor"] and slow["efficiency"] and slow["health"]
        assert catalog.live_internals(reader)["status"]
        assert catalog.dag(reader)["nodes"]
        assert pgtrickle.change_buffer_sizes(reader)
        reader.rollback()
    with ConnectionPool(shop.reader_url, min_size=1, max_size=1, open=True) as pool:
        analyses = AnalysesReader(pool, 30, threading.Event())
        latest = analyses.read_once()
        assert analyses.errors == 0 and latest.recommendations and latest.efficiency
        collector = PgTrickleCollector(pool, "ecommerce", 10.0, analyses)
        families = {f.name for f in collector.collect()}
        assert "pg_trickle_change_buffer_pending_rows" in families
        assert sum(collector.errors.values()) == 0, collector.errors
    app = create_app(load_config(dashboard_env(shop.reader_url, "ecommerce")))
    try:
        response = app.test_client().get("/api/snapshot")
        assert response.status_code == 200
        internals = response.get_json()["internals"]
        assert internals["unavailable"] == {} and internals["advisor"] and internals["health"]
    finally:
        close_app(app)


def _withhold_internals(admin_url: str) -> None:
    """The reader loses the three slow reads (as a hand-made or an engine-side change of grants would do)."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("REVOKE EXECUTE ON FUNCTION demo_monitor.recommend_refresh_mode(text) FROM demo_reader")
        for function in ("pgtrickle.refresh_efficiency()", "pgtrickle.health_check()"):
            admin.execute(sql.SQL("REVOKE EXECUTE ON FUNCTION {} FROM PUBLIC, demo_reader").format(sql.SQL(function)))


def test_a_refused_internal_read_empties_its_panel_only_and_says_so(shop):
    _withhold_internals(shop.admin_url)
    app = create_app(load_config(dashboard_env(shop.reader_url, "ecommerce")))
    try:
        response = app.test_client().get("/api/snapshot")
        assert response.status_code == 200
        body = response.get_json()
        assert body["tiles"] and body["dag"]["nodes"] and body["internals"]["status"]
        unavailable = body["internals"]["unavailable"]
        assert set(unavailable) == {"advisor", "efficiency", "health"}
        for panel in ("advisor", "efficiency", "health"):
            assert body["internals"][panel] == []
            assert "permission denied" in unavailable[panel] and "Could not read" in unavailable[panel]
        assert "Refresh Mode Advisor" in unavailable["advisor"]
        assert "demo_reader" not in response.get_data(as_text=True)  # words, not the database's message
    finally:
        close_app(app)


def test_a_refused_internal_read_costs_the_exporter_that_stage_only(shop):
    _withhold_internals(shop.admin_url)
    with ConnectionPool(shop.reader_url, min_size=1, max_size=1, open=True) as pool:
        analyses = AnalysesReader(pool, 30, threading.Event())
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            analyses.read_once()  # both analyses refused: nothing to show, counted
        assert analyses.errors == 2
        collector = PgTrickleCollector(pool, "ecommerce", 10.0, analyses)
        families = {f.name: f for f in collector.collect()}
        assert families["pg_trickle_up"].samples[0].value == 1
        assert "pg_trickle_change_buffer_pending_rows" in families
        assert collector.errors["health_check"] == 1
        assert sum(v for k, v in collector.errors.items() if k != "health_check") == 0, collector.errors


def test_a_missing_grant_stops_the_bootstrap_clearly_and_a_rerun_completes(engine_server):
    admin_url, engine = engine_server
    passwords = RolePasswords(*TEST_PASSWORDS.values())
    database = f"ecommerce_priv_{uuid.uuid4().hex[:8]}"

    class WithoutChangeSchemaGrant(Bootstrap):
        """Stands for a database where the owner lacks CREATE on pgtrickle_changes (a DBA's hand, an old
        bootstrap): the grant is taken back right after the bootstrap gives it."""

        def _grant_catalog_to_owner(self, db):
            super()._grant_catalog_to_owner(db)
            db.execute(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM demo").format(sql.Identifier(CHANGES)))

    scenario = get_scenario("ecommerce")
    try:
        with pytest.raises(FatalError) as failed:
            WithoutChangeSchemaGrant(
                admin_url, scenario, engine, passwords, database=database, report=lambda _: None
            ).run()
        message = str(failed.value)
        assert "role demo" in message and CHANGES in message and "stream_tables.sql" in message
        db_url = make_conninfo(admin_url, dbname=database)
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert pgtrickle.stream_tables(conn) == []  # nothing half-created
            assert (
                conn.execute(
                    "SELECT count(*) FROM pg_class WHERE relnamespace = %s::regnamespace", (CHANGES,)
                ).fetchone()[0]
                == 0
            )
        lines: list[str] = []
        Bootstrap(admin_url, scenario, engine, passwords, database=database, report=lines.append).run()
        with psycopg.connect(db_url, autocommit=True) as conn:
            assert {st.pgt_name for st in pgtrickle.stream_tables(conn)} == set(scenario.stream_table_names)
            assert schema_grants(conn).get("demo") == {"USAGE", "CREATE"}
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
