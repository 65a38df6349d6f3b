"""Applies a scenario to a PostgreSQL server: roles, database, engine, schema, seed rows, stream tables,
grants. Idempotent: a second run changes nothing, and bootstrapping another scenario on the same server
leaves the first one intact (each scenario has its own database, `<scenario>_demo`).

Who does what:
- the admin connection (a superuser) creates roles, the database and the engine (CREATE EXTENSION needs a
  superuser; the emulator installs SECURITY DEFINER trigger functions);
- the owner role `demo` creates and owns everything of the scenario (base tables, seed rows, stream
  tables), as a user or the operator would;
- `demo_writer` (generator) may SELECT/INSERT/UPDATE the base tables only; `demo_reader` (dashboard,
  exporter) may SELECT the stream tables and the pgtrickle catalog only.
- pg_trickle's change buffers (schema pgtrickle_changes, closed to PUBLIC by the extension, "F51") are
  created by create_stream_table as the calling role: `demo` gets USAGE and CREATE there, nobody else gets
  anything. Capture triggers are SECURITY DEFINER, so the writer needs no right on the buffers; the reader
  runs the advisor (which counts buffer rows as the caller) through demo_monitor.recommend_refresh_mode(),
  a SECURITY DEFINER wrapper that returns the advisor's answer only. See README "Roles and privileges".
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.common import pgtrickle
from services.common.cli import FatalError
from services.common.db import connect_with_retry, first_line
from services.common.scenarios import Scenario, sql_root
from services.common.settings import ConfigError, describe_conninfo, env_str

OWNER, WRITER, READER = "demo", "demo_writer", "demo_reader"
# pgtrickle routines that change stream tables, the catalog or the scheduler's state (pg_trickle's and
# the emulator's); everything else in the schema (status, monitoring, tree, advisor) stays PUBLIC.
# Databases the bootstrap never takes over.
RESERVED_DATABASES = frozenset({"postgres", "template0", "template1"})
MUTATING_ROUTINES = (
    "create_stream_table",
    "create_stream_table_if_not_exists",
    "create_or_replace_stream_table",
    "alter_stream_table",
    "drop_stream_table",
    "refresh_stream_table",
    "refresh_if_stale",
    "resume_stream_table",
    "pause_stream_table",
    "pause_all",
    "resume_all",
    "repair_stream_table",
    "reinitialize_stream_table",
    "bulk_create",
    "emulator_tick",
    "emulator_run",
    "emulator_apply",
    "emulator_begin_refresh",
    "emulator_finish_refresh",
    "emulator_record_no_data",
    "emulator_record_sources",
    "emulator_attach_capture",
    "emulator_detach_capture_if_unused",
    "emulator_capture_new",
    "emulator_capture_old",
    "emulator_capture_truncate",
    "emulator_attach_buffer",
    "emulator_sync_buffer",
    "emulator_consume_buffers",
)
CHANGE_SCHEMA = "pgtrickle_changes"  # pg_trickle's change-buffer schema (pg_trickle.change_buffer_schema)
PASSWORD_VARIABLES = {OWNER: "DEMO_PASSWORD", WRITER: "DEMO_WRITER_PASSWORD", READER: "DEMO_READER_PASSWORD"}
ENGINES = ("extension", "emulator")
PG_TRICKLE_IMAGE = "ghcr.io/trickle-labs/pg_trickle"
MIN_SERVER_VERSION = 180000
# Serialises concurrent bootstraps (a Helm hook and a manual run, say). Advisory locks are cluster-wide.
LOCK_KEY = "pg_trickle_demo_bootstrap"

Report = Callable[[str], None]


@dataclass(frozen=True)
class RolePasswords:
    owner: str
    writer: str
    reader: str

    @classmethod
    def from_env(cls) -> RolePasswords:
        values = {role: env_str(var) for role, var in PASSWORD_VARIABLES.items()}
        missing = [PASSWORD_VARIABLES[role] for role, value in values.items() if not value]
        if missing:
            raise ConfigError(
                f"{', '.join(missing)} must be set: the demo roles get their passwords from the environment"
                " (there are no default passwords)"
            )
        return cls(owner=values[OWNER], writer=values[WRITER], reader=values[READER])

    def for_role(self, role: str) -> str:
        return {OWNER: self.owner, WRITER: self.writer, READER: self.reader}[role]


def _with_dbname(conninfo: str, dbname: str) -> str:
    params = conninfo_to_dict(conninfo)
    params["dbname"] = dbname
    return make_conninfo("", **params)


def _checksum(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class Bootstrap:
    def __init__(
        self,
        admin_conninfo: str,
        scenario: Scenario,
        engine: str,
        passwords: RolePasswords,
        *,
        database: str | None = None,
        report: Report = print,
        connect_timeout: float = 60.0,
    ):
        if engine not in ENGINES:
            raise ConfigError(f"engine {engine!r} is not valid; allowed values: {', '.join(ENGINES)}")
        self.admin_conninfo = admin_conninfo
        self.scenario = scenario
        self.engine = engine
        self.passwords = passwords
        self.database = database or scenario.database
        if self.database in RESERVED_DATABASES:
            raise ConfigError(
                f"database {self.database!r} is not valid: the demo needs a database of its own "
                f"(not {', '.join(sorted(RESERVED_DATABASES))}); the default is {scenario.database}"
            )
        if len(self.database.encode()) > 63:
            raise ConfigError(f"database name {self.database!r} is longer than PostgreSQL's 63 bytes")
        self.report = report
        self.connect_timeout = connect_timeout
        self._step = 0

    # -- driver ----------------------------------------------------------------------------------------
    def run(self) -> None:
        admin = self._connect(self.admin_conninfo)
        try:
            admin.execute("SELECT pg_advisory_lock(hashtext(%s))", (LOCK_KEY,))
            self._check_server(admin)
            self._roles(admin)
            self._database(admin)
            scenario_db = self._connect(_with_dbname(self.admin_conninfo, self.database))
            try:
                self._prepare_scenario_database(scenario_db)
            finally:
                scenario_db.close()
        finally:
            admin.close()

    def _prepare_scenario_database(self, db: psycopg.Connection) -> None:
        self._apply_as_owner(db, "meta", sql_root() / "common" / "meta.sql", once=False)
        self._engine(db)
        self._grant_catalog_to_owner(db)
        self._apply_as_owner(db, f"{self.scenario.name}/schema", self.scenario.sql_file("schema.sql"), once=True)
        self._apply_as_owner(db, f"{self.scenario.name}/seed", self.scenario.sql_file("seed.sql"), once=True)
        self._stream_tables(db)
        self._apply_as_owner(db, "monitoring", sql_root() / "common" / "monitoring.sql", once=False)
        self._grants(db)
        self._summary(db)

    def _say(self, text: str) -> None:
        self._step += 1
        self.report(f"bootstrap [{self._step}] {text}")

    def _connect(self, conninfo: str) -> psycopg.Connection:
        try:
            return connect_with_retry(
                conninfo, application_name="demo-bootstrap", autocommit=True, give_up_after=self.connect_timeout
            )
        except psycopg.OperationalError as exc:
            raise FatalError(
                f"cannot connect to PostgreSQL at {describe_conninfo(conninfo)} after "
                f"{self.connect_timeout:g}s: {first_line(exc)}"
            ) from None

    # -- server and roles ------------------------------------------------------------------------------
    def _check_server(self, admin: psycopg.Connection) -> None:
        version_num = int(admin.execute("SHOW server_version_num").fetchone()[0])
        superuser = admin.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()[0]
        if version_num < MIN_SERVER_VERSION:
            raise FatalError(
                f"PostgreSQL 18 or newer is required (pg_trickle supports 18 only); "
                f"this server is {admin.info.server_version}"
            )
        if not superuser:
            raise FatalError(
                "the bootstrap must connect as a superuser (it creates roles, the database and "
                "the pg_trickle extension); set DATABASE_URL or PGUSER accordingly"
            )
        self._say(
            f"server {describe_conninfo(self.admin_conninfo)}: PostgreSQL "
            f"{admin.execute('SHOW server_version').fetchone()[0]}, connected as superuser"
        )

    def _roles(self, admin: psycopg.Connection) -> None:
        me = admin.execute("SELECT current_user").fetchone()[0]
        outcome = []
        for role in (OWNER, WRITER, READER):
            exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            # Hashed here (SCRAM, or whatever password_encryption says), so the plaintext never reaches the
            # server, its statement log or pg_stat_statements.
            password = sql.Literal(
                admin.pgconn.encrypt_password(self.passwords.for_role(role).encode(), role.encode()).decode()
            )
            if role == me:
                outcome.append(f"{role} (the admin connection; left as is)")
                continue
            # Utility statements take no bind parameters: the password is quoted by psycopg as a literal.
            verb = "ALTER" if exists else "CREATE"
            admin.execute(
                sql.SQL("{} ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(role), password
                )
            )
            outcome.append(f"{role} {'updated' if exists else 'created'}")
        self._say("roles: " + ", ".join(outcome))

    def _database(self, admin: psycopg.Connection) -> None:
        exists = admin.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (self.database,)
        ).fetchone()
        if exists and exists[0] != OWNER:
            # Not one of ours: taking it over would revoke everyone else's access to it.
            raise FatalError(
                f"database {self.database} exists and is owned by {exists[0]}, not {OWNER}: "
                "refusing to take it over (choose another --database, or drop it first)"
            )
        db = sql.Identifier(self.database)
        if not exists:
            admin.execute(
                sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                    db, sql.Identifier(OWNER)
                )
            )
        # Only the three demo roles may connect (and superusers, who always can).
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(db))
        admin.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}, {}").format(db, sql.Identifier(WRITER), sql.Identifier(READER))
        )
        self._say(f"database {self.database}: {'exists' if exists else 'created'} (owner {OWNER})")

    # -- engine ----------------------------------------------------------------------------------------
    def _engine(self, db: psycopg.Connection) -> None:
        has_extension = pgtrickle.extension_installed(db)
        has_schema = pgtrickle.schema_present(db)
        if self.engine == "extension":
            if has_schema and not has_extension:
                raise FatalError(
                    f"database {self.database} holds the pg_trickle emulator; it cannot also take "
                    "the real extension (drop the database or use --engine emulator)"
                )
            self._require_extension(db)
            db.execute("CREATE EXTENSION IF NOT EXISTS pg_trickle")
            self._say(f"engine: pg_trickle extension {pgtrickle.version(db)}")
            return
        if has_extension:
            raise FatalError(
                f"database {self.database} has the real pg_trickle extension; "
                "use --engine extension (the emulator is for servers without it)"
            )
        emulator = sql_root() / "emulator" / "pgtrickle_emulator.sql"
        if has_schema:
            detail = "already installed"
            recorded = self._recorded_checksum(db, "emulator")
            if recorded and recorded != _checksum(emulator.read_text()):
                detail += " (NOTE: pgtrickle_emulator.sql changed since; recreate the database to upgrade it)"
        else:
            text = emulator.read_text()
            with db.transaction():
                db.execute(text)
                self._record(db, "emulator", _checksum(text))
            detail = "installed"
        self._say(f"engine: emulator {detail}: {pgtrickle.version(db)}")

    def _require_extension(self, db: psycopg.Connection) -> None:
        available = db.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trickle'").fetchone()
        preload = db.execute("SELECT current_setting('shared_preload_libraries')").fetchone()[0]
        image_hint = (
            f"run PostgreSQL 18 from the {PG_TRICKLE_IMAGE} image (it preloads the library), "
            "or use --engine emulator for a preview without the extension"
        )
        if not available:
            raise FatalError(f"the pg_trickle extension is not installed on this server; {image_hint}")
        if "pg_trickle" not in [lib.strip() for lib in preload.split(",")]:
            raise FatalError(
                "pg_trickle is installed but not in shared_preload_libraries "
                f"(currently {preload!r}), so its scheduler would never run; add it and restart "
                f"PostgreSQL, or {image_hint}"
            )

    def _grant_catalog_to_owner(self, db: psycopg.Connection) -> None:
        """The owner creates and alters stream tables, which writes the pgtrickle catalog."""
        owner = sql.Identifier(OWNER)
        db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA pgtrickle TO {}").format(owner))
        db.execute(sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA pgtrickle TO {}").format(owner))
        db.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA pgtrickle TO {}").format(owner))
        # create_stream_table creates each source's change buffer and capture trigger functions in
        # pgtrickle_changes as the calling role (pg_trickle 0.67: src/api/helpers.rs setup_cdc_for_source,
        # src/cdc/mod.rs create_change_buffer_table): the owner needs USAGE and CREATE there. The extension
        # closes the schema to PUBLIC (src/lib.rs, "F51"); the reader and the writer never get anything on it
        # (revoked here too, so a hand-made grant does not survive a re-run).
        if not db.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (CHANGE_SCHEMA,)).fetchone():
            raise FatalError(
                f"schema {CHANGE_SCHEMA} is missing from database {self.database}: the engine did not install"
                " it (pg_trickle keeps its change buffers there); an emulator installed by an older bootstrap"
                " lacks it: recreate the database"
            )
        changes = sql.Identifier(CHANGE_SCHEMA)
        db.execute(sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(changes, owner))
        db.execute(
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC, {}, {}").format(
                changes, sql.Identifier(WRITER), sql.Identifier(READER)
            )
        )
        if db.execute("SELECT 1 FROM pg_roles WHERE rolname = 'pgtrickle_admin'").fetchone():
            # pg_trickle >= 0.108 ships its own admin role for create/alter/drop.
            db.execute(sql.SQL("GRANT pgtrickle_admin TO {}").format(owner))
        # pg_trickle 0.67 (and the emulator) leave every function EXECUTE-able by PUBLIC: the functions that
        # change stream tables or drive the scheduler are taken back and given to the owner only, so the
        # reader and the writer cannot refresh, alter, drop, resume or tick anything. Looked up by name, so
        # every version's signature is covered.
        routines = db.execute(
            """SELECT p.oid::regprocedure::text FROM pg_proc p
                WHERE p.pronamespace = 'pgtrickle'::regnamespace AND p.proname = ANY(%s)
                ORDER BY 1""",
            (list(MUTATING_ROUTINES),),
        ).fetchall()
        for (signature,) in routines:
            db.execute(sql.SQL("REVOKE EXECUTE ON ROUTINE {} FROM PUBLIC").format(sql.SQL(signature)))
            db.execute(sql.SQL("GRANT EXECUTE ON ROUTINE {} TO {}").format(sql.SQL(signature), owner))
        self._say(
            f"catalog: {OWNER} may create and manage stream tables "
            f"({len(routines)} changing pgtrickle routines executable by {OWNER} only; "
            f"USAGE, CREATE on {CHANGE_SCHEMA} for {OWNER} only)"
        )

    # -- scenario SQL ----------------------------------------------------------------------------------
    def _recorded_checksum(self, db: psycopg.Connection, step: str) -> str | None:
        row = db.execute("SELECT checksum FROM demo_meta.bootstrap_steps WHERE step = %s", (step,)).fetchone()
        return row[0] if row else None

    def _record(self, db: psycopg.Connection, step: str, checksum: str) -> None:
        db.execute(
            """INSERT INTO demo_meta.bootstrap_steps (step, checksum) VALUES (%s, %s)
               ON CONFLICT (step) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()""",
            (step, checksum),
        )

    def _apply_as_owner(self, db: psycopg.Connection, step: str, path: Path, *, once: bool) -> None:
        """Runs a SQL file as the owner in one transaction. `once`: applied a single time, recorded in
        demo_meta.bootstrap_steps (seed rows must not be inserted twice)."""
        text = path.read_text()
        checksum = _checksum(text)
        if once:
            recorded = self._recorded_checksum(db, step)
            if recorded is not None:
                changed = " (NOTE: the file changed since; recreate the database to re-apply it)"
                note = "" if recorded == checksum else changed
                self._say(f"{path.relative_to(sql_root())}: already applied{note}")
                return
        try:
            with db.transaction():
                db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(OWNER)))
                db.execute(text)
                if once or step in ("meta", "monitoring"):
                    self._record(db, step, checksum)
        except psycopg.Error as exc:
            raise FatalError(f"{path.relative_to(sql_root())} failed: {first_line(exc)}") from None
        self._say(f"{path.relative_to(sql_root())}: applied")

    def _stream_tables(self, db: psycopg.Connection) -> None:
        path = self.scenario.sql_file("stream_tables.sql")
        before = {st.pgt_name for st in pgtrickle.stream_tables(db)}
        try:
            with db.transaction():
                db.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(OWNER)))
                db.execute(path.read_text())
        except psycopg.errors.InsufficientPrivilege as exc:
            # Nothing of the file is kept (one transaction): fix the grant and run the bootstrap again.
            hint = ""
            if CHANGE_SCHEMA in str(exc):
                hint = (
                    f"; role {OWNER} needs USAGE and CREATE on schema {CHANGE_SCHEMA} (create_stream_table creates"
                    " each source's change buffer there as the calling role)"
                )
            raise FatalError(
                f"{path.relative_to(sql_root())} failed as role {OWNER}: {first_line(exc)}{hint}; "
                "no stream table was created"
            ) from None
        except psycopg.Error as exc:
            raise FatalError(f"{path.relative_to(sql_root())} failed: {first_line(exc)}") from None
        catalog = {st.pgt_name: st for st in pgtrickle.stream_tables(db) if st.pgt_schema == "public"}
        problems = []
        for spec in self.scenario.stream_tables:
            st = catalog.get(spec.name)
            if st is None:
                problems.append(f"{spec.name} missing")
            elif (st.refresh_mode, st.schedule_label) != (spec.refresh_mode, spec.schedule):
                problems.append(
                    f"{spec.name} is {st.refresh_mode}/{st.schedule_label}, "
                    f"expected {spec.refresh_mode}/{spec.schedule}"
                )
        if problems:
            raise FatalError("stream tables do not match scenario.toml: " + "; ".join(problems))
        created = [name for name in self.scenario.stream_table_names if name not in before]
        self._say(f"stream tables: {len(catalog)} present ({len(created)} created: {', '.join(created) or 'none'})")

    # -- least-privilege grants ------------------------------------------------------------------------
    def _grants(self, db: psycopg.Connection) -> None:
        writer, reader, owner = sql.Identifier(WRITER), sql.Identifier(READER), sql.Identifier(OWNER)
        base_tables = [sql.Identifier("public", t) for t in self.scenario.base_tables]
        stream_tables = [sql.Identifier(st.pgt_schema, st.pgt_name) for st in pgtrickle.stream_tables(db)]
        # Sequences behind the base tables' serial/identity columns (the writer draws ids from them).
        sequences = db.execute(
            """SELECT sn.nspname, s.relname
                 FROM pg_depend d
                 JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_namespace sn ON sn.oid = s.relnamespace
                 JOIN pg_class t ON t.oid = d.refobjid
                 JOIN pg_namespace tn ON tn.oid = t.relnamespace
                WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
                  AND d.deptype IN ('a', 'i') AND tn.nspname = 'public' AND t.relname = ANY(%s)""",
            (list(self.scenario.base_tables),),
        ).fetchall()
        with db.transaction():
            db.execute(sql.SQL("SET LOCAL ROLE {}").format(owner))
            db.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}, {}").format(writer, reader))
            db.execute(
                sql.SQL("GRANT SELECT, INSERT, UPDATE ON {} TO {}").format(sql.SQL(", ").join(base_tables), writer)
            )
            for schema, sequence in sequences:
                db.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(sql.Identifier(schema, sequence), writer))
            db.execute(sql.SQL("GRANT USAGE ON SCHEMA demo_meta TO {}").format(writer))
            db.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON demo_meta.generator_progress TO {}").format(writer))
            if stream_tables:
                db.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(", ").join(stream_tables), reader))
        # The catalog belongs to the engine (admin): readers see it, never write it.
        db.execute(sql.SQL("GRANT USAGE ON SCHEMA pgtrickle TO {}").format(reader))
        db.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA pgtrickle TO {}").format(reader))
        for function in ("pgtrickle.refresh_efficiency()", "pgtrickle.refresh_timeline(integer)"):
            # pg_trickle 0.108 revokes these two read functions from PUBLIC; readers need them.
            if db.execute("SELECT to_regprocedure(%s)", (function,)).fetchone()[0] is not None:
                db.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function), reader))
        if db.execute("SELECT 1 FROM pg_roles WHERE rolname = 'pgtrickle_reader'").fetchone():
            db.execute(sql.SQL("GRANT pgtrickle_reader TO {}").format(reader))
        # The advisor counts change-buffer rows as the caller: the reader runs it through the owner's wrapper.
        with db.transaction():
            db.execute(sql.SQL("SET LOCAL ROLE {}").format(owner))
            db.execute(sql.SQL("GRANT USAGE ON SCHEMA demo_monitor TO {}").format(reader))
            db.execute(
                sql.SQL("GRANT EXECUTE ON FUNCTION demo_monitor.recommend_refresh_mode(text) TO {}").format(reader)
            )
        self._say(
            f"grants: {WRITER} writes {len(base_tables)} base tables; "
            f"{READER} reads {len(stream_tables)} stream tables and the pgtrickle catalog"
        )

    def _summary(self, db: psycopg.Connection) -> None:
        engine = pgtrickle.engine_of(pgtrickle.version(db))
        count = len(pgtrickle.stream_tables(db))
        self._say(
            f"ready: scenario {self.scenario.name} in database {self.database} ({count} stream tables, engine {engine})"
        )


def bootstrap(
    admin_conninfo: str,
    scenario: Scenario,
    engine: str,
    passwords: RolePasswords,
    *,
    database: str | None = None,
    report: Report = print,
    connect_timeout: float = 60.0,
) -> None:
    Bootstrap(
        admin_conninfo, scenario, engine, passwords, database=database, report=report, connect_timeout=connect_timeout
    ).run()
