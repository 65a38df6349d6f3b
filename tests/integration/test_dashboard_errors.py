"""The dashboard when the database refuses it or is gone: 503 with a generic JSON error, never the
database's own text; /readyz 503; recovery without a restart (the real gunicorn process)."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from devenv.postgres import LocalPostgres
from services.common import pgtrickle
from services.dashboard.app import close_app, create_app
from services.dashboard.config import load_config
from tests.dashboard_support import DashboardProcess, dashboard_env, scenario_stack, wait_for

pytestmark = pytest.mark.slow


def test_wrong_password_gives_a_generic_503_without_database_text(demo_db):
    db = demo_db("ecommerce")
    url = db.reader_url.replace("reader-test-pw", "wrong-password")
    app = create_app(load_config(dashboard_env(url, "ecommerce")))
    try:
        client = app.test_client()
        response = client.get("/api/snapshot")
        assert response.status_code == 503
        body = response.get_json()
        assert body["error"] == "Service Unavailable"
        assert body["database"]["state"] == "unreachable"
        text = response.get_data(as_text=True).lower()
        for leak in ("password", "fatal", "authentication", "traceback", "psycopg", "demo_reader"):
            assert leak not in text, leak
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "password" not in ready.get_data(as_text=True).lower()
        assert client.get("/api/dag").status_code == 503
    finally:
        close_app(app)


def test_readyz_needs_the_scenarios_stream_tables_not_just_a_database(demo_db):
    db = demo_db("ecommerce")
    # Reachable, but the stream tables of another scenario: not ready (and the snapshot says why, generically).
    wrong = create_app(load_config(dashboard_env(db.reader_url, "finance")))
    right = create_app(load_config(dashboard_env(db.reader_url, "ecommerce")))
    try:
        ready = wrong.test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json() == {"ready": False, "detail": "11 of the scenario's 11 stream tables are missing"}
        snapshot = wrong.test_client().get("/api/snapshot")
        assert snapshot.status_code == 503 and snapshot.get_json()["database"]["state"] == "not_ready"
        ok = wait_for(lambda: (r := right.test_client().get("/readyz")).status_code == 200 and r, 10, "readiness")
        assert ok.get_json() == {"ready": True, "detail": "database reachable, 6 stream tables present"}
        # One stream table gone (as the owner drops it): not ready any more.
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            pgtrickle.drop_stream_table(conn, "top_10_customers")
        gone = right.test_client().get("/readyz")
        assert gone.status_code == 503
        assert gone.get_json()["detail"] == "1 of the scenario's 6 stream tables are missing"
    finally:
        close_app(wrong)
        close_app(right)
    # A database without the pgtrickle catalog at all (the server's maintenance database).
    bare = create_app(load_config(dashboard_env(make_conninfo(db.reader_url, dbname="postgres"), "ecommerce")))
    try:
        ready = bare.test_client().get("/readyz")
        assert ready.status_code == 503
        assert ready.get_json() == {"ready": False, "detail": "the pgtrickle catalog cannot be read"}
    finally:
        close_app(bare)


@pytest.fixture(scope="module")
def own_server():
    """A server of its own: this module stops and starts it."""
    server = LocalPostgres()
    server.start()
    yield server
    server.destroy()


def test_database_outage_503_then_recovery_under_gunicorn(own_server, output_dir):
    with (
        scenario_stack(own_server.admin_url, "ecommerce") as stack,
        DashboardProcess(dashboard_env(stack, "ecommerce"), workers=2) as dash,
    ):
        wait_for(lambda: dash.get("/readyz")[0] == 200, 20, "readiness")
        wait_for(lambda: dash.get("/api/snapshot")[0] == 200, 20, "a snapshot")
        own_server.stop()
        try:
            wait_for(lambda: dash.get("/readyz")[0] == 503, 15, "/readyz 503 while the database is down")
            _, body = wait_for(lambda: (r := dash.get("/api/snapshot"))[0] == 503 and r, 15, "a 503 snapshot")
            assert body["database"]["state"] == "unreachable" and body["database"]["since"]
            assert "connection" not in json.dumps(body).lower()
        finally:
            own_server.start()
        wait_for(lambda: dash.get("/readyz")[0] == 200, 40, "/readyz 200 after the database is back")
        wait_for(lambda: dash.get("/api/snapshot")[0] == 200, 40, "snapshots after the database is back")
        code, seconds = dash.terminate()
        log = dash.log_text()
    assert code == 0, log[-2000:]
    assert seconds < 10
    records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    assert len(records) == len([line for line in log.splitlines() if line.strip()]), "a log line is not JSON"
    access = [r for r in records if r.get("msg") == "request"]
    assert any(r["path"] == "/readyz" and r["status"] == 503 for r in access)
    assert all({"method", "path", "status", "duration_ms"} <= set(r) for r in access)
    (Path(output_dir) / "dashboard.log").write_text(log)
