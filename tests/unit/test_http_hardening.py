"""Issue 14, findings 2 and 5: the generator's control API refuses cross-site and non-JSON POSTs; every service
limits request bodies and answers malformed or pathological JSON with a 400 JSON error, never a 500.

The hostile requests are the ones measured in the issue: a text/plain cross-site POST of {"rate": 99999}, a
form-encoded pause, a 100,000-deep JSON array (RecursionError), {"rate": 1 followed by 400 zeros} (OverflowError
in the dashboard), a bad chunked encoding, a 10 MB body.
"""

from __future__ import annotations

import json
import socket

import pytest

from services.common import httpguard
from services.common.opsserver import OpsServer, create_ops_app
from services.dashboard.app import close_app, create_app
from services.dashboard.config import load_config
from services.generator.control import control_blueprint
from tests.unit.test_generator_engine import make_engine

DEEP = "[" * 100_000 + "]" * 100_000  # the body: 200 kB, refused by the size limit (413)
DEEP_SMALL = "[" * 8000 + "]" * 8000  # within the size limit: RecursionError in json.loads without the depth check
HUGE = '{"rate": 1' + "0" * 400 + "}"


@pytest.fixture
def generator():
    engine, _ = make_engine("--rate", "5", "--max-rate", "100000")
    app = create_ops_app(
        "generator", engine.readiness, registry=engine.metrics.registry, blueprints=[control_blueprint(engine)]
    )
    return app, engine


def _assert_json_error(response, status):
    statuses = status if isinstance(status, tuple) else (status,)
    assert response.status_code in statuses, response.get_data(as_text=True)[:300]
    assert response.is_json and response.get_json()["detail"], response.get_data(as_text=True)[:300]


def test_generator_refuses_cross_site_and_non_json_posts(generator):
    app, engine = generator
    http = app.test_client()
    # The request: text/plain, a foreign Origin, Sec-Fetch-Site cross-site.
    hostile = {"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    response = http.post("/control/rate", data='{"rate": 99999}', content_type="text/plain", headers=hostile)
    _assert_json_error(response, 403)
    # Each defence on its own: the content type, Fetch metadata, Origin.
    _assert_json_error(http.post("/control/rate", data='{"rate": 99999}', content_type="text/plain"), 415)
    _assert_json_error(http.post("/control/pause", data={"x": "1"}), 415)  # a form
    _assert_json_error(http.post("/control/burst"), 415)  # no content type at all
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}, {"Origin": "null"}):
        _assert_json_error(http.post("/control/rate", json={"rate": 99999}, headers=headers), 403)
    _assert_json_error(http.post("/control/pause", json={}, headers={"Origin": "https://evil.example"}), 403)
    assert engine.rate == 5 and engine.status()["paused"] is False and engine.status()["bursts_pending"] == 0
    # Same-origin browsers, curl and the dashboard's proxy (no Fetch metadata) still work.
    same = {"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost"}
    assert http.post("/control/rate", json={"rate": 7}, headers=same).get_json() == {"rate": 7.0}
    assert http.post("/control/pause", content_type="application/json").status_code == 200
    assert http.post("/control/resume", json={}).status_code == 200


PATHOLOGICAL = {
    "deep-100000": DEEP,
    "deep-8000": DEEP_SMALL,
    "rate-1e400-int": HUGE,
    "rate-1e999": '{"rate": 1e999}',
    "rate-minus-infinity": '{"rate": -Infinity}',
    "truncated": '{"rate": 1',
    "not-utf8": b'{"rate": "\xff"}',
    "unbalanced": '{"rate": [[[[[[]]]]]]',
}


