"""The page in a real browser (Debian's chromium through Playwright), per scenario: every panel renders
with data, the DAG has the right nodes and pulses, values move, hostile names stay text, the controls
work, and the outage banner comes and goes. Screenshots land in test-output/<test>/."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import psycopg
import pytest

from devenv.postgres import LocalPostgres
from services.common.scenarios import get_scenario
from tests.dashboard_support import (
    DashboardProcess,
    PageWatch,
    chromium_browser,
    dashboard_env,
    engine_target,
    scenario_stack,
    wait_for,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
HOSTILE = "<img src=x onerror=alert(1)>"
# Per scenario: a name the page shows, set to HOSTILE before the page loads, and the panel that shows it.
HOSTILE_NAMES = {
    "ecommerce": ("INSERT INTO categories (name) VALUES (%s)", "category_revenue"),
    "fraud": ("UPDATE merchants SET category = %s WHERE category = 'Travel'", "category_volume"),
    "finance": ("UPDATE sectors SET name = %s WHERE id = (SELECT min(id) FROM sectors)", "price_snapshot"),
}


@pytest.fixture(scope="module")
def browser():
    with chromium_browser() as context:
        yield context


@pytest.fixture(scope="module", params=("ecommerce", "fraud", "finance"))
def served(request, browser):
    scenario = request.param
    admin_url, engine = engine_target(request)
    with scenario_stack(admin_url, scenario, engine) as stack:
        with psycopg.connect(stack.admin_url, autocommit=True) as conn:
            conn.execute(HOSTILE_NAMES[scenario][0], (HOSTILE,))
        env = dashboard_env(stack, scenario, f"http://127.0.0.1:{stack.generator.port}")
        with DashboardProcess(env, workers=2) as dash:  # two workers: the page must not care which one answers
            yield stack, dash


@pytest.fixture(scope="module")
def page(browser, served):
    _, dash = served
    page = browser.new_page()
    watch = PageWatch(page)
    page.goto(dash.url + "/")
    page.wait_for_selector("body[data-state=ok]", timeout=20000)
    yield page, watch
    page.close()


def _panel_counts(page) -> dict[str, tuple[int, int]]:
    return page.eval_on_selector_all(
        "#panels .panel",
        "els => Object.fromEntries(els.map(e => [e.dataset.panelId, [+e.dataset.rows, +e.dataset.points]]))",
    )


def test_every_panel_renders_with_data_and_the_dag_and_advisor_are_drawn(page, served, output_dir):
    page, watch = page
    stack, dash = served
    scenario = get_scenario(stack.scenario)
    if stack.scenario == "fraud":
        stack.generator.http("POST", "/control/burst", "{}")  # the HIGH-risk feed fills with a burst

    def all_panels_have_data():
        counts = _panel_counts(page)
        return counts and all(rows > 0 or points > 0 for rows, points in counts.values()) and counts

    counts = wait_for(all_panels_have_data, 20, "every panel to show data")
    _, snapshot = dash.get("/api/snapshot")
    assert set(counts) == {p["id"] for p in snapshot["panels"]}
    assert page.locator("#panels canvas").count() == sum(1 for p in snapshot["panels"] if p["chart"])
    assert page.locator("#tiles .tile").count() == len(snapshot["tiles"])
    assert page.locator("#history figure").count() == len(snapshot["history"]["charts"])

    nodes = page.locator("#dag svg g.node")
    assert nodes.count() == len(snapshot["dag"]["nodes"])
    assert page.locator("#dag svg g.node.st").count() == len(scenario.stream_tables)
    assert page.locator("#dag svg g.node.source").count() == len(scenario.base_tables)
    assert page.locator("#dag svg path.edge").count() == len(snapshot["dag"]["edges"])
    labels = set(page.locator("#dag svg g.node.st text.name").all_text_contents())
    assert labels == {st.name for st in scenario.stream_tables}
    assert page.locator("#dag svg g.node.st-ACTIVE").count() == len(scenario.stream_tables)
    meta = page.locator("#dag svg g.node.st text.meta").all_text_contents()
    assert any(re.match(r"(DIFF|FULL) · (\d+s|calculated)$", m) for m in meta), meta
    assert any(m.startswith("stale ") for m in meta), meta

    verdicts = page.locator("#advisor .verdict .vtext").all_text_contents()
    assert len(verdicts) == len(scenario.stream_tables)
    assert all(re.fullmatch(r"\u2713 KEEP \w+|\u2192 SWITCH TO \w+", v) for v in verdicts), verdicts
    confidences = page.locator("#advisor .verdict .vconf").evaluate_all("els => els.map(e => e.className)")
    assert confidences and all(re.fullmatch(r"vconf conf-(high|medium|low)", c) for c in confidences), confidences
    assert page.locator("#refreshes tbody tr").count() > 0
    assert page.locator("#efficiency tbody tr").count() == len(scenario.stream_tables)
    assert page.locator("#fact-engine").inner_text() == snapshot["engine"]["label"]
    assert page.locator("#fact-database").inner_text() == "connected"
    assert page.locator("#banner").is_hidden()

    if stack.scenario == "finance":
        # The price board moves: a ticked row flashes and carries an arrow (the screenshot shows them).
        board = "[data-panel-id=price_snapshot]"
        page.wait_for_selector(f"{board} tr.fresh", timeout=20000)
        page.wait_for_selector(f"{board} .dir-up, {board} .dir-down", timeout=20000)

    # A few history samples (one every 2 s) for the picture, then let the charts' animations settle.
    page.wait_for_function(
        "() => [...document.querySelectorAll('#history figure')].every(f => +f.dataset.points >= 4)", timeout=20000
    )
    page.wait_for_timeout(1000)
    page.screenshot(path=str(Path(output_dir) / f"dashboard-{stack.scenario}.png"), full_page=True)
    assert watch.errors == [], watch.errors  # no script error, no CSP violation
    assert watch.dialogs == []


def test_values_change_and_refreshed_nodes_pulse_within_5_seconds(page):
    page, _ = page
    before = page.locator("#tiles .tile .value").all_text_contents()
    page.wait_for_function(
        "before => [...document.querySelectorAll('#tiles .tile .value')].map(e => e.textContent).join('|') !== before",
        arg="|".join(before),
        timeout=5000,
    )
    page.wait_for_selector("#dag svg g.node[data-pulses]", timeout=5000)


def test_history_merges_the_samples_of_every_worker(page):
    """Each worker keeps its own samples; the page draws the union (one per step), newest kept, so a poll
    answered by the other worker neither shortens the chart nor makes it jump."""
    page, _ = page
    result = page.evaluate(
        """() => {
        const merge = new HistoryMerge();
        const worker = (samples) => ({ window_s: 10, step_s: 2, samples });
        merge.merge(worker([[100, {x: 0}], [102, {x: 20}], [104, {x: 40}]]));
        const after = merge.merge(worker([[105, {x: 50}]]));  // a younger worker: one sample only
        const rate = HistoryMerge.chart({mode: "rate", series: [{key: "x", label: "x"}]}, after);
        const value = HistoryMerge.chart({mode: "value", series: [{key: "x", label: "x"}]}, after);
        const later = merge.merge(worker([[116, {x: 90}]]));  // the window moves on
        return { times: after.map(s => s[0]), rate, value, later: later.map(s => s[0]) };
    }"""
    )
    assert result["times"] == [100, 102, 105]  # 104 is within 1.5 s of the newer 105: one per step
    assert result["rate"] == {"times": [102, 105], "series": [{"label": "x", "values": [10, 10]}]}
    assert result["value"]["series"][0]["values"] == [0, 20, 50]
    assert result["later"] == [116]
    counts = page.eval_on_selector_all("#history figure", "els => els.map(e => +e.dataset.points)")
    assert counts and all(n >= 1 for n in counts)


@pytest.mark.parametrize("served", ["ecommerce"], indirect=True)  # the page's logic is the same for every scenario
def test_an_answer_older_than_the_one_on_screen_is_not_drawn(browser, served):
    """With several workers each caching its own snapshot, a poll may get an older one: the page keeps what
    it shows (no figures stepping back, no false DAG pulses)."""
    _, dash = served
    status, real = dash.get("/api/snapshot")
    assert status == 200
    newer = {**real, "generated_at": "2099-01-01T00:00:10.000+00:00"}
    older = {**real, "generated_at": "2099-01-01T00:00:09.000+00:00"}
    older["tiles"] = [{**tile, "value": 987654321, "format": "int"} for tile in real["tiles"]]
    answers = []

    def serve(route):
        body = newer if not answers else older
        answers.append(body["generated_at"])
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page = browser.new_page()
    try:
        page.route("**/api/snapshot", serve)
        page.goto(dash.url + "/")
        page.wait_for_selector("body[data-state=ok]", timeout=20000)
        for _ in range(75):  # the route handler runs while Playwright waits (not while Python sleeps)
            if len(answers) >= 3:
                break
            page.wait_for_timeout(200)
        assert len(answers) >= 3, "two older answers after the newer one"
        values = page.locator("#tiles .tile .value").all_text_contents()
        assert values and "987,654,321" not in values
        assert page.locator("#fact-updated").inner_text() == page.evaluate("Fmt.time('2099-01-01T00:00:10.000+00:00')")
    finally:
        page.close()


def test_hostile_names_render_as_text_and_run_nothing(page, served):
    page, watch = page
    stack, _ = served
    cell = page.locator(f"#panels [data-panel-id={HOSTILE_NAMES[stack.scenario][1]}] td", has_text=HOSTILE)
    cell.first.wait_for(timeout=10000)
    assert cell.first.inner_text() == HOSTILE
    assert page.evaluate("document.querySelectorAll('img').length") == 0
    assert page.evaluate("document.querySelectorAll('#panels script, #panels [onerror]').length") == 0
    assert watch.dialogs == []


def test_generator_controls_from_the_page(page, served):
    page, watch = page
    stack, _ = served
    before = stack.generator.control()["bursts_committed"]
    page.click("#btn-burst")
    wait_for(lambda: stack.generator.control()["bursts_committed"] > before, 10, "a burst from the button")
    page.fill("#rate-input", "33")
    page.click("#rate-form button[type=submit]")
    wait_for(lambda: stack.generator.control()["rate"] == 33, 10, "the new rate")
    page.click("#btn-pause")
    wait_for(lambda: stack.generator.control()["paused"], 10, "pause")
    page.wait_for_selector("#btn-resume:not([disabled])", timeout=6000)
    page.click("#btn-resume")
    wait_for(lambda: not stack.generator.control()["paused"], 10, "resume")
    assert watch.errors == [], watch.errors


@pytest.fixture(scope="module")
def own_server():
    server = LocalPostgres()
    server.start()
    yield server
    server.destroy()


def test_outage_banner_then_recovery_without_reload(own_server, browser, output_dir):
    with (
        scenario_stack(own_server.admin_url, "ecommerce") as stack,
        DashboardProcess(dashboard_env(stack, "ecommerce")) as dash,
    ):
        page = browser.new_page()
        try:
            page.goto(dash.url + "/")
            page.wait_for_selector("body[data-state=ok]", timeout=20000)
            assert page.locator("#controls").count() == 0  # GENERATOR_URL unset: no controls
            own_server.stop()
            try:
                page.wait_for_selector("#banner:not([hidden])", timeout=15000)
                assert "Database unreachable" in page.locator("#banner").inner_text()
                assert page.locator("body").get_attribute("data-state") == "down"
                assert dash.get("/readyz")[0] == 503
                page.screenshot(path=str(Path(output_dir) / "dashboard-outage.png"), full_page=False)
            finally:
                own_server.start()
            page.wait_for_selector("body[data-state=ok]", timeout=40000)
            assert page.locator("#banner").is_hidden()
            assert page.locator("#fact-database").inner_text() == "connected"

            # The dashboard itself goes away (a restart): its own banner, then recovery on the same address.
            assert dash.terminate()[0] == 0
            page.wait_for_selector("body[data-state=down]", timeout=15000)
            assert "Dashboard unreachable" in page.locator("#banner").inner_text()
            with DashboardProcess(dashboard_env(stack, "ecommerce"), port=dash.port):
                page.wait_for_selector("body[data-state=ok]", timeout=20000)
                assert page.locator("#banner").is_hidden()
        finally:
            page.close()


# ---- the story: refresh cascade, DAG geometry, screenshots (a clean stack: no hostile names in the pictures)
# `make screenshots` sets DASHBOARD_SCREENSHOTS=docs/screenshots and runs the screenshot test only.
SCREENSHOTS = os.environ.get("DASHBOARD_SCREENSHOTS")


@pytest.fixture(scope="module", params=("ecommerce", "fraud", "finance"))
def story(request, browser):
    scenario = request.param
    admin_url, engine = engine_target(request)
    flags = "--rate 4 --burst-interval 20 --slow-change-every 5"
    with scenario_stack(admin_url, scenario, engine, generator_flags=flags) as stack:
        env = dashboard_env(stack, scenario, f"http://127.0.0.1:{stack.generator.port}")
        with DashboardProcess(env) as dash:
            yield stack, dash


def _cascade(page) -> dict:
    """What the timeline shows: its rows (in page order) and every mark with its time and x position."""
    return page.evaluate(
        """() => ({
        rows: [...document.querySelectorAll('#cascade g.row')].map(g => ({
            table: g.dataset.table, layer: +g.dataset.layer, index: +g.dataset.index })),
        marks: [...document.querySelectorAll('#cascade g.mark')].map(g => ({
            table: g.dataset.table, t: +g.dataset.t, action: g.dataset.action, rows: +g.dataset.rows,
            changed: g.classList.contains('mark-changed'), x: +g.querySelector('rect').getAttribute('x') })),
    })"""
    )


def test_cascade_marks_follow_the_dag_order_after_a_burst(browser, story):
    """With the generator paused, one burst: its changes appear on the timeline level by level. A stream table
    that reads only stream tables changes no earlier than the first of its inputs did; rows are in DAG
    order; marks are placed by time."""
    stack, dash = story
    page = browser.new_page()
    stack.generator.http("POST", "/control/pause", "{}")
    try:
        page.goto(dash.url + "/")
        page.wait_for_selector("body[data-state=ok]", timeout=20000)
        page.wait_for_timeout(4000)  # what was written before the pause has been refreshed
        with psycopg.connect(stack.admin_url, autocommit=True) as conn:
            burst_at = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()[0]
        stack.generator.http("POST", "/control/burst", "{}")  # written even while paused

        _, snapshot = dash.get("/api/snapshot")
        kinds = {n["id"]: n["kind"] for n in snapshot["dag"]["nodes"]}
        inputs: dict[str, set[str]] = {}
        for edge in snapshot["dag"]["edges"]:
            inputs.setdefault(edge["to"], set()).add(edge["from"])
        only_stream_inputs = {t for t, s in inputs.items() if all(kinds[i] == "stream_table" for i in s)}
        assert only_stream_inputs, "every scenario has a stream table reading stream tables only"

        def cascaded():
            view = _cascade(page)
            after = [m for m in view["marks"] if m["changed"] and m["t"] >= burst_at]
            reached = {m["table"] for m in after} & only_stream_inputs
            return (view, after) if reached else None

        view, after = wait_for(cascaded, 20, "the burst to reach a stream table that reads stream tables")
        page.wait_for_timeout(3000)  # let the rest of the cascade land
        view = _cascade(page)
        after = [m for m in view["marks"] if m["changed"] and m["t"] >= burst_at]
    finally:
        stack.generator.http("POST", "/control/resume", "{}")
        page.close()

    layers = [row["layer"] for row in view["rows"]]
    assert [row["index"] for row in view["rows"]] == list(range(len(layers)))
    assert layers == sorted(layers), "timeline rows are not in DAG order"
    assert {row["table"] for row in view["rows"]} == {n for n, k in kinds.items() if k == "stream_table"}
    first = {}
    for mark in sorted(after, key=lambda m: m["t"]):
        first.setdefault(mark["table"], mark["t"])
    assert len({next(r["layer"] for r in view["rows"] if r["table"] == t) for t in first}) >= 2, first
    # A mark's time is its refresh transaction's start (start_time = now(), as pg_trickle records it), and a
    # refresh that began just before the burst committed still reads it (each statement sees what is committed
    # when it starts): an input's mark may precede burst_at by up to a scheduler pass.
    first_input = {}
    for mark in sorted(view["marks"], key=lambda m: m["t"]):
        if mark["changed"] and mark["t"] >= burst_at - 2.0:
            first_input.setdefault(mark["table"], mark["t"])
    for table in only_stream_inputs & set(first):
        earliest_input = min((first_input[i] for i in inputs[table] if i in first_input), default=None)
        assert earliest_input is not None, f"{table} changed after the burst but none of its inputs did"
        assert first[table] >= earliest_input, f"{table} changed before its inputs: {first}"
    ordered = sorted(view["marks"], key=lambda m: (m["t"], m["x"]))
    assert [m["x"] for m in ordered] == sorted(m["x"] for m in ordered), "marks are not placed by time"


_EDGE_CROSSINGS = """() => {
    const boxes = [...document.querySelectorAll('#dag svg g.node')].map(g => {
        const [x, y, w, h] = g.dataset.box.split(' ').map(Number);
        return { id: g.dataset.node, x, y, w, h };
    });
    const inside = (p) => boxes.filter(
        b => p.x > b.x + 1 && p.x < b.x + b.w - 1 && p.y > b.y + 1 && p.y < b.y + b.h - 1);
    const routed = [], straight = [];
    for (const path of document.querySelectorAll('#dag svg path.edge')) {
        const length = path.getTotalLength();
        for (let s = 0; s <= length; s += 2) {
            for (const b of inside(path.getPointAtLength(s))) routed.push([path.dataset.from, path.dataset.to, b.id]);
        }
        // The same edge drawn as a straight line between its ends, to show the check finds crossings.
        const a = path.getPointAtLength(0), z = path.getPointAtLength(length);
        for (let i = 0; i <= 200; i++) {
            const p = { x: a.x + (z.x - a.x) * i / 200, y: a.y + (z.y - a.y) * i / 200 };
            for (const b of inside(p)) straight.push([path.dataset.from, path.dataset.to, b.id]);
        }
    }
    return { routed, straight, edges: document.querySelectorAll('#dag svg path.edge').length,
             orientation: document.querySelector('#dag svg').dataset.orientation };
}"""


@pytest.mark.parametrize("width", [1440, 390])
def test_dag_edges_avoid_node_boxes_and_screenshots(browser, story, width, output_dir):
    """No DAG edge passes through a node box (sampled every 2 px along each SVG path), at desktop and phone
    widths; the same page is the screenshot of the scenario (docs/screenshots with `make screenshots`)."""
    stack, dash = story
    page = browser.new_page()
    page.set_viewport_size({"width": width, "height": 900})
    watch = PageWatch(page)
    try:
        page.goto(dash.url + "/")
        page.wait_for_selector("body[data-state=ok]", timeout=20000)
        page.wait_for_selector("#dag svg g.node", timeout=10000)
        result = page.evaluate(_EDGE_CROSSINGS)
        _, snapshot = dash.get("/api/snapshot")
        assert result["edges"] == len(snapshot["dag"]["edges"])
        assert result["orientation"] == ("vertical" if width < 760 or snapshot["dag"]["layers"] > 5 else "horizontal")
        assert result["routed"] == [], f"edges through node boxes: {result['routed']}"
        if stack.scenario in ("fraud", "finance"):  # skip-level edges: drawn straight, they would cross boxes
            assert result["straight"], "the geometric check found nothing to avoid"
        level_badges = page.locator("#dag g.level text").all_text_contents()
        assert set(level_badges) == {st.layer for st in get_scenario(stack.scenario).stream_tables}

        # The picture: five minutes of history are not needed, but some, and the DAG settled.
        page.wait_for_function(
            "() => [...document.querySelectorAll('#history figure')].every(f => +f.dataset.points >= 8)",
            timeout=30000,
        )
        page.wait_for_timeout(1500)
        target = Path(SCREENSHOTS) if SCREENSHOTS else Path(output_dir)
        target.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target / f"{stack.scenario}-{width}.png"), full_page=True)
        assert watch.errors == [], watch.errors
    finally:
        page.close()
