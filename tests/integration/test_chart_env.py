"""The chart's environment really drives the services: the bootstrap Job's and the generator Deployment's
variables, taken from the rendered chart (secrets resolved to the test passwords), run the services from a
copy of the image's file layout (/app/services, /app/sql, DEMO_SQL_DIR) against PostgreSQL 18.

Deviations from a cluster, each forced by this machine: the host and port are the local server's, the engine
is the emulator (no pg_trickle here), the database gets a unique name so tests can run side by side, and the
generator's HTTP port is a free one on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid

import psycopg
import pytest
from psycopg import sql

from devenv.postgres import free_port
from tests.deploy_support import chart_env
from tests.support import ROOT, TEST_PASSWORDS


@pytest.fixture(scope="module")
def image_root(tmp_path_factory):
    """What the Dockerfiles put in /app: services/ and sql/ (no tests, no devenv, no pyproject)."""
    app = tmp_path_factory.mktemp("image") / "app"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile")
    shutil.copytree(ROOT / "services", app / "services", ignore=ignore)
    shutil.copytree(ROOT / "sql", app / "sql", ignore=ignore)
    return app


def run_service(image_root, name: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    base["DEMO_SQL_DIR"] = str(image_root / "sql")  # the Dockerfiles' ENV
    return subprocess.run(
        [sys.executable, "-m", f"services.{name}"],
        cwd=image_root,  # the Dockerfiles' WORKDIR: the copy is imported, not the checkout
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_image_layout_imports_its_own_copy(image_root):
    result = subprocess.run(
        [sys.executable, "-c", "import services.common.scenarios as s; print(s.__file__); print(s.sql_root())"],
        cwd=image_root,
        env={"PATH": os.environ["PATH"], "DEMO_SQL_DIR": str(image_root / "sql")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    module, sql_root = result.stdout.split()
    assert module.startswith(str(image_root)) and sql_root == str(image_root / "sql")


@pytest.mark.parametrize("scenario", ["fraud"])
def test_bootstrap_and_generator_run_with_the_charts_environment(pg_server, image_root, scenario):
    database = f"{scenario}_chartenv_{uuid.uuid4().hex[:8]}"
    local = {"PGHOST": pg_server.host, "PGPORT": str(pg_server.port)}
    try:
        env = chart_env("Job", "bootstrap", scenario)
        assert env["DEMO_SCENARIO"] == scenario and env["PGUSER"] == "postgres"
        env.update(local, DEMO_ENGINE="emulator", DEMO_DATABASE=database, BOOTSTRAP_CONNECT_TIMEOUT="10")
        assert env["BOOTSTRAP_PRIVATE_MAINTENANCE_DATABASES"] == "true"  # the chart's StatefulSet is its own server
        env["BOOTSTRAP_PRIVATE_MAINTENANCE_DATABASES"] = "false"  # the test suite's shared server is not
        boot = run_service(image_root, "bootstrap", env)
        assert boot.returncode == 0, boot.stdout + boot.stderr

        env = chart_env("Deployment", "generator", scenario)
        assert env["PGUSER"] == "demo_writer" and "PGPASSWORD" not in env  # the password comes from its own variable
        env.update(local, PGDATABASE=database, GENERATOR_DURATION="3", GENERATOR_SEED="11")
        env.update(GENERATOR_HTTP_HOST="127.0.0.1", GENERATOR_HTTP_PORT=str(free_port()))
        with psycopg.connect(pg_server.url(database)) as conn:
            (before,) = conn.execute("SELECT count(*) FROM transactions").fetchone()
        gen = run_service(image_root, "generator", env)
        assert gen.returncode == 0, gen.stdout + gen.stderr
        with psycopg.connect(pg_server.url(database)) as conn:
            (after,) = conn.execute("SELECT count(*) FROM transactions").fetchone()
            (writer,) = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = 'demo_writer' AND datname = %s", [database]
            ).fetchone()
        assert after > before, (before, after, gen.stderr[-2000:])
        assert writer == 0  # it stopped and closed its connections
    finally:
        with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


HTTP_SERVICES = {
    # service: (kind, variables to point it at 127.0.0.1:<free port>)
    "dashboard": ("DASHBOARD_HOST", "DASHBOARD_PORT"),
    "exporter": ("EXPORTER_HOST", "EXPORTER_PORT"),
}


@pytest.mark.parametrize("service", sorted(HTTP_SERVICES))
def test_reader_services_get_ready_with_the_charts_environment(pg_server, demo_db, image_root, service):
    """The dashboard and the exporter, started with the chart's variables (demo_reader, its password from the
    Secret), turn ready against a bootstrapped database and stop on SIGTERM."""
    import time
    import urllib.request

    db = demo_db("ecommerce")
    env = chart_env("Deployment", service, "ecommerce")
    assert env["PGUSER"] == "demo_reader" and "DEMO_READER_PASSWORD" in env
    env.pop("GENERATOR_URL", None)  # the generator Service's name does not resolve here
    host_var, port_var = HTTP_SERVICES[service]
    port = free_port()
    env.update(PGHOST=pg_server.host, PGPORT=str(pg_server.port), PGDATABASE=db.database)
    env.update({host_var: "127.0.0.1", port_var: str(port)})
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    base["DEMO_SQL_DIR"] = str(image_root / "sql")
    proc = subprocess.Popen(
        [sys.executable, "-m", f"services.{service}"],
        cwd=image_root,
        env={**base, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline, status = time.monotonic() + 60, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as response:
                    status = response.status
                    break
            except OSError:
                time.sleep(0.5)
        assert status == 200, f"{service} never became ready"
    finally:
        proc.terminate()
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
    assert status == 200, output[-3000:]
    assert proc.returncode == 0, output[-3000:]


def test_operator_reads_the_charts_environment(image_root):
    """The operator's settings from the chart's variables: its namespace (downward API), port, owner role."""
    env = chart_env("Deployment", "operator", "finance")
    env.update(PGHOST="127.0.0.1", PGPORT="5432")
    code = (
        "from services.operator.config import load_config; c = load_config(); "
        "from psycopg.conninfo import conninfo_to_dict as d; p = d(c.conninfo); "
        "print(c.namespace, c.health_port, c.sync_interval, c.scenario, p['user'], p['dbname'], p['password'])"
    )
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "LANG", "TMPDIR"}}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=image_root, env={**base, **env}, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "pgtd", "8081", "10.0", "finance", "demo", "finance_demo", TEST_PASSWORDS["DEMO_PASSWORD"]
    ]  # fmt: skip
