"""The dashboard process on its own: history sampled in the background whether or not anyone polls (a page
opened late gets the samples at once), and the access log only when asked (DASHBOARD_ACCESS_LOG)."""

from __future__ import annotations

import json
import time

import pytest

from tests.dashboard_support import DashboardProcess, dashboard_env

pytestmark = pytest.mark.slow


def _access_lines(dash: DashboardProcess) -> list[dict]:
    lines = [json.loads(line) for line in dash.log_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("logger") == "gunicorn.access"]


def test_history_is_sampled_while_nobody_polls_and_access_log_is_optional(demo_db):
    db = demo_db("ecommerce")
    env = dashboard_env(db.reader_url, "ecommerce", DASHBOARD_SAMPLE_INTERVAL="1", DASHBOARD_ACCESS_LOG="false")
    with DashboardProcess(env) as dash:
        time.sleep(7)  # nobody asks for a snapshot meanwhile (only /healthz answered, at start)
        status, snapshot = dash.get("/api/snapshot")
        assert status == 200
        times = [t for t, _ in snapshot["history"]["samples"]]
        assert len(times) >= 3, f"the first poll after 7 s should find the samples taken meanwhile: {times}"
        assert times == sorted(times) and times[-1] - times[0] >= 3.5  # one sample per 2 s step
        assert _access_lines(dash) == [], "DASHBOARD_ACCESS_LOG=false still logged requests"

    env = dashboard_env(db.reader_url, "ecommerce", DASHBOARD_SAMPLE_INTERVAL="0")
    with DashboardProcess(env) as dash:  # defaults: access log on; sampling off here
        time.sleep(3)
        status, snapshot = dash.get("/api/snapshot")
        assert status == 200 and len(snapshot["history"]["samples"]) == 1  # only the poll's own sample
        assert any(line["path"] == "/api/snapshot" for line in _access_lines(dash))
