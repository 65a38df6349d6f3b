"""services/bootstrap/credentials.py, the chart's credentials Job, run as the Job runs it (`python -m ...`) against
a stand-in for the Kubernetes API on 127.0.0.1 that records what it receives and answers like the API server
(201 Created, 409 AlreadyExists, 403 Forbidden). It must create the Secret once, never overwrite or read an
existing one, and fail with one line."""

from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading

import pytest

from tests.support import ROOT

KEYS = {"postgres-password", "demo-password", "demo-writer-password", "demo-reader-password"}


class FakeApiServer:
    """Keeps Secrets by name; POST creates (409 if present). Any other method is recorded and refused."""

    def __init__(self, *, forbid: bool = False):
        self.secrets: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self, status: int, body: dict):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(("POST", self.path, dict(self.headers)))
                if forbid:
                    return self._answer(403, {"kind": "Status", "reason": "Forbidden", "message": "no"})
                name = body["metadata"]["name"]
                if name in outer.secrets:
                    return self._answer(409, {"kind": "Status", "reason": "AlreadyExists"})
                outer.secrets[name] = body
                return self._answer(201, body)

            def do_GET(self):
                outer.requests.append(("GET", self.path, dict(self.headers)))
                self._answer(405, {})

            do_PUT = do_PATCH = do_DELETE = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def sa_dir(tmp_path):
    (tmp_path / "token").write_text("test-token\n")
    (tmp_path / "namespace").write_text("pgtd\n")
    return tmp_path


def run_job(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.bootstrap.credentials"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", **env},
        timeout=60,
    )


def test_creates_the_secret_once_and_never_touches_it_again(sa_dir):
    api = FakeApiServer()
    try:
        env = {
            "KUBERNETES_API_URL": api.url,
            "KUBERNETES_SA_DIR": str(sa_dir),
            "CREDENTIALS_NAME": "demo-pg-trickle-demo-credentials",
            "CREDENTIALS_LABELS": json.dumps({"app.kubernetes.io/name": "pg-trickle-demo"}),
        }
        first = run_job(env)
        assert first.returncode == 0, first.stderr
        assert "created Secret demo-pg-trickle-demo-credentials" in first.stdout
        secret = api.secrets["demo-pg-trickle-demo-credentials"]
        assert secret["metadata"]["namespace"] == "pgtd" and secret["type"] == "Opaque"
        assert secret["metadata"]["labels"] == {"app.kubernetes.io/name": "pg-trickle-demo"}
        assert set(secret["data"]) == KEYS
        passwords = [base64.b64decode(v).decode() for v in secret["data"].values()]
        assert len(set(passwords)) == 4 and all(len(p) == 32 and p.isascii() for p in passwords)
        method, path, headers = api.requests[0]
        assert (method, path) == ("POST", "/api/v1/namespaces/pgtd/secrets")
        assert headers["Authorization"] == "Bearer test-token"

        kept = json.dumps(secret, sort_keys=True)
        for _ in range(2):  # every later sync or upgrade runs the Job again
            again = run_job(env)
            assert again.returncode == 0, again.stderr
            assert "already exists; left unchanged" in again.stdout
        assert json.dumps(api.secrets["demo-pg-trickle-demo-credentials"], sort_keys=True) == kept
        assert [m for m, _, _ in api.requests] == ["POST", "POST", "POST"], "never reads, replaces or deletes"
    finally:
        api.close()


def test_a_refusal_is_one_line_and_exit_1(sa_dir):
    api = FakeApiServer(forbid=True)
    try:
        result = run_job({"KUBERNETES_API_URL": api.url, "KUBERNETES_SA_DIR": str(sa_dir), "CREDENTIALS_NAME": "x"})
    finally:
        api.close()
    assert result.returncode == 1
    assert result.stderr.startswith("credentials: error: the API server refused") and "HTTP 403" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CREDENTIALS_NAME is not set"),
        ({"CREDENTIALS_NAME": "x", "KUBERNETES_API_URL": "http://api.example:6443"}, "must be https://"),
        ({"CREDENTIALS_NAME": "x", "KUBERNETES_API_URL": "file:///etc/passwd"}, "must be https://"),
        ({"CREDENTIALS_NAME": "x"}, "no KUBERNETES_SERVICE_HOST"),
        ({"CREDENTIALS_NAME": "x", "CREDENTIALS_LABELS": "[1]", "KUBERNETES_API_URL": "http://127.0.0.1:1"}, None),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(sa_dir, env, message):
    result = run_job({"KUBERNETES_SA_DIR": str(sa_dir), **env})
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("credentials: configuration error: ")
    assert message is None or message in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_api_server_is_exit_1(sa_dir):
    # a port nothing listens on (bound, then closed)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run_job(
        {"KUBERNETES_API_URL": f"http://127.0.0.1:{port}", "KUBERNETES_SA_DIR": str(sa_dir), "CREDENTIALS_NAME": "x"}
    )
    assert result.returncode == 1 and "cannot reach the Kubernetes API" in result.stderr


def test_the_charts_credentials_job_creates_the_secret_its_pods_read(sa_dir):
    """The command and environment of the rendered credentials Job, run against the stand-in API server: the
    Secret it creates is the one every pod of the release reads, with every key they read."""
    from tests.deploy_support import containers, render_objects, workload

    objects = render_objects({})
    (container,) = containers(workload(objects, "Job", "credentials"))
    env = {e["name"]: e["value"] for e in container["env"]}
    api = FakeApiServer()
    try:
        result = subprocess.run(
            [sys.executable if part == "python" else part for part in container["command"]],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={"PATH": "/usr/bin:/bin", **env, "KUBERNETES_API_URL": api.url, "KUBERNETES_SA_DIR": str(sa_dir)},
            timeout=60,
        )
    finally:
        api.close()
    assert result.returncode == 0, result.stderr
    (created,) = api.secrets.values()
    read = {
        (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for o in objects
        for c in containers(o)
        for e in c.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    assert read and {name for name, _ in read} == {created["metadata"]["name"]}
    assert {key for _, key in read} <= set(created["data"])
    assert "app.kubernetes.io/instance" not in created["metadata"]["labels"]
