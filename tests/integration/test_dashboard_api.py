"""The dashboard's JSON API (Flask test client) against PostgreSQL 18 + the emulator + a running generator,
one shared stack per scenario."""

from __future__ import annotations

import re
import threading
import time

import psycopg
import pytest

from services.common.scenarios import get_scenario
from services.dashboard.app import CONTENT_SECURITY_POLICY, close_app, create_app
from services.dashboard.config import load_config
from tests.dashboard_support import dashboard_env, engine_target, scenario_stack, wait_for

pytestmark = pytest.mark.slow
SCENARIOS = ("ecommerce", "fraud", "finance")


@pytest.fixture(scope="module", params=SCENARIOS)
def stack(request):
    admin_url, engine = engine_target(request)
    with scenario_stack(admin_url, request.param, engine) as stack:
        yield stack


@pytest.fixture(scope="module")
def app(stack):
    config = load_config(dashboard_env(stack, stack.scenario, f"http://127.0.0.1:{stack.generator.port}"))
    app = create_app(config)
    yield app
    close_app(app)


@pytest.fixture
def client(app):
    return app.test_client()


def _snapshot(client, timeout: float = 15) -> dict:
    def ready():
        response = client.get("/api/snapshot")
        return response.status_code == 200 and response.get_json()

    return wait_for(ready, timeout, "a 200 from /api/snapshot")


def test_snapshot_has_every_panel_with_data_the_dag_and_the_internals(client, stack):
    scenario = get_scenario(stack.scenario)
    snap = _snapshot(client)
    assert snap["scenario"]["name"] == stack.scenario
    if stack.engine == "emulator":
        assert snap["engine"]["name"] == "emulator"
        assert snap["engine"]["label"] == "emulator: full recomputation, differential figures not measured"
    else:
        assert snap["engine"]["name"] == "pg_trickle"
        assert snap["engine"]["label"] == f"pg_trickle {snap['engine']['version']}"
    assert snap["database"]["state"] == "ok"
    assert snap["tiles"] and all(t["label"] for t in snap["tiles"])
    assert snap["panels"]
    for panel in snap["panels"]:
        # Every panel reads stream tables of this scenario, and has something to show.
        assert set(panel["sources"]) <= {st.name for st in scenario.stream_tables}, panel["id"]
        if panel["id"] == "high_risk_feed":
            continue  # rows appear with the first burst; the browser test waits for them
        has_rows = panel["table"] is not None and len(panel["table"]["rows"]) > 0
        has_points = panel["chart"] is not None and len(panel["chart"]["labels"]) > 0
        assert has_rows or has_points, f"panel {panel['id']} is empty"

    dag = snap["dag"]
    stream_tables = {n["name"] for n in dag["nodes"] if n["kind"] == "stream_table"}
    assert stream_tables == {st.name for st in scenario.stream_tables}
    sources = {n["name"] for n in dag["nodes"] if n["kind"] == "source"}
    assert sources == set(scenario.base_tables)
    ids = {n["id"] for n in dag["nodes"]}
    assert all(e["from"] in ids and e["to"] in ids for e in dag["edges"])
    with psycopg.connect(stack.owner_url) as conn:
        (edge_count,) = conn.execute("SELECT count(*) FROM pgtrickle.pgt_dependencies").fetchone()
    assert len(dag["edges"]) == edge_count
    layer = {n["id"]: n["layer"] for n in dag["nodes"]}
    assert all(layer[e["from"]] < layer[e["to"]] for e in dag["edges"]), "an edge points backwards"
    expected_depth = {"ecommerce": 3, "fraud": 5, "finance": 11}[stack.scenario]  # sources + DAG levels
    assert dag["layers"] == expected_depth

    internals = snap["internals"]
    assert {row["name"] for row in internals["advisor"]} == {st.name for st in scenario.stream_tables}
    for row in internals["advisor"]:
        verdict = r"\u2713 KEEP (DIFFERENTIAL|FULL|IMMEDIATE)|\u2192 SWITCH TO (DIFFERENTIAL|FULL)"
        assert re.fullmatch(verdict, row["verdict"]), row
        assert row["keep"] is row["verdict"].startswith("\u2713")
        assert row["confidence"] in ("high", "medium", "low")
    assert internals["refreshes"] and all(r["status"] in ("COMPLETED", "FAILED") for r in internals["refreshes"])
    assert {row["name"] for row in internals["efficiency"]} == {st.name for st in scenario.stream_tables}
    assert any(h["check"] == "scheduler_running" for h in internals["health"])
    assert [c["id"] for c in snap["history"]["charts"]]


def test_dag_and_internals_endpoints_are_slices_of_the_snapshot(client):
    _snapshot(client)
    dag = client.get("/api/dag")
    internals = client.get("/api/internals")
    assert dag.status_code == internals.status_code == 200
    assert set(dag.get_json()) == {"generated_at", "dag"}
    assert set(internals.get_json()) == {"generated_at", "internals"}
    assert dag.get_json()["dag"]["nodes"]


def test_figures_move_and_history_fills_while_the_generator_writes(client):
    first = _snapshot(client)

    def moved():
        snap = client.get("/api/snapshot").get_json()
        return snap if snap["tiles"] != first["tiles"] else None

    later = wait_for(moved, 10, "a key figure to change")
    charts = later["history"]["charts"]
    assert all(len(c["times"]) >= 1 for c in charts if c["mode"] == "value")
    wait_for(
        lambda: all(len(c["times"]) >= 2 for c in client.get("/api/snapshot").get_json()["history"]["charts"]),
        10,
        "two history samples",
    )


