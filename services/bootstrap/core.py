"""Applies a scenario to a PostgreSQL server: roles, database, engine, schema, seed rows, stream tables,
grants. Idempotent: a second run changes nothing, and bootstrapping another scenario on the same server
leaves the first one intact (each scenario has its own database, `<scenario>_demo`).

Who does what:
- the admin connection (a superuser) creates roles, the database and the engine (CREATE EXTENSION needs a
  superuser; the emulator installs SECURITY DEFINER trigger functions), grants on the engine's objects, and
  keeps the bootstrap's ledger (schema demo_bootstrap, owned by the superuser, no privilege for anyone
  else). It never reads, executes or writes an object a non-superuser owns: `demo` owns the scenario
  database and the operator holds its password, so any such object may be a trap (a view calling a
  function that runs as its reader, a trigger, a function or relation shadowing a built-in). Every admin
  connection pins search_path to pg_catalog, pg_temp, ahead of any ALTER DATABASE ... SET by the owner.
- the owner role `demo`, over a connection of its own (never SET ROLE from the superuser's session: code
  that runs there can RESET ROLE), creates and owns everything of the scenario (base tables, seed rows,
  stream tables) and grants on it, as a user or the operator would;
- `demo_writer` (generator) may SELECT the base tables, INSERT/UPDATE exactly the columns the generator
  writes (scenario.toml [writer]) and read/write its own run's ledger row only (row-level security keyed by
  a per-run secret); `demo_reader` (dashboard, exporter) may SELECT the stream tables and the pgtrickle
  catalog only.
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
from services.common.settings import ConfigError, describe_conninfo, env_password

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
    "emulator_capture_statement",
    "emulator_record_storage_change",
    "emulator_attach_buffer",
    "emulator_sync_buffer",
    "emulator_consume_buffers",
    "emulator_claim_refresh",
    "emulator_delta_plan",
    "emulator_delta_refresh",
    "emulator_delta_apply",
    "emulator_delta_rebuild",
    "emulator_drop_delta_state",
)
CHANGE_SCHEMA = "pgtrickle_changes"  # pg_trickle's change-buffer schema (pg_trickle.change_buffer_schema)
PASSWORD_VARIABLES = {OWNER: "DEMO_PASSWORD", WRITER: "DEMO_WRITER_PASSWORD", READER: "DEMO_READER_PASSWORD"}
ENGINES = ("extension", "emulator")
PG_TRICKLE_IMAGE = "ghcr.io/trickle-labs/pg_trickle"
MIN_SERVER_VERSION = 180000
# Every superuser connection resolves names in pg_catalog only (pg_temp explicitly last, so no temporary
# object shadows anything); all other schemas are written out.
SAFE_SEARCH_PATH = "pg_catalog,pg_temp"
# The bootstrap's own ledger: a schema owned by the bootstrap's superuser, with no privilege for anyone else.
LEDGER_SCHEMA = "demo_bootstrap"
# Maintenance databases the service roles must not connect to when this server is the demo's own
# (BOOTSTRAP_PRIVATE_MAINTENANCE_DATABASES=true: the chart's StatefulSet, compose, make preview).
MAINTENANCE_DATABASES = ("postgres", "template1")
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
        values = {role: env_password(var) for role, var in PASSWORD_VARIABLES.items()}  # used exactly
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


def _safe_admin(conninfo: str) -> str:
    """The admin conninfo with search_path pinned by the client: a startup option outranks the settings
    of ALTER DATABASE/ROLE ... SET, which the database's owner controls."""
    params = conninfo_to_dict(conninfo)
    params["options"] = f"{params.get('options', '')} -c search_path={SAFE_SEARCH_PATH}".strip()
    return make_conninfo("", **params)


