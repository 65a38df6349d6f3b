"""Benchmark (make bench): 200 slow partial requests held for 30 s against the dashboard, a health probe every
second (issue 14, finding 4).

The dashboard runs as the Helm chart runs it (gunicorn, 2 workers x 4 threads) and as `make preview` runs it
(1 worker x 4 threads). Each slow client sends part of a request head and one more header line every second,
never finishing; with DASHBOARD_READ_TIMEOUT (default 10 s) the worker answers 408 and closes them, so the
clients reconnect as a real attacker would (the count of connections held stays at 200). Figures are printed,
not asserted: probes answered, median and worst latency, connections the server closed.
"""

from __future__ import annotations

import os
import statistics
import threading
import time

import pytest

from devenv.postgres import free_port
from tests.dashboard_support import DashboardProcess, dashboard_env
from tests.slow_clients import SlowClients, probe_health

pytestmark = pytest.mark.bench
DURATION_S = float(os.environ.get("BENCH_SLOW_SECONDS", "30"))
CLIENTS = 200


def _hold(port: int, stop: threading.Event, closed: list[int]) -> None:
    """200 slow clients, replaced as the server closes them, until `stop`."""
    while not stop.is_set():
        with SlowClients(port, slow=CLIENTS) as clients:
            while not stop.wait(0.5):
                if clients.closed_by_server >= CLIENTS // 2:
                    break
            closed.append(clients.closed_by_server)


@pytest.mark.parametrize(("workers", "threads"), [(1, 4), (2, 4)], ids=["preview-1x4", "chart-2x4"])
def test_bench_health_under_200_slow_clients(workers, threads):
    database = f"postgresql://demo_reader:x@127.0.0.1:{free_port()}/ecommerce_demo?connect_timeout=1"
    env = dashboard_env(database, "ecommerce", DASHBOARD_THREADS=str(threads))
    with DashboardProcess(env, workers=workers) as dash:
        stop, closed = threading.Event(), []
        holder = threading.Thread(target=_hold, args=(dash.port, stop, closed), daemon=True)
        holder.start()
        time.sleep(1.0)
        try:
            results = probe_health(dash.port, duration=DURATION_S, probe_every=1.0, probe_timeout=5.0)
        finally:
            stop.set()
            holder.join(10)
    answered = [latency for _, latency in results if latency is not None]
    print(
        f"\nslow clients ({workers} worker(s) x {threads} threads, {CLIENTS} slow partial requests, {DURATION_S:g} s): "
        f"health probes answered {len(answered)}/{len(results)}; "
        + (
            f"median {statistics.median(answered) * 1000:.1f} ms, worst {max(answered) * 1000:.1f} ms; "
            if answered
            else ""
        )
        + f"connections closed by the server (408 after DASHBOARD_READ_TIMEOUT): {sum(closed)}"
    )
