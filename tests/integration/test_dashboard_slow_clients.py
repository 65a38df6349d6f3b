"""Issue 14, finding 4: half-sent requests and idle connections do not make the dashboard unavailable.

The dashboard runs as `make preview` runs it (gunicorn, 1 worker x 4 threads). gunicorn's gthread worker gave a
thread to each connection as soon as its first byte arrived, and the thread then waited for the rest of the head
with no timeout: four slow clients took every thread. services/dashboard/worker.py reads requests in the event
loop instead. The 200-client, 30-second measurement is tests/bench/test_bench_slow_clients.py.
"""

from __future__ import annotations

import http.client
import socket
import time

import pytest

from devenv.postgres import free_port
from tests.dashboard_support import DashboardProcess, dashboard_env
from tests.slow_clients import SlowClients, probe_health

pytestmark = pytest.mark.slow


def _unreachable_database() -> str:
    return f"postgresql://demo_reader:x@127.0.0.1:{free_port()}/ecommerce_demo?connect_timeout=1"


def test_health_keeps_answering_while_slow_and_idle_clients_hold_connections():
    env = dashboard_env(_unreachable_database(), "ecommerce", DASHBOARD_THREADS="4", DASHBOARD_READ_TIMEOUT="4")
    with DashboardProcess(env, workers=1) as dash, SlowClients(dash.port, slow=16, idle=16):
        time.sleep(0.5)  # every slow client has sent part of its head
        results = probe_health(dash.port, duration=6.0, probe_every=0.5, probe_timeout=3.0)
        answered = [latency for _, latency in results if latency is not None]
        assert len(answered) == len(results), f"health probe unanswered while slow clients wait: {results}"
        assert max(answered) < 2.0, results


def test_a_request_not_sent_within_the_read_timeout_gets_408_and_is_closed():
    env = dashboard_env(_unreachable_database(), "ecommerce", DASHBOARD_READ_TIMEOUT="1")
    with DashboardProcess(env, workers=1) as dash:
        with socket.create_connection(("127.0.0.1", dash.port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(4096):
                answer += chunk
            elapsed = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer
        assert b'"error": "Request Timeout"' in answer
        assert elapsed < 1.0 + 3.0, elapsed
        # A complete request sent in pieces (within the timeout), with a body, is served normally.
        with socket.create_connection(("127.0.0.1", dash.port), timeout=10) as sock:
            for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\nContent-Length: 2\r\n", b"\r\n{", b"}"):
                sock.sendall(piece)
                time.sleep(0.1)
            answer = sock.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        # Keep-alive: two requests on one connection, the second read by the event loop as well.
        conn = http.client.HTTPConnection("127.0.0.1", dash.port, timeout=10)
        try:
            conn.request("GET", "/healthz")
            first = conn.getresponse()
            assert first.status == 200 and first.read()
            sock = conn.sock
            conn.request("GET", "/healthz")
            second = conn.getresponse()
            assert second.status == 200 and second.read() and conn.sock is sock
        finally:
            conn.close()
