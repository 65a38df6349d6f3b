"""The engine's scheduling (token bucket, cycles, bursts, pause) on a fake clock, and the control API's
validation through Flask's test client. No database: batches are built, not written."""

from __future__ import annotations

import itertools
import threading

import pytest

from services.generator.config import parse_config
from services.generator.control import control_blueprint
from services.generator.engine import CYCLE_SECONDS, MAX_BATCH_EVENTS, TICK_SECONDS, Engine
from services.generator.scenarios import load_scenario
from tests.unit.test_generator_scenarios import CUSTOMERS, PRODUCTS


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_engine(*flags: str) -> tuple[Engine, FakeClock]:
    config = parse_config(["--seed", "3", *flags], env={})
    scenario = load_scenario(config.scenario, config.seed)
    scenario.set_lookups(CUSTOMERS, PRODUCTS)
    clock = FakeClock()
    return Engine(config, scenario, threading.Event(), clock=clock), clock


def simulate(engine: Engine, clock: FakeClock, seconds: float, tick: float = TICK_SECONDS) -> list:
    """Advances the fake clock tick by tick, building (not writing) a batch per tick; each batch counts
    as committed so the engine moves on."""
    batches = []
    for _ in range(round(seconds / tick)):
        clock.now += tick
        engine._advance(clock.now)
        batch = engine._build()
        if batch is not None:
            engine._committed(batch, 0.0)
            batches.append(batch)
    return batches


def kinds(batches) -> dict[str, int]:
    total: dict[str, int] = {}
    for batch in batches:
        for kind, n in batch.counts.items():
            total[kind] = total.get(kind, 0) + n
    return total


def test_rate_is_exact_and_spread_over_ticks():
    engine, clock = make_engine("--rate", "50", "--burst-interval", "0", "--slow-change-every", "0")
    engine._advance(clock.now)
    batches = simulate(engine, clock, 20.0)
    assert abs(kinds(batches)["order"] - 1000) <= 1
    assert max(b.counts["order"] for b in batches) <= 6, "50 events/s arrive as about 5 per 0.1 s tick"


def test_high_rates_are_batched_and_capped():
    engine, clock = make_engine("--rate", "100000", "--burst-interval", "0", "--slow-change-every", "0")
    engine._advance(clock.now)
    batches = simulate(engine, clock, 1.0)
    assert [b.counts["order"] for b in batches] == [10_000] * 10
    # A writer that falls behind: 5 s without a tick owes at most 1 s of events, in capped batches.
    clock.now += 5.0
    engine._advance(clock.now)
    first = engine._build()
    assert first.counts["order"] == MAX_BATCH_EVENTS
    engine._committed(first, 0.0)
    owed = [first.counts["order"]]
    while (batch := engine._build()) is not None:
        owed.append(batch.counts["order"])
    assert owed == [MAX_BATCH_EVENTS] * 5, "1 s of events at 100,000/s, no more"


def test_default_schedule_bursts_about_every_45_s_and_reprices_about_every_30_cycles():
    engine, clock = make_engine("--rate", "1")
    engine._advance(clock.now)
    burst_times, reprice_times = [], []
    for step in range(1, 3600 * 10 + 1):
        clock.now += TICK_SECONDS
        engine._advance(clock.now)
        batch = engine._build()
        if batch is None:
            continue
        engine._committed(batch, 0.0)
        if batch.counts.get("flash_sale_order"):
            burst_times.append(step * TICK_SECONDS)
        if batch.counts.get("reprice"):
            reprice_times.append(step * TICK_SECONDS)
    gaps = [b - a for a, b in itertools.pairwise(burst_times)]
    assert min(gaps) >= 36 - 0.2 and max(gaps) <= 54 + 0.2
    assert 43 <= sum(gaps) / len(gaps) <= 47
    gaps = [b - a for a, b in itertools.pairwise(reprice_times)]
    assert min(gaps) >= 24 * CYCLE_SECONDS - 1 and max(gaps) <= 36 * CYCLE_SECONDS + 1
    assert 28 <= sum(gaps) / len(gaps) <= 32