def _as_owner(conninfo: str, dbname: str, password: str) -> str:
    """Same server as the admin conninfo, as `demo` with its own password (none of the admin's session
    options or client credentials)."""
    params = conninfo_to_dict(conninfo)
    params.update(dbname=dbname, user=OWNER, password=password)
    for admin_only in ("options", "passfile", "sslcert", "sslkey", "service"):
        params.pop(admin_only, None)
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
        private_maintenance_databases: bool = False,
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
        self.private_maintenance_databases = private_maintenance_databases
        self._step = 0

    # -- driver ----------------------------------------------------------------------------------------
    def run(self) -> None:
        admin = self._connect(_safe_admin(self.admin_conninfo))
        try:
            admin.execute("SELECT pg_catalog.pg_advisory_lock(pg_catalog.hashtext(%s))", (LOCK_KEY,))
            self._check_server(admin)
            self._roles(admin)
            self._database(admin)
            if self.private_maintenance_databases:
                self._private_maintenance_databases(admin)
            scenario_admin = self._connect(_safe_admin(_with_dbname(self.admin_conninfo, self.database)))
            try:
                self._require_superuser(scenario_admin)
                owner = self._connect(_as_owner(self.admin_conninfo, self.database, self.passwords.owner))
                try:
                    self._prepare_scenario_database(scenario_admin, owner)
                finally:
                    owner.close()
            finally:
                scenario_admin.close()
        finally:
            admin.close()

    def _prepare_scenario_database(self, admin: psycopg.Connection, owner: psycopg.Connection) -> None:
        self._ledger(admin)
        self._apply_as_owner(admin, owner, "meta", sql_root() / "common" / "meta.sql", once=False)
        self._engine(admin, owner)
        self._grant_catalog_to_owner(admin)
        self._apply_as_owner(
            admin, owner, f"{self.scenario.name}/schema", self.scenario.sql_file("schema.sql"), once=True
        )
        self._apply_as_owner(admin, owner, f"{self.scenario.name}/seed", self.scenario.sql_file("seed.sql"), once=True)
        self._stream_tables(owner)
        self._apply_as_owner(admin, owner, "monitoring", sql_root() / "common" / "monitoring.sql", once=False)
        self._grants(admin, owner)
        self._summary(owner)

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
        superuser = admin.execute("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user").fetchone()[0]
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

    def _require_superuser(self, admin: psycopg.Connection) -> None:
        """The scenario database's owner can attach settings to it (ALTER DATABASE ... SET role = ...):
        the admin session must still be a superuser with the pinned search_path, or nothing is done."""
        row = admin.execute(
            "SELECT r.rolsuper, pg_catalog.current_setting('search_path')"
            " FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
        ).fetchone()
        if not row or not row[0] or row[1].replace(" ", "") != SAFE_SEARCH_PATH:
            raise FatalError(
                f"the admin session in database {self.database} is not a superuser with search_path "
                f"{SAFE_SEARCH_PATH} (settings attached to the database by its owner?): refusing to go on"
            )

    def _roles(self, admin: psycopg.Connection) -> None:
        me = admin.execute("SELECT current_user").fetchone()[0]
        outcome = []
        for role in (OWNER, WRITER, READER):
            exists = admin.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone()
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
            "SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database WHERE datname = %s",
            (self.database,),
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

    def _private_maintenance_databases(self, admin: psycopg.Connection) -> None:
        """On a server that is the demo's own: nobody but superusers (and roles granted it explicitly)
        connects to the maintenance databases, so the service roles reach their scenario database only."""
        done = []
        for name in MAINTENANCE_DATABASES:
            if admin.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone():
                admin.execute(sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
                done.append(name)
        self._say(f"maintenance databases {', '.join(done) or 'none'}: CONNECT revoked from PUBLIC")

    # -- engine ----------------------------------------------------------------------------------------
    def _engine(self, admin: psycopg.Connection, owner: psycopg.Connection) -> None:
        self._check_engine_schemas(admin)
        has_extension = pgtrickle.extension_installed(admin)
        has_schema = pgtrickle.schema_present(admin)
        if self.engine == "extension":
            if has_schema and not has_extension:
                raise FatalError(
                    f"database {self.database} holds the pg_trickle emulator; it cannot also take "
                    "the real extension (drop the database or use --engine emulator)"
                )
            self._require_extension(admin)
            admin.execute("CREATE EXTENSION IF NOT EXISTS pg_trickle")
            self._owner_sees_engine(admin)
            self._say(f"engine: pg_trickle extension {pgtrickle.version(owner)}")
            return
        if has_extension:
            raise FatalError(
                f"database {self.database} has the real pg_trickle extension; "
                "use --engine extension (the emulator is for servers without it)"
            )
        emulator = sql_root() / "emulator" / "pgtrickle_emulator.sql"
        if has_schema:
            detail = "already installed"
            recorded = self._recorded_checksum(admin, "emulator")
            if recorded and recorded != _checksum(emulator.read_text()):
                detail += " (NOTE: pgtrickle_emulator.sql changed since; recreate the database to upgrade it)"
        else:
            text = emulator.read_text()
            with admin.transaction():
                admin.execute(text)
                self._record(admin, "emulator", _checksum(text))
            detail = "installed"
        self._owner_sees_engine(admin)
        self._say(f"engine: emulator {detail}: {pgtrickle.version(owner)}")

    def _owner_sees_engine(self, admin: psycopg.Connection) -> None:
        """The engine's version is read over the owner's connection (a superuser calls nothing in pgtrickle)."""
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA pgtrickle TO {}").format(sql.Identifier(OWNER)))

    def _check_engine_schemas(self, admin: psycopg.Connection) -> None:
        """`demo` owns the database, so it can create schemas: a pgtrickle schema of its own would receive
        the engine's objects (CREATE EXTENSION reuses an existing schema) or pass for an installed emulator."""
        rows = admin.execute(
            """SELECT n.nspname, r.rolname FROM pg_catalog.pg_namespace n
                 JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
                WHERE n.nspname IN ('pgtrickle', 'pgtrickle_changes') AND NOT r.rolsuper ORDER BY 1"""
        ).fetchall()
        if rows:
            owned = ", ".join(f"{schema} (owner {role})" for schema, role in rows)
            raise FatalError(
                f"database {self.database} has engine schemas not owned by a superuser: {owned}; refusing to "
                "install or use an engine there (drop those schemas, or the database)"
            )

    def _require_extension(self, db: psycopg.Connection) -> None:
        available = db.execute("SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pg_trickle'").fetchone()
        preload = db.execute("SELECT pg_catalog.current_setting('shared_preload_libraries')").fetchone()[0]
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
        # Not ALL: TRIGGER on a table the engine (a superuser, or its background worker) writes would let
        # demo's code run with the engine's privileges; TRUNCATE and REFERENCES are not needed either.
        db.execute(
            sql.SQL("REVOKE TRIGGER, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA pgtrickle FROM {}").format(owner)
        )
        db.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgtrickle TO {}").format(owner)
        )
        db.execute(sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA pgtrickle TO {}").format(owner))
        # create_stream_table creates each source's change buffer and capture trigger functions in
        # pgtrickle_changes as the calling role (pg_trickle 0.67: src/api/helpers.rs setup_cdc_for_source,
        # src/cdc/mod.rs create_change_buffer_table): the owner needs USAGE and CREATE there. The extension
        # closes the schema to PUBLIC (src/lib.rs, "F51"); the reader and the writer never get anything on it
        # (revoked here too, so a hand-made grant does not survive a re-run).
        if not db.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (CHANGE_SCHEMA,)).fetchone():
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
        if db.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgtrickle_admin'").fetchone():
            # pg_trickle >= 0.108 ships its own admin role for create/alter/drop.
            db.execute(sql.SQL("GRANT pgtrickle_admin TO {}").format(owner))
        # pg_trickle 0.67 (and the emulator) leave every function EXECUTE-able by PUBLIC: the functions that
        # change stream tables or drive the scheduler are taken back and given to the owner only, so the
        # reader and the writer cannot refresh, alter, drop, resume or tick anything. Looked up by name, so
        # every version's signature is covered.
        routines = db.execute(
            """SELECT p.oid::regprocedure::text FROM pg_catalog.pg_proc p
                WHERE p.pronamespace = 'pgtrickle'::regnamespace AND p.proname = ANY(%s)
                  AND (SELECT rolsuper FROM pg_catalog.pg_roles WHERE oid = p.proowner)
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

    # -- the bootstrap's ledger -------------------------------------------------------------------------
    def _ledger(self, admin: psycopg.Connection) -> None:
        """demo_bootstrap.steps: which steps ran (a second bootstrap changes nothing, and notices an edited
        file). Owned by the superuser and out of everyone else's reach, so demo can neither replace it nor
        make the bootstrap read anything of its own through it."""
        schema = sql.Identifier(LEDGER_SCHEMA)
        with admin.transaction():
            admin.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            # IF NOT EXISTS accepts a schema demo created first: only one of the superuser's own is used.
            owner = admin.execute(
                """SELECT r.rolname, r.rolsuper FROM pg_catalog.pg_namespace n
                     JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner WHERE n.nspname = %s""",
                (LEDGER_SCHEMA,),
            ).fetchone()
            if not owner[1]:
                raise FatalError(
                    f"schema {LEDGER_SCHEMA} in database {self.database} is owned by {owner[0]}, not a "
                    "superuser: refusing to use it as the bootstrap's ledger (drop it, or the database)"
                )
            admin.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
            admin.execute(
                sql.SQL(
                    """CREATE TABLE IF NOT EXISTS {} (
                           step        text PRIMARY KEY,
                           checksum    text NOT NULL,
                           applied_at  timestamptz NOT NULL DEFAULT pg_catalog.now())"""
                ).format(sql.Identifier(LEDGER_SCHEMA, "steps"))
            )

    def _recorded_checksum(self, admin: psycopg.Connection, step: str) -> str | None:
        row = admin.execute("SELECT checksum FROM demo_bootstrap.steps WHERE step = %s", (step,)).fetchone()
        return row[0] if row else None

    def _record(self, admin: psycopg.Connection, step: str, checksum: str) -> None:
        admin.execute(
            """INSERT INTO demo_bootstrap.steps (step, checksum) VALUES (%s, %s)
               ON CONFLICT (step) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = pg_catalog.now()""",
            (step, checksum),
        )

    def _owner_recorded(self, owner: psycopg.Connection, step: str) -> str | None:
        """The owner's copy of a step's record (demo_meta.bootstrap_steps), read over the owner's connection
        only: databases bootstrapped before the ledger moved, or a crash between the owner's commit and the
        ledger's. It only ever tells the bootstrap to skip demo's own SQL, so demo gains nothing by lying."""
        try:
            with owner.transaction():
                row = owner.execute(
                    "SELECT checksum FROM demo_meta.bootstrap_steps WHERE step = %s", (step,)
                ).fetchone()
        except psycopg.Error:
            return None
        return row[0] if row else None

    # -- scenario SQL (as the owner, over its own connection) ---------------------------------------------
    def _apply_as_owner(
        self, admin: psycopg.Connection, owner: psycopg.Connection, step: str, path: Path, *, once: bool
    ) -> None:
        """Runs a SQL file as the owner in one transaction. `once`: applied a single time, recorded in the
        ledger (seed rows must not be inserted twice)."""
        text = path.read_text()
        checksum = _checksum(text)
        if once:
            recorded = self._recorded_checksum(admin, step)
            if recorded is None:
                recorded = self._owner_recorded(owner, step)
                if recorded is not None:
                    self._record(admin, step, recorded)
            if recorded is not None:
                changed = " (NOTE: the file changed since; recreate the database to re-apply it)"
                note = "" if recorded == checksum else changed
                self._say(f"{path.relative_to(sql_root())}: already applied{note}")
                return
        try:
            with owner.transaction():
                owner.execute(text)
                if once:
                    owner.execute(
                        """INSERT INTO demo_meta.bootstrap_steps (step, checksum) VALUES (%s, %s)
                           ON CONFLICT (step) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()""",
                        (step, checksum),
                    )
        except psycopg.Error as exc:
            raise FatalError(f"{path.relative_to(sql_root())} failed: {first_line(exc)}") from None
        self._record(admin, step, checksum)
        self._say(f"{path.relative_to(sql_root())}: applied")

    def _stream_tables(self, owner: psycopg.Connection) -> None:
        path = self.scenario.sql_file("stream_tables.sql")
        before = {st.pgt_name for st in pgtrickle.stream_tables(owner)}
        try:
            with owner.transaction():
                owner.execute(path.read_text())
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
        catalog = {st.pgt_name: st for st in pgtrickle.stream_tables(owner) if st.pgt_schema == "public"}
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
    def _grants(self, admin: psycopg.Connection, owner: psycopg.Connection) -> None:
        reader = sql.Identifier(READER)
        stream_tables = [sql.Identifier(st.pgt_schema, st.pgt_name) for st in pgtrickle.stream_tables(owner)]
        try:
            with owner.transaction():
                self._writer_grants(owner)
                owner.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(reader))
                if stream_tables:
                    owner.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(sql.SQL(", ").join(stream_tables), reader))
                # The advisor counts change-buffer rows as the caller: the reader runs it through the owner's
                # wrapper (sql/common/monitoring.sql).
                owner.execute(sql.SQL("GRANT USAGE ON SCHEMA demo_monitor TO {}").format(reader))
                owner.execute(
                    sql.SQL("GRANT EXECUTE ON FUNCTION demo_monitor.recommend_refresh_mode(text) TO {}").format(reader)
                )
        except psycopg.Error as exc:
            raise FatalError(f"grants on the scenario's tables failed: {first_line(exc)}") from None
        # The catalog belongs to the engine (admin): readers see it, never write it.
        admin.execute(sql.SQL("GRANT USAGE ON SCHEMA pgtrickle TO {}").format(reader))
        admin.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA pgtrickle TO {}").format(reader))
        for function in ("pgtrickle.refresh_efficiency()", "pgtrickle.refresh_timeline(integer)"):
            # pg_trickle 0.108 revokes these two read functions from PUBLIC; readers need them.
            if admin.execute("SELECT pg_catalog.to_regprocedure(%s)", (function,)).fetchone()[0] is not None:
                admin.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(sql.SQL(function), reader))
        if admin.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgtrickle_reader'").fetchone():
            admin.execute(sql.SQL("GRANT pgtrickle_reader TO {}").format(reader))
        written = ", ".join(f"{t}({len(c)})" for t, c in self.scenario.writer_inserts.items())
        updated = ", ".join(f"{t}({len(c)})" for t, c in self.scenario.writer_updates.items())
        self._say(
            f"grants: {WRITER} reads {len(self.scenario.base_tables)} base tables, inserts {written or 'nothing'}, "
            f"updates {updated or 'nothing'} (columns), its own ledger row; "
            f"{READER} reads {len(stream_tables)} stream tables and the pgtrickle catalog"
        )

    def _writer_grants(self, owner: psycopg.Connection) -> None:
        """demo_writer: SELECT on the base tables (the generator loads its lookups), INSERT and UPDATE on
        exactly the columns the generator writes, and nothing else that changes data. Privileges granted
        before (a bootstrap of an older version granted whole tables) are revoked first."""
        writer = sql.Identifier(WRITER)
        base_tables = [sql.Identifier("public", t) for t in self.scenario.base_tables]
        tables = sql.SQL(", ").join(base_tables)
        owner.execute(sql.SQL("REVOKE ALL ON {} FROM {}").format(tables, writer))
        for table in self.scenario.base_tables:
            columns = owner.execute(
                """SELECT a.attname FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""",
                (f"public.{table}",),
            ).fetchall()
            if columns:
                owner.execute(
                    sql.SQL("REVOKE ALL ({}) ON {} FROM {}").format(
                        sql.SQL(", ").join(sql.Identifier(c) for (c,) in columns),
                        sql.Identifier("public", table),
                        writer,
                    )
                )
        owner.execute(sql.SQL("GRANT SELECT ON {} TO {}").format(tables, writer))
        for verb, targets in (("INSERT", self.scenario.writer_inserts), ("UPDATE", self.scenario.writer_updates)):
            for table, columns in targets.items():
                owner.execute(
                    sql.SQL("GRANT {} ({}) ON {} TO {}").format(
                        sql.SQL(verb),
                        sql.SQL(", ").join(map(sql.Identifier, columns)),
                        sql.Identifier("public", table),
                        writer,
                    )
                )
        # Sequences behind the inserted tables' serial/identity columns (the writer draws ids from them).
        sequences = owner.execute(
            """SELECT sn.nspname, s.relname, t.relname
                 FROM pg_catalog.pg_depend d
                 JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
                 JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
                 JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
                 JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
                WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass
                  AND d.deptype IN ('a', 'i') AND tn.nspname = 'public' AND t.relname = ANY(%s)""",
            (list(self.scenario.base_tables),),
        ).fetchall()
        for schema, sequence, table in sequences:
            name = sql.Identifier(schema, sequence)
            owner.execute(sql.SQL("REVOKE ALL ON SEQUENCE {} FROM {}").format(name, writer))
            if table in self.scenario.writer_inserts:
                owner.execute(sql.SQL("GRANT USAGE ON SEQUENCE {} TO {}").format(name, writer))
        # The generator's ledger: row-level security (sql/common/meta.sql) limits it to its own run's row.
        owner.execute(sql.SQL("GRANT USAGE ON SCHEMA public, demo_meta TO {}").format(writer))
        owner.execute(sql.SQL("REVOKE ALL ON demo_meta.generator_progress FROM {}").format(writer))
        owner.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON demo_meta.generator_progress TO {}").format(writer))

    def _summary(self, owner: psycopg.Connection) -> None:
        engine = pgtrickle.engine_of(pgtrickle.version(owner))
        count = len(pgtrickle.stream_tables(owner))
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
    private_maintenance_databases: bool = False,
) -> None:
    Bootstrap(
        admin_conninfo,
        scenario,
        engine,
        passwords,
        database=database,
        report=report,
        connect_timeout=connect_timeout,
        private_maintenance_databases=private_maintenance_databases,
    ).run()
