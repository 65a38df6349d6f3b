"""Benchmark (make bench): GET /api/snapshot under 20 concurrent clients for 30 s, against the real
dashboard process (gunicorn, default 2 workers x 4 threads, demo_reader) at two history sizes: 10,000 and
1,000,000 orders. The history is loaded by the owner role with one INSERT ... SELECT generate_series, then
every stream table is refreshed once (no scheduler or generator runs during the measurement).

Also measured: the cost of one snapshot computation (the database reads behind the cache) at each size,
in-process, so the "does not grow with the event history" claim is visible apart from the cache.

Figures are printed, not asserted. Targets: p99 < 50 ms, and the two sizes within 1.5x of each other.
The clients run on the same machine as the server and the database (a shared 2-core machine).
"""

from __future__ import annotations

import http.client
import os
import statistics
import threading
import time

import psycopg
import pytest

from services.common import pgtrickle
from services.common.scenarios import get_scenario
from services.dashboard.app import close_app, create_app
from services.dashboard.config import load_config
from tests.dashboard_support import DashboardProcess, dashboard_env

DURATION_S = float(os.environ.get("BENCH_DASHBOARD_SECONDS", "30"))
CLIENTS = 20
RESULTS: dict[int, dict] = {}


def _load_orders(db, total: int) -> int:
    with psycopg.connect(db.owner_url) as conn:
        (existing,) = conn.execute("SELECT count(*) FROM orders").fetchone()
        missing = max(0, total - existing)
        conn.execute(
            """INSERT INTO orders (customer_id, product_id, quantity, unit_price, ordered_at)
               SELECT c.ids[1 + (g %% array_length(c.ids, 1))], p.ids[1 + ((g * 7) %% array_length(p.ids, 1))],
                      1 + g %% 3, 5 + (g %% 200), now() - make_interval(secs => g %% 86400)
                 FROM generate_series(1, %s) AS g,
                      (SELECT array_agg(id) AS ids FROM customers) AS c,
                      (SELECT array_agg(id) AS ids FROM products) AS p""",
            (missing,),
        )
        conn.commit()
        for st in get_scenario("ecommerce").stream_tables:  # topological order
            pgtrickle.refresh_stream_table(conn, st.name)
            conn.commit()
        (count,) = conn.execute("SELECT count(*) FROM orders").fetchone()
    # Let the load settle (no autovacuum or checkpoint of the fresh rows during the measurement).
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")
        conn.execute("CHECKPOINT")
    return count


def _client(port: int, stop: float, latencies: list[float], errors: list[int]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.perf_counter() < stop:
        started = time.perf_counter()
        conn.request("GET", "/api/snapshot")
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != 200:
            errors.append(response.status)
    conn.close()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@pytest.mark.bench
@pytest.mark.parametrize("orders", [10_000, 1_000_000])
def test_snapshot_latency_under_20_clients(demo_db, orders):
    db = demo_db("ecommerce")
    loaded_started = time.perf_counter()
    count = _load_orders(db, orders)
    load_s = time.perf_counter() - loaded_started

    # One snapshot computation (the database reads), in-process, without the cache.
    app = create_app(load_config(dashboard_env(db.reader_url, "ecommerce")))
    try:
        service = app.extensions["dashboard"]
        service.max_age = 0.0
        service.slow_every = 0.0  # include the internals (Advisor, efficiency) every time
        assert service.get().ok
        computes = []
        for _ in range(20):
            started = time.perf_counter()
            assert service.get().ok
            computes.append((time.perf_counter() - started) * 1000)
    finally:
        close_app(app)

    with DashboardProcess(dashboard_env(db.reader_url, "ecommerce", LOG_LEVEL="WARNING"), workers=2) as dash:
        assert dash.get("/api/snapshot")[0] == 200
        latencies: list[float] = []
        errors: list[int] = []
        stop = time.perf_counter() + DURATION_S
        threads = [threading.Thread(target=_client, args=(dash.port, stop, latencies, errors)) for _ in range(CLIENTS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DURATION_S + 30)
        elapsed = time.perf_counter() - started
    assert errors == [] and latencies
    figures = {
        "orders": count,
        "load_s": round(load_s, 1),
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "p99_ms": round(_percentile(latencies, 0.99) * 1000, 2),
        "max_ms": round(max(latencies) * 1000, 2),
        "compute_p50_ms": round(statistics.median(computes), 2),
        "compute_max_ms": round(max(computes), 2),
    }
    RESULTS[orders] = figures
    print(
        f"\n/api/snapshot, {CLIENTS} clients x {DURATION_S:.0f} s, {count:,} orders (loaded in {figures['load_s']} s): "
        f"p50 {figures['p50_ms']} ms, p99 {figures['p99_ms']} ms, max {figures['max_ms']} ms, "
        f"{figures['req_per_s']} req/s ({figures['requests']} requests); one snapshot computation: "
        f"p50 {figures['compute_p50_ms']} ms, max {figures['compute_max_ms']} ms"
    )
    if len(RESULTS) == 2:
        small, large = RESULTS[10_000], RESULTS[1_000_000]
        print(
            f"1,000,000 vs 10,000 orders: p99 x{large['p99_ms'] / small['p99_ms']:.2f}, "
            f"p50 x{large['p50_ms'] / small['p50_ms']:.2f}, computation x"
            f"{large['compute_p50_ms'] / small['compute_p50_ms']:.2f} (target: within 1.5x; p99 < 50 ms)"
        )
