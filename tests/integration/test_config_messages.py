"""Issue 14, finding 8: every bad value or busy port is one line on stderr naming the variable, exit code 2.

Each case runs the real entry point (`python -m services.<name>`, `python -m devenv.preview`) in a subprocess
with a minimal environment; nothing here reaches a database (every failure happens before the first connection).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from contextlib import contextmanager

import pytest

from devenv.postgres import free_port
from tests.support import ROOT

BASE_ENV = {"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1"}
UNREACHABLE = "postgresql://u:p@127.0.0.1:9/db?connect_timeout=1"
PASSWORDS = {"DEMO_PASSWORD": "a", "DEMO_WRITER_PASSWORD": "b", "DEMO_READER_PASSWORD": "c"}


def run(module: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env={**BASE_ENV, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_one_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    # The preview prints its own progress on stdout; the error is stderr's only line.
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert len(lines) == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@contextmanager
def busy_port():
    """A port with something listening on 127.0.0.1 (as a second `make preview` or any other server)."""
    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        yield port


@pytest.mark.parametrize(
    ("module", "env", "variable"),
    [
        (
            "services.operator",
            {"OPERATOR_NAMESPACE": "demo", "OPERATOR_HEALTH_HOST": "999.999.999.999"},
            "OPERATOR_HEALTH_HOST",
        ),
        ("services.exporter", {"EXPORTER_HOST": "999.999.999.999"}, "EXPORTER_HOST"),
        ("services.dashboard", {"DASHBOARD_HOST": "999.999.999.999"}, "DASHBOARD_HOST"),
        ("services.generator", {"GENERATOR_HTTP_HOST": "999.999.999.999"}, "GENERATOR_HTTP_HOST"),
        ("services.generator", {"DATABASE_URL": "postgresql://u@127.0.0.1:99999/db"}, "DATABASE_URL"),
        ("services.exporter", {"DATABASE_URL": "postgresql://u@127.0.0.1:99999/db"}, "DATABASE_URL"),
        ("services.dashboard", {"DATABASE_URL": "", "PGPORT": "99999"}, "PGPORT"),
        ("services.bootstrap", {**PASSWORDS, "DATABASE_URL": "postgresql://u@127.0.0.1:99999/db"}, "DATABASE_URL"),
        ("services.bootstrap", {**PASSWORDS, "LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ("services.bootstrap", {**PASSWORDS, "BOOTSTRAP_CONNECT_TIMEOUT": "inf"}, "BOOTSTRAP_CONNECT_TIMEOUT"),
        ("services.bootstrap", {**PASSWORDS, "DEMO_PASSWORD": " secret "}, "DEMO_PASSWORD"),
        ("services.bootstrap", {**PASSWORDS, "DEMO_READER_PASSWORD": "secret\t"}, "DEMO_READER_PASSWORD"),
        ("services.generator", {"DEMO_WRITER_PASSWORD": " secret", "DATABASE_URL": ""}, "DEMO_WRITER_PASSWORD"),
        ("services.exporter", {"EXPORTER_SCRAPE_TIMEOUT": "inf"}, "EXPORTER_SCRAPE_TIMEOUT"),
        ("services.exporter", {"DATABASE_URL": "postgresql://u@127.0.0.1/db?connect_timeout=inf"}, "DATABASE_URL"),
        ("devenv.preview", {"PREVIEW_SCHEDULER_WORKERS": "0"}, "PREVIEW_SCHEDULER_WORKERS"),
        ("devenv.preview", {"PREVIEW_SCHEDULER_WORKERS": "33"}, "PREVIEW_SCHEDULER_WORKERS"),
        ("devenv.preview", {"PREVIEW_SCHEDULER_WORKERS": "two"}, "PREVIEW_SCHEDULER_WORKERS"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_a_bad_value_is_one_line_naming_the_variable(module, env, variable):
    env = {"DATABASE_URL": UNREACHABLE, **env}
    if not env["DATABASE_URL"]:
        del env["DATABASE_URL"]
        env.setdefault("PGHOST", "127.0.0.1")
        env.setdefault("PGPORT", "9")
    assert_one_line(run(module, env), variable)


@pytest.mark.parametrize(
    ("module", "host_var", "port_var", "extra"),
    [
        ("services.generator", "GENERATOR_HTTP_HOST", "GENERATOR_HTTP_PORT", {}),
        ("services.exporter", "EXPORTER_HOST", "EXPORTER_PORT", {}),
        ("services.dashboard", "DASHBOARD_HOST", "DASHBOARD_PORT", {}),
        ("services.operator", "OPERATOR_HEALTH_HOST", "OPERATOR_HEALTH_PORT", {"OPERATOR_NAMESPACE": "demo"}),
    ],
)
def test_a_busy_port_is_one_line_naming_the_variable(module, host_var, port_var, extra):
    with busy_port() as port:
        env = {"DATABASE_URL": UNREACHABLE, host_var: "127.0.0.1", port_var: str(port), **extra}
        result = run(module, env)
    assert_one_line(result, f"{port_var}={port}", "already in use")


@pytest.mark.slow
@pytest.mark.parametrize("variable", ["PREVIEW_PG_PORT", "GENERATOR_HTTP_PORT", "EXPORTER_PORT", "DASHBOARD_PORT"])
def test_a_second_preview_is_refused_in_one_line_naming_the_port(variable):
    """`make preview` twice: the second finds the first one's ports taken and says which variable to change,
    before starting anything (it used to print a traceback pointing to a deleted server log)."""
    ports = {
        name: str(free_port()) for name in ("PREVIEW_PG_PORT", "GENERATOR_HTTP_PORT", "EXPORTER_PORT", "DASHBOARD_PORT")
    }
    with busy_port() as port:
        ports[variable] = str(port)
        result = run("devenv.preview", ports)
    assert_one_line(result, f"{variable}={port}", "already in use")
    assert "PostgreSQL 18 listening" not in result.stdout