def test_pause_stops_everything_and_resume_continues_without_catch_up():
    engine, clock = make_engine("--rate", "20", "--burst-interval", "2", "--slow-change-every", "1")
    engine._advance(clock.now)
    simulate(engine, clock, 3.0)
    engine.pause()
    assert simulate(engine, clock, 10.0) == []
    engine.resume()
    after = kinds(simulate(engine, clock, 1.0))
    assert 19 <= after["order"] <= 21


def test_requested_burst_comes_with_the_next_tick():
    engine, clock = make_engine("--rate", "1", "--burst-interval", "0", "--slow-change-every", "0")
    engine._advance(clock.now)
    assert engine.request_burst() == 1
    (batch,) = simulate(engine, clock, TICK_SECONDS)
    assert batch.bursts == 1 and 8 <= batch.counts["flash_sale_order"] <= 18
    assert engine.status()["bursts_committed"] == 1


def test_a_requested_burst_is_written_even_while_paused():
    engine, clock = make_engine("--rate", "50", "--burst-interval", "1", "--slow-change-every", "1")
    engine._advance(clock.now)
    engine.pause()
    engine.request_burst()
    (batch,) = simulate(engine, clock, 5.0)
    assert set(batch.counts) == {"flash_sale_order"} and batch.bursts == 1


def test_event_ids_are_consecutive_per_run():
    engine, clock = make_engine("--rate", "30", "--burst-interval", "0.5", "--slow-change-every", "0")
    engine._advance(clock.now)
    batches = simulate(engine, clock, 3.0)
    seqs = [row[-1] for b in batches for target, rows in b.writes for row in rows]
    assert seqs == list(range(1, len(seqs) + 1))
    assert {row[-2] for b in batches for _, rows in b.writes for row in rows} == {engine.run_id}
    assert [b.number for b in batches] == list(range(1, len(batches) + 1))


@pytest.fixture
def client():
    engine, _ = make_engine("--rate", "5", "--max-rate", "1000")
    from services.common.opsserver import create_ops_app

    app = create_ops_app(
        "generator", engine.readiness, registry=engine.metrics.registry, blueprints=[control_blueprint(engine)]
    )
    return app.test_client(), engine


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ('{"rate": -1}', "application/json"),
        ('{"rate": 0}', "application/json"),
        ('{"rate": "x"}', "application/json"),
        ('{"rate": true}', "application/json"),
        ('{"rate": null}', "application/json"),
        ('{"rate": 1001}', "application/json"),
        ('{"rate": 1e999}', "application/json"),
        ('{"rate": NaN}', "application/json"),
        ('{"speed": 5}', "application/json"),
        ("[5]", "application/json"),
        ("{not json", "application/json"),
        ("", "application/json"),
    ],
)
def test_rate_rejects_bad_input_with_400_json(client, body, content_type):
    http, engine = client
    response = http.post("/control/rate", data=body, content_type=content_type)
    assert response.status_code == 400
    assert response.is_json and response.get_json()["error"] == "Bad Request"
    assert response.get_json()["detail"]
    assert engine.rate == 5


def test_control_endpoints(client):
    http, engine = client
    response = http.post("/control/rate", json={"rate": 250})
    assert response.status_code == 200 and response.get_json() == {"rate": 250.0}
    assert engine.rate == 250
    assert http.post("/control/rate", json={"rate": 1000}).status_code == 200
    assert http.post("/control/burst", json={}).status_code == 202
    assert http.post("/control/pause", content_type="application/json").get_json() == {"paused": True}
    state = http.get("/control").get_json()
    assert state["paused"] is True and state["rate"] == 1000 and state["bursts_pending"] == 1
    assert state["scenario"] == "ecommerce" and state["run_id"] == engine.run_id
    assert set(state["events_committed"]) == {"order", "flash_sale_order", "reprice"}
    assert http.post("/control/resume", json={}).get_json() == {"paused": False}
    assert http.get("/control/pause").status_code == 405
    metrics = http.get("/metrics").get_data(as_text=True)
    assert 'demo_generator_rate{scenario="ecommerce"} 1000.0' in metrics
    assert 'demo_generator_paused{scenario="ecommerce"} 0.0' in metrics
    assert 'demo_generator_events_total{kind="order",scenario="ecommerce"} 0.0' in metrics
    assert http.get("/readyz").status_code == 503, "not ready before the database is reached"
