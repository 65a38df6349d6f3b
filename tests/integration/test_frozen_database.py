"""Issue 14, finding 3: deadlines hold when the database freezes.

A real PostgreSQL 18 server of this module's own (so that freezing it stalls no other test) is stopped with
SIGSTOP, every process of it (the postmaster and its backends, as `docker pause` would), and always resumed with
SIGCONT in a `finally`. A frozen server enforces no statement_timeout; only a client-side deadline answers.

The bounds are generous (the configured timeout + a few seconds) to detect a hang, not to benchmark; the SIGTERM
bounds are the documented stop times measured from the signal.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager, suppress
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from devenv.postgres import LocalPostgres, PostgresNotAvailable, free_port
from tests.generator_support import GeneratorProcess
from tests.support import ROOT, TEST_PASSWORDS, missing_prerequisite

pytestmark = pytest.mark.slow
HANG_MARGIN = 3.0  # seconds on top of a configured timeout before we call it a hang


@pytest.fixture(scope="module")
def frozen_target():
    """(server, reader URL, writer URL) of a bootstrapped ecommerce database (emulator) on a private server."""
    from services.bootstrap.core import RolePasswords, bootstrap
    from services.common.scenarios import get_scenario

    server = LocalPostgres()
    try:
        server.start()
    except PostgresNotAvailable as exc:
        missing_prerequisite(str(exc))
    try:
        passwords = RolePasswords(
            TEST_PASSWORDS["DEMO_PASSWORD"],
            TEST_PASSWORDS["DEMO_WRITER_PASSWORD"],
            TEST_PASSWORDS["DEMO_READER_PASSWORD"],
        )
        bootstrap(server.admin_url, get_scenario("ecommerce"), "emulator", passwords, report=lambda _: None)

        def url(user: str, password: str) -> str:
            params = conninfo_to_dict(server.admin_url)
            params.update(dbname="ecommerce_demo", user=user, password=password)
            return make_conninfo("", **params)

        yield server, url("demo_reader", passwords.reader), url("demo_writer", passwords.writer)
    finally:
        server.destroy()


def _server_pids(server: LocalPostgres) -> list[int]:
    postmaster = int((Path(server.data_dir) / "postmaster.pid").read_text().split()[0])
    pids = [postmaster]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            ppid = next((line.split()[1] for line in status.splitlines() if line.startswith("PPid:")), None)
            if ppid == str(postmaster):
                pids.append(int(entry.name))
    return pids


@contextmanager
def frozen(server: LocalPostgres):
    """Every process of the server SIGSTOPped for the block; SIGCONT always follows."""
    pids = _server_pids(server)
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in _server_pids(server) + pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def timed(call, bound: float):
    """(result, seconds) of call(), failing (instead of hanging) when it takes longer than `bound`."""
    box: dict = {}

    def run():
        started = time.monotonic()
        try:
            box["value"] = call()
        except BaseException as exc:
            box["error"] = exc
        box["elapsed"] = time.monotonic() - started

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"still waiting after {bound:.1f} s: the deadline did not hold"
    if "error" in box:
        raise box["error"]
    return box["value"], box["elapsed"]


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_exporter_scrape_and_readiness_answer_within_their_deadline(frozen_target):
    from services.exporter.config import load_config
    from services.exporter.main import build

    server, reader_url, _ = frozen_target
    config = load_config({"DATABASE_URL": reader_url, "EXPORTER_SCRAPE_TIMEOUT": "2"})
    stop = threading.Event()
    pool, _analyses, _collector, app = build(config, stop)
    pool.open(wait=True, timeout=10)
    http = app.test_client()
    try:
        first = http.get("/metrics").get_data(as_text=True)
        assert "pg_trickle_up 1.0" in first, first[:500]
        with frozen(server):
            for _ in range(2):  # the second scrape finds the first one still stuck on the server
                response, elapsed = timed(lambda: http.get("/metrics"), config.scrape_timeout + HANG_MARGIN)
                text = response.get_data(as_text=True)
                assert "pg_trickle_up 0.0" in text, text[:500]
                assert 'pg_trickle_exporter_scrape_errors_total{stage="deadline"}' in text
                assert elapsed < config.scrape_timeout + HANG_MARGIN
                print(f"\nfrozen database: exporter /metrics answered in {elapsed:.2f} s (EXPORTER_SCRAPE_TIMEOUT=2)")
            response, elapsed = timed(lambda: http.get("/readyz"), 3.0 + HANG_MARGIN)
            assert response.status_code == 503, response.get_json()
            print(f"frozen database: exporter /readyz answered 503 in {elapsed:.2f} s")
        # Once the server resumes, scrapes recover on their own.
        _wait(lambda: "pg_trickle_up 1.0" in http.get("/metrics").get_data(as_text=True), 30, "pg_trickle_up 1")
    finally:
        stop.set()
        pool.close(timeout=2)


def test_dashboard_snapshot_and_readiness_answer_within_their_deadline(frozen_target):
    from services.dashboard.app import close_app, create_app
    from services.dashboard.config import load_config

    server, reader_url, _ = frozen_target
    config = load_config({"DATABASE_URL": reader_url, "DASHBOARD_STATEMENT_TIMEOUT_MS": "1500"})
    app = create_app(config)
    http = app.test_client()
    bound = config.statement_timeout_ms / 1000 + HANG_MARGIN
    try:
        _wait(lambda: http.get("/readyz").status_code == 200, 20, "a ready dashboard")
        assert http.get("/api/snapshot").status_code == 200
        with frozen(server):
            time.sleep(1.1)  # the cached snapshot expires: the next request computes one
            for _ in range(2):
                response, elapsed = timed(lambda: http.get("/api/snapshot"), bound)
                assert response.status_code == 503 and response.get_json()["database"]["state"] == "unreachable"
                print(f"\nfrozen database: dashboard /api/snapshot answered 503 in {elapsed:.2f} s (timeout 1.5 s)")
                time.sleep(1.1)
            response, elapsed = timed(lambda: http.get("/readyz"), bound)
            assert response.status_code == 503 and response.get_json()["ready"] is False
            print(f"frozen database: dashboard /readyz answered 503 in {elapsed:.2f} s")
        _wait(lambda: http.get("/api/snapshot").status_code == 200, 30, "a snapshot after the server resumed")
    finally:
        close_app(app)


def test_generator_stops_within_5_s_of_sigterm_while_the_database_is_frozen(frozen_target):
    server, _, writer_url = frozen_target
    with GeneratorProcess(writer_url, "--rate 200 --burst-interval 0 --slow-change-every 0") as gen:
        gen.wait_ready()
        with frozen(server):
            time.sleep(0.5)  # a batch is in flight, waiting for the frozen server
            code, elapsed = gen.terminate(signal.SIGTERM, timeout=30)
        assert code == 0, gen.log_text()[-2000:]
        assert elapsed < 5.0, f"SIGTERM -> exit took {elapsed:.2f} s (README: within 5 s)"
        print(f"\nfrozen database: generator SIGTERM -> exit {elapsed:.2f} s")


def test_exporter_stops_within_5_s_of_sigterm_while_the_database_is_frozen(frozen_target):
    server, reader_url, _ = frozen_target
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATABASE_URL": reader_url,
        "EXPORTER_HOST": "127.0.0.1",
        "EXPORTER_PORT": str(port),
        "EXPORTER_SCRAPE_TIMEOUT": "30",  # a scrape in flight would outlast the stop budget on its own
    }
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "services.exporter"], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:

            def scrape(timeout: float = 5):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as response:
                    return response.read().decode()

            def up() -> bool:
                try:
                    return "pg_trickle_up 1.0" in scrape()
                except OSError:
                    return False

            _wait(up, 30, "the exporter's first good scrape")
            with frozen(server):
                threading.Thread(target=lambda: _ignore(scrape, 60), daemon=True).start()  # stuck on the server
                time.sleep(0.5)
                started = time.monotonic()
                proc.send_signal(signal.SIGTERM)
                code = proc.wait(30)
                elapsed = time.monotonic() - started
            log.seek(0)
            assert code == 0, log.read().decode()[-2000:]
            assert elapsed < 5.0, f"SIGTERM -> exit took {elapsed:.2f} s"
            print(f"\nfrozen database: exporter SIGTERM -> exit {elapsed:.2f} s")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def _ignore(call, *args):
    with suppress(OSError, urllib.error.URLError):
        call(*args)


def test_dashboard_stops_within_its_graceful_timeout_while_the_database_is_frozen(frozen_target):
    from tests.dashboard_support import DashboardProcess, dashboard_env

    server, reader_url, _ = frozen_target
    with DashboardProcess(dashboard_env(reader_url, "ecommerce", DASHBOARD_GRACEFUL_TIMEOUT="5")) as dash:
        _wait(lambda: dash.get("/api/snapshot")[0] == 200, 30, "a first snapshot")
        with frozen(server):
            time.sleep(1.1)
            threading.Thread(target=lambda: _ignore(dash.get, "/api/snapshot", 60), daemon=True).start()
            time.sleep(0.3)
            code, elapsed = dash.terminate(timeout=30)
        assert code == 0, dash.log_text()[-2000:]
        assert elapsed < 5.0 + 1.0, f"SIGTERM -> exit took {elapsed:.2f} s (DASHBOARD_GRACEFUL_TIMEOUT=5)"
        print(f"\nfrozen database: dashboard SIGTERM -> exit {elapsed:.2f} s")


def test_frozen_helper_really_freezes(frozen_target):
    """The premise of this module: while frozen, a query on an open connection gets no answer."""
    server, reader_url, _ = frozen_target
    with psycopg.connect(reader_url, autocommit=True) as conn:
        conn.execute("SELECT 1")
        with frozen(server):
            done = threading.Event()
            threading.Thread(target=lambda: (conn.execute("SELECT 1"), done.set()), daemon=True).start()
            assert not done.wait(1.5), "the server answered while SIGSTOPped"
        assert done.wait(10), "the server did not answer after SIGCONT"
