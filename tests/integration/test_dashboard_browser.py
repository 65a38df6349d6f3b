"""The page in a real browser (Debian's chromium through Playwright), per scenario: every panel renders
with data, the DAG has the right nodes and pulses, values move, hostile names stay text, the controls
work, and the outage banner comes and goes. Screenshots land in test-output/<test>/."""

from __future__ import annotations

import json
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
