"""Helpers for the dashboard tests: a scenario stack shared per module (bootstrapped database, emulator
scheduler, generator) and the dashboard as a real `python -m services.dashboard` (gunicorn) process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devenv.postgres import free_port
from tests.generator_support import GeneratorProcess
from tests.support import ROOT, TEST_PASSWORDS, missing_prerequisite

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def engine_target(request) -> tuple[str, str]:
    """(admin URL, engine): TEST_DATABASE_URL with the real pg_trickle when set (make test-real), else the
    session's local server with the emulator (the same rule as conftest's engine_server, module-scoped)."""
    real = os.environ.get("TEST_DATABASE_URL")
    if real:
        return real, "extension"
    return request.getfixturevalue("pg_server").admin_url, "emulator"


@dataclass(frozen=True)
class Stack:
    scenario: str
    database: str
    engine: str
    admin_url: str
    owner_url: str
    writer_url: str
    reader_url: str
    generator: GeneratorProcess


def _role_url(admin_url: str, dbname: str, user: str | None, password: str | None) -> str:
    params = conninfo_to_dict(admin_url)
    params["dbname"] = dbname
    if user is not None:
        params.update(user=user, password=password)
    return make_conninfo("", **params)


@contextmanager
def scenario_stack(admin_url: str, scenario: str, engine: str = "emulator", generator_flags: str = ""):
    """Bootstraps `scenario` into a fresh database, drives the emulator's scheduler (200 ms ticks) and runs
    the generator (rate 20, bursts every 5 s); drops everything afterwards."""
    from devenv.scheduler import EmulatorScheduler
    from services.bootstrap.core import RolePasswords, bootstrap
    from services.common.scenarios import get_scenario

    passwords = RolePasswords(
        TEST_PASSWORDS["DEMO_PASSWORD"], TEST_PASSWORDS["DEMO_WRITER_PASSWORD"], TEST_PASSWORDS["DEMO_READER_PASSWORD"]
    )
    database = f"{scenario}_dash_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    bootstrap(admin_url, get_scenario(scenario), engine, passwords, database=database, report=lambda _: None)
    admin = _role_url(admin_url, database, None, None)
    stack = None
    try:
        with ExitStack() as cleanup:
            if engine == "emulator":
                scheduler = EmulatorScheduler(admin, tick_interval_ms=200).start()
                cleanup.callback(scheduler.stop)
            flags = (
                f"--scenario {scenario} --rate 20 --seed 11 --burst-interval 5 --slow-change-every 2 {generator_flags}"
            )
            generator = cleanup.enter_context(
                GeneratorProcess(_role_url(admin_url, database, "demo_writer", passwords.writer), flags)
            )
            generator.wait_ready()
            stack = Stack(
                scenario,
                database,
                engine,
                admin,
                _role_url(admin_url, database, "demo", passwords.owner),
                _role_url(admin_url, database, "demo_writer", passwords.writer),
                _role_url(admin_url, database, "demo_reader", passwords.reader),
                generator,
            )
            yield stack
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def dashboard_env(stack_or_url, scenario: str, generator_url: str | None = None, **extra: str) -> dict[str, str]:
    url = stack_or_url if isinstance(stack_or_url, str) else stack_or_url.reader_url
    env = {"DATABASE_URL": url, "DEMO_SCENARIO": scenario, "LOG_LEVEL": "INFO", **extra}
    if generator_url:
        env["GENERATOR_URL"] = generator_url
    return env


class DashboardProcess:
    """`python -m services.dashboard` (gunicorn) on 127.0.0.1:<free port>, its JSON log in a temp file."""

    def __init__(self, env: dict[str, str], workers: int = 1, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_file = tempfile.NamedTemporaryFile(prefix="dashboard-", suffix=".log", delete=False)  # noqa: SIM115
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "DASHBOARD_HOST": "127.0.0.1",
            "DASHBOARD_PORT": str(self.port),
            "DASHBOARD_WORKERS": str(workers),
            "DASHBOARD_GRACEFUL_TIMEOUT": "5",
            **env,
        }
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> DashboardProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.dashboard"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"dashboard exited early:\n{self.log_text()}"
            try:
                if self.get("/healthz")[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"dashboard not serving within 30 s:\n{self.log_text()}")

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log_file.close()
        os.unlink(self.log_file.name)

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict | str]:
        try:
            with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout), time.monotonic() - started

    def log_text(self) -> str:
        with open(self.log_file.name) as handle:
            return handle.read()


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@contextmanager
def chromium_browser():
    """Playwright driving Debian's chromium (never a downloaded browser)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_prerequisite("playwright is not installed (pip install -e '.[test]')")
    if not os.path.exists(CHROMIUM):
        missing_prerequisite(f"{CHROMIUM} not found (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="dash-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, args=CHROMIUM_FLAGS, viewport={"width": 1440, "height": 900}
        )
        try:
            yield context
        finally:
            context.close()


class PageWatch:
    """Console errors, page errors, CSP violations and dialogs (alert()) of one page."""

    def __init__(self, page):
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

        def on_dialog(dialog):
            self.dialogs.append(dialog.message)
            dialog.dismiss()

        page.on("dialog", on_dialog)
