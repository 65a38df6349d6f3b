"""Helpers for the monitoring tests: a real Prometheus (Debian's package) and the exporter as a subprocess,
plus the PromQL expressions of the dashboards and alert rules."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from devenv.postgres import free_port
from tests.support import ROOT, require_tool

ALERTS = ROOT / "monitoring/prometheus/alerts.yaml"  # rendered from the monitoring package (monitoring/build.py)
DASHBOARDS = ROOT / "monitoring/dashboards"


def monitoring_build():
    """monitoring/build.py as a module (the package is standalone: a script, not part of `services`)."""
    spec = importlib.util.spec_from_file_location("monitoring_build", ROOT / "monitoring" / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def http_get(url: str, timeout: float = 5) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for(predicate, timeout: float, message: str, interval: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (urllib.error.URLError, ConnectionError, OSError):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message)


class ExporterProcess:
    """`python -m services.exporter` on 127.0.0.1 and a free port, JSON log in a temporary file."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_file = tempfile.NamedTemporaryFile(prefix="exporter-", suffix=".log", delete=False)  # noqa: SIM115
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "EXPORTER_HOST": "127.0.0.1",
            "EXPORTER_PORT": str(self.port),
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        if database_url:
            self.env["DATABASE_URL"] = database_url
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ExporterProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.exporter"],
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        return self

    def wait_ready(self, timeout: float = 20) -> None:
        def ready():
            assert self.proc.poll() is None, f"exporter exited early:\n{self.log_text()}"
            return http_get(f"{self.url}/readyz")[0] == 200

        wait_for(ready, timeout, f"exporter not ready within {timeout}s:\n{self.log_text()}")

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    def __enter__(self) -> ExporterProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log_file.close()
        os.unlink(self.log_file.name)

    def log_text(self) -> str:
        with open(self.log_file.name) as handle:
            return handle.read()

    def metrics_text(self) -> str:
        status, text = http_get(f"{self.url}/metrics", timeout=10)
        assert status == 200, text
        return text


class PrometheusServer:
    """Debian's prometheus on 127.0.0.1:<free port>, with our config and a temporary TSDB; stopped by PID."""

    def __init__(
        self,
        workdir: Path,
        targets: dict[str, str],
        rule_files: list[Path],
        interval: str = "1s",
        target_labels: dict[str, str] | None = None,
    ):
        self.binary = require_tool("prometheus", "Debian package prometheus")
        self.workdir = workdir
        self.port = free_port()
        config = {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "rule_files": [str(path) for path in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target], "labels": target_labels or {}}]}
                for job, target in targets.items()
            ],
        }
        self.config_file = workdir / "prometheus.yml"
        self.config_file.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> PrometheusServer:
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--storage.tsdb.retention.time=1h",
                ],
                stdout=log,
                stderr=log,
            )
        try:
            wait_for(lambda: self.proc.poll() is None and http_get(f"{self.url}/-/ready")[0] == 200, 30, "")
        except AssertionError:
            self.stop()
            raise AssertionError(f"prometheus not ready:\n{self.log()}") from None
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def api(self, path: str, **params) -> dict:
        status, text = http_get(f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=10)
        body = json.loads(text)
        assert status == 200 and body["status"] == "success", f"{path} {params}: {text}"
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def firing(self, alertname: str) -> list[dict]:
        return [
            a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]

    def targets_up(self) -> bool:
        active = self.api("targets")["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)


# -- the expressions under test --------------------------------------------------------------------------


def alert_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def panel_targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) for every query of every panel (rows' nested panels included)."""
    out = []

    def walk(panels):
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    out.append((panel.get("title", ""), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard.get("panels", []))
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    """Grafana's template variables as the test sets them."""
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(f"${{{name}}}", values[name]).replace(f"${name}", values[name])
    assert "$" not in expr.replace("$$", ""), f"unsubstituted variable in {expr}"
    return expr


_COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool\b)")


def as_bool(expr: str) -> str:
    """The expression with every comparison turned into its `bool` form (outside label matchers), so it
    returns 0/1 for every series it reads instead of only the ones that breach the threshold."""
    out, depth, quote, i = [], 0, None, 0
    while i < len(expr):
        ch = expr[i]
        if quote:
            out.append(ch)
            if ch == "\\":
                out.append(expr[i + 1])
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            out.append(ch)
        elif ch == "{":
            depth += 1
            out.append(ch)
        elif ch == "}":
            depth -= 1
            out.append(ch)
        elif depth == 0 and (match := _COMPARISON.match(expr, i)):
            out.append(f"{match.group(1)} bool")
            i += len(match.group(1))
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


_METRIC = re.compile(r"\b((?:pg_trickle|demo_generator)_[a-z_]+)\b")


def metric_names(expr: str) -> set[str]:
    return set(_METRIC.findall(expr))