@pytest.mark.parametrize("body", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
@pytest.mark.parametrize("path", ["/control/rate", "/control/pause", "/control/burst"])
def test_generator_answers_pathological_json_with_400(generator, path, body):
    app, engine = generator
    response = app.test_client().post(path, data=body, content_type="application/json")
    _assert_json_error(response, (400, 413) if body is DEEP else 400)
    assert engine.rate == 5 and engine.status()["paused"] is False


def test_every_ops_endpoint_limits_body_size(generator):
    app, _ = generator
    http = app.test_client()
    ten_mb = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    for method, path in [("POST", "/control/rate"), ("GET", "/healthz"), ("GET", "/metrics"), ("GET", "/readyz")]:
        response = http.open(path, method=method, data=ten_mb, content_type="application/json")
        _assert_json_error(response, 413)


def _raw_http(port: int, request: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_generator_bad_chunked_encoding_is_a_400_over_real_http(generator):
    app, engine = generator
    server = OpsServer(app, "127.0.0.1", 0).start()
    try:
        head = b"POST /control/rate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        status, answer = _raw_http(server.port, head + b"Transfer-Encoding: chunked\r\n\r\nZZ\r\n{}\r\n0\r\n\r\n")
        assert status == 400 and answer["error"] == "Bad Request", answer
        # A chunked body past the size limit (no Content-Length to refuse up front) is cut off with a 413.
        chunk = b" " * 8192
        big = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8)) + b"0\r\n\r\n"
        status, answer = _raw_http(server.port, head + b"Transfer-Encoding: chunked\r\n\r\n" + big)
        assert status == 413 and answer["detail"], answer
        # A well-formed chunked body still works.
        body = b'{"rate": 9}'
        status, answer = _raw_http(
            server.port, head + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
        )
        assert (status, answer) == (200, {"rate": 9.0})
    finally:
        server.stop()
    assert engine.rate == 9


@pytest.fixture
def dashboard():
    config = load_config(
        {
            "DATABASE_URL": "postgresql://demo_reader@127.0.0.1:9/ecommerce_demo?connect_timeout=1",
            "GENERATOR_URL": "http://127.0.0.1:9",  # nothing listens: a request that passes the checks is a 502
        }
    )
    app = create_app(config)
    yield app
    close_app(app)


@pytest.mark.parametrize("body", PATHOLOGICAL.values(), ids=PATHOLOGICAL.keys())
def test_dashboard_proxy_answers_pathological_json_with_400(dashboard, body):
    response = dashboard.test_client().post("/api/control/rate", data=body, content_type="application/json")
    _assert_json_error(response, (400, 413) if body is DEEP else 400)


def test_dashboard_limits_body_size_and_checks_origin(dashboard):
    http = dashboard.test_client()
    ten_mb = b"{" + b" " * (10 * 1024 * 1024) + b"}"
    for method, path in [("POST", "/api/control/rate"), ("GET", "/healthz"), ("GET", "/")]:
        _assert_json_error(http.open(path, method=method, data=ten_mb, content_type="application/json"), 413)
    _assert_json_error(http.post("/api/control/burst", json={}, headers={"Origin": "https://evil.example"}), 403)
    # Passing every check, the request reaches the (absent) generator.
    assert http.post("/api/control/burst", json={}, headers={"Origin": "http://localhost"}).status_code == 502


def test_loads_limits():
    assert httpguard.loads('{"a": [1, 2.5, "x"]}') == {"a": [1, 2.5, "x"]}
    assert httpguard.loads("[" * 32 + "]" * 32) is not None
    assert httpguard.loads('"[[[[' + "[" * 100 + '"') == "[[[[" + "[" * 100  # brackets inside strings
    for bad in ("[" * 33 + "]" * 33, "1" * 33, "NaN", "1e400", "{"):
        with pytest.raises(httpguard.BadJson):
            httpguard.loads(bad)


def test_the_dashboard_worker_hands_over_only_complete_requests():
    from services.dashboard.worker import MAX_HEAD_BYTES, request_complete

    head = b"POST /api/control/rate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    assert not request_complete(b"GET / HTTP/1.1\r\nHost: x\r\n")  # the head is not finished
    assert request_complete(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert not request_complete(head + b'Content-Length: 11\r\n\r\n{"rate":')  # the body is not all there
    assert request_complete(head + b'Content-Length: 11\r\n\r\n{"rate": 5}')
    assert request_complete(head + b'content-length:  11 \r\n\r\n{"rate": 5}')
    assert request_complete(head + b"Content-Length: 999999\r\n\r\n")  # over the limit: the app answers 413
    assert request_complete(head + b"Transfer-Encoding: chunked\r\n\r\n")  # read by the thread, with a timeout
    assert request_complete(b"GET /" + b"a" * (MAX_HEAD_BYTES + 1))  # gunicorn's parser refuses it
