"""`make preview` end to end: it serves the demo, the DAG refreshes, Ctrl-C leaves nothing running."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devenv.postgres import free_port
from tests.support import ROOT

pytestmark = pytest.mark.slow


def _postgres_processes_using(path: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "postgres" in cmdline and path in cmdline:
            pids.append(int(entry.name))
    return pids


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


# Per scenario: the event stream's base table, and a stream-table figure that moves with it.
MOVING = {
    "ecommerce": ("orders", "SELECT sum(revenue) FROM category_revenue"),
    "fraud": ("transactions", "SELECT sum(total_volume) FROM category_volume"),
    "finance": ("trades", "SELECT sum(trade_count) FROM net_positions"),
}


@pytest.mark.parametrize("scenario", sorted(MOVING))
def test_preview_runs_the_demo_and_ctrl_c_stops_everything(tmp_path, scenario):
    stream_table, figure = MOVING[scenario]
    pg_port, http_port, exporter_port, dashboard_port = free_port(), free_port(), free_port(), free_port()
    env = {
        **os.environ,
        "DEMO_SCENARIO": scenario,
        "PREVIEW_PG_PORT": str(pg_port),
        "GENERATOR_HTTP_PORT": str(http_port),
        "EXPORTER_PORT": str(exporter_port),
        "DASHBOARD_PORT": str(dashboard_port),
        "GENERATOR_RATE": "20",
        "DEMO_PASSWORD": "preview-owner-pw",
        "LOG_LEVEL": "WARNING",
    }
    log_path = tmp_path / "preview.log"
    with log_path.open("w") as log:
        preview = subprocess.Popen(
            [sys.executable, "-m", "devenv.preview"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        banner = _wait_for(
            lambda: "Ctrl-C stops everything" in log_path.read_text() and log_path.read_text(), 90, "the preview banner"
        )
        data_dir = re.search(r"\(data in (\S+)\)", banner).group(1)
        assert f"127.0.0.1:{pg_port}/{scenario}_demo" in banner

        def control():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/control", timeout=2) as response:
                    return json.load(response)
            except OSError:
                return None

        assert _wait_for(control, 30, "the generator control API")["scenario"] == scenario
        assert f"http://127.0.0.1:{dashboard_port}/" in banner

        def snapshot():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{dashboard_port}/api/snapshot", timeout=5) as response:
                    return json.load(response)
            except OSError:
                return None

        served = _wait_for(snapshot, 30, "the dashboard's snapshot")
        assert served["scenario"]["name"] == scenario and served["controls"] is True
        assert {n["name"] for n in served["dag"]["nodes"] if n["kind"] == "stream_table"}
        owner = f"postgresql://demo:preview-owner-pw@127.0.0.1:{pg_port}/{scenario}_demo"
        count_events = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(stream_table))
        with psycopg.connect(owner, autocommit=True) as conn:
            events_before = conn.execute(count_events).fetchone()[0]
            figure_before = conn.execute(figure).fetchone()[0]

            def dag_moved():
                events = conn.execute(count_events).fetchone()[0]
                return events > events_before and conn.execute(figure).fetchone()[0] != figure_before

            _wait_for(dag_moved, 30, f"new {stream_table} rows to reach the stream tables through the scheduler")
            health = dict(conn.execute("SELECT check_name, severity FROM pgtrickle.health_check()").fetchall())
            assert health["scheduler_running"] == "OK"

        def exporter_metrics():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5) as response:
                    text = response.read().decode()
            except OSError:
                return None
            return text if "pg_trickle_up 1.0" in text else None

        metrics = _wait_for(exporter_metrics, 30, "the exporter's metrics with pg_trickle_up 1")
        [info] = [line for line in metrics.splitlines() if line.startswith("pg_trickle_info{")]
        assert 'engine="emulator"' in info and f'scenario="{scenario}"' in info
        assert f"127.0.0.1:{exporter_port}/metrics" in banner
    finally:
        preview.send_signal(signal.SIGINT)
        try:
            code = preview.wait(30)
        except subprocess.TimeoutExpired:
            preview.kill()
            raise
    output = log_path.read_text()
    assert code == 0, output[-3000:]
    assert "no PostgreSQL process left running" in output
    assert _postgres_processes_using(data_dir) == []
    assert not Path(data_dir).exists()