@pytest.mark.parametrize("stack", ["finance"], indirect=True)  # the price board is finance's
def test_finance_price_board_shows_tick_directions_and_flashes_ticked_rows(client, stack):

    def board():
        snap = client.get("/api/snapshot").get_json()
        return next(p for p in snap["panels"] if p["id"] == "price_snapshot")

    first = board()
    assert first["table"]["key"] == "tick"
    assert all(row["direction"] in ("up", "down", "flat") for row in first["table"]["rows"])
    before = {row["symbol"]: row["tick"] for row in first["table"]["rows"]}

    def ticked():
        rows = board()["table"]["rows"]
        moved = [row for row in rows if row["tick"] != before[row["symbol"]]]
        return moved if any(row["direction"] in ("up", "down") for row in moved) else None

    # The generator moves one price every 2 s here: a ticked row gets a new key (the page flashes it) and
    # an arrow (it moved while this process watched).
    for row in wait_for(ticked, 20, "a tick on the price board"):
        assert row["tick"] == f"{row['symbol']}@{row['price_updated_at']}"


def test_snapshot_is_computed_at_most_once_a_second_however_many_clients(app, client):
    service = app.extensions["dashboard"]
    app.extensions["dashboard_sampler"].stop()  # only the requests below may compute snapshots here
    _snapshot(client)
    time.sleep(1.05)  # the cached snapshot has expired
    before = service.computations
    results = []
    barrier = threading.Barrier(20)

    def viewer():
        barrier.wait()
        results.append(app.test_client().get("/api/snapshot").get_json()["generated_at"])

    threads = [threading.Thread(target=viewer) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(results) == 20
    assert service.computations - before == 1, "concurrent requests did not coalesce"
    assert len(set(results)) <= 2  # the new snapshot, or the previous one while the new one was computed
    time.sleep(1.05)
    client.get("/api/snapshot")
    assert service.computations - before == 2


def test_security_headers_on_the_page_and_the_api(client, stack):
    for path in ("/", "/api/snapshot", "/static/js/app.js", "/does-not-exist"):
        response = client.get(path)
        csp = response.headers["Content-Security-Policy"]
        assert csp == CONTENT_SECURITY_POLICY
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    page = client.get("/").get_data(as_text=True)
    assert "<script>" not in page and " style=" not in page and "<style" not in page
    assert re.findall(r'<script src="/static/[^"]+"', page)
    assert 'id="controls"' in page
    assert "cdn" not in page.lower() and "https://" not in page


def test_health_readiness_and_json_errors(client):
    assert client.get("/healthz").get_json() == {"status": "ok", "service": "dashboard"}
    ready = wait_for(lambda: client.get("/readyz").status_code == 200 and client.get("/readyz"), 10, "readiness")
    assert ready.get_json()["ready"] is True
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.get_json()["error"] == "Not Found"
    wrong = client.post("/api/snapshot")
    assert wrong.status_code == 405 and wrong.is_json


def test_generator_controls_are_proxied(client, stack):
    state = client.get("/api/control")
    assert state.status_code == 200 and state.get_json()["scenario"] == stack.scenario
    bursts_before = stack.generator.control()["bursts_committed"]
    assert client.post("/api/control/burst", json={}).status_code == 202
    wait_for(lambda: stack.generator.control()["bursts_committed"] > bursts_before, 10, "the burst to be written")
    answer = client.post("/api/control/rate", json={"rate": 25})
    assert answer.status_code == 200 and answer.get_json()["rate"] == 25
    assert stack.generator.control()["rate"] == 25
    for bad in ({"rate": 0}, {"rate": "fast"}, {"rate": True}, {}, []):
        response = client.post("/api/control/rate", json=bad)
        assert response.status_code == 400 and response.get_json()["error"] == "Bad Request", bad
    too_fast = client.post("/api/control/rate", json={"rate": 10**9})  # the generator's own bound
    assert too_fast.status_code == 400
    assert client.post("/api/control/pause", json={}).get_json() == {"paused": True}
    assert stack.generator.control()["paused"] is True
    assert client.post("/api/control/resume", json={}).status_code == 200
    assert stack.generator.control()["paused"] is False
    client.post("/api/control/rate", json={"rate": 20})
    # A cross-site form cannot send JSON; a cross-site fetch is refused.
    form = client.post("/api/control/burst", data={"x": "1"})
    assert form.status_code == 415
    cross = client.post("/api/control/burst", json={}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    assert client.post("/api/control/explode", json={}).status_code == 404


def test_controls_hidden_without_generator_url_and_generator_outage_is_a_502(stack):
    from services.dashboard.app import create_app

    hidden = create_app(load_config(dashboard_env(stack, stack.scenario)))
    try:
        client = hidden.test_client()
        assert 'id="controls"' not in client.get("/").get_data(as_text=True)
        response = client.post("/api/control/burst", json={})
        assert response.status_code == 404 and "GENERATOR_URL" in response.get_json()["detail"]
    finally:
        close_app(hidden)
    from devenv.postgres import free_port

    gone = create_app(load_config(dashboard_env(stack, stack.scenario, f"http://127.0.0.1:{free_port()}")))
    try:
        response = gone.test_client().post("/api/control/burst", json={})
        assert response.status_code == 502
        assert response.get_json() == {"error": "Bad Gateway", "detail": "the generator's control API is unreachable"}
    finally:
        close_app(gone)


def test_the_dashboard_role_cannot_read_base_tables_or_write(stack):
    scenario = get_scenario(stack.scenario)
    with psycopg.connect(stack.reader_url, autocommit=True) as conn:
        for table in scenario.base_tables:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT 1 FROM {table} LIMIT 1")  # noqa: S608 - names from scenario.toml
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"DELETE FROM {scenario.stream_tables[0].name}")  # noqa: S608
