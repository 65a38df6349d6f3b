"""Helpers for tests that run the generator: a subprocess wrapper and what a run left in the database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

import psycopg
from prometheus_client.parser import text_string_to_metric_families

from devenv.postgres import free_port
from tests.support import ROOT


# -- helpers ------------------------------------------
class GeneratorProcess:
    """`python -m services.generator` in a subprocess, with its HTTP port on 127.0.0.1 and its JSON log
    in a temporary file."""

    def __init__(self, database_url: str, *flags: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_file = tempfile.NamedTemporaryFile(prefix="generator-", suffix=".log", delete=False)  # noqa: SIM115
        flags = tuple(word for flag in flags for word in flag.split())  # "--rate 50 --seed 1" or separate
        self.args = [
            sys.executable,
            "-m",
            "services.generator",
            "--database-url",
            database_url,
            "--http-host",
            "127.0.0.1",
            "--http-port",
            str(self.port),
            *flags,
        ]
        self.env = {"PATH": os.environ.get("PATH", ""), "LOG_LEVEL": "INFO", **(env or {})}
        if os.environ.get("DEMO_SQL_DIR"):
            self.env["DEMO_SQL_DIR"] = os.environ["DEMO_SQL_DIR"]
        self.proc: subprocess.Popen | None = None

    def start(self) -> GeneratorProcess:
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=self.log_file, stderr=self.log_file)
        return self

    def __enter__(self) -> GeneratorProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log_file.close()
        os.unlink(self.log_file.name)

    # HTTP
    def http(self, method: str, path: str, body: bytes | str | None = None, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else body
        if data is None and method == "POST":
            data = b""  # the control API accepts only JSON POSTs; an empty body is fine
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            status, text = exc.code, exc.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def control(self) -> dict:
        status, body = self.http("GET", "/control")
        assert status == 200, body
        return body

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, text = self.http("GET", "/metrics")
        assert status == 200
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples

    def events_metric_total(self) -> float:
        return sum(v for (name, _), v in self.metrics().items() if name == "demo_generator_events_total")

    def wait_ready(self, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"generator exited early:\n{self.log_text()}"
            try:
                status, _ = self.http("GET", "/readyz")
                if status == 200:
                    return self.control()
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"generator not ready within {timeout}s:\n{self.log_text()}")

    # process
    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 10) -> tuple[int, float]:
        started = time.monotonic()
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout)
        return code, time.monotonic() - started

    def log_text(self) -> str:
        with open(self.log_file.name) as handle:
            return handle.read()

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                records.append({"msg": line})
        return records

    def summary(self) -> dict:
        finals = [r for r in self.log_records() if r.get("msg") == "generator stopped"]
        assert len(finals) == 1, self.log_text()
        return finals[0]


@dataclass(frozen=True)
class RunInDatabase:
    rows: int
    distinct_seq: int
    max_seq: int
    ledger_events: int | None
    ledger_batches: int | None


def run_in_database(url: str, run_id: str) -> RunInDatabase:
    """What the database holds for one generator run: its order rows and its ledger row."""
    with psycopg.connect(url) as conn:
        rows, distinct_seq, max_seq = conn.execute(
            "SELECT count(*), count(DISTINCT generator_seq), coalesce(max(generator_seq), 0)"
            " FROM orders WHERE generator_run_id = %s",
            (run_id,),
        ).fetchone()
        ledger = conn.execute(
            "SELECT events_committed, last_batch FROM demo_meta.generator_progress WHERE run_id = %s", (run_id,)
        ).fetchone()
    return RunInDatabase(rows, distinct_seq, max_seq, *(ledger or (None, None)))


def assert_exactly_once(url: str, run_id: str, committed_total: int) -> RunInDatabase:
    """Orders of the run numbered 1..N without gaps or repeats, N = the ledger = the generator's count
    (runs here write orders only: repricing off)."""
    found = run_in_database(url, run_id)
    assert found.rows > 0
    assert found.rows == found.distinct_seq == found.max_seq, f"lost or duplicated events: {found}"
    assert found.ledger_events == found.rows == committed_total, found
    return found


def wait_until(predicate, timeout: float, message: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message)


def order_count(url: str, run_id: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM orders WHERE generator_run_id = %s", (run_id,)).fetchone()[0]


def run_generator_until_converged(db, flags: str, *, converge_within: float = 20) -> tuple[dict, dict]:
    """Runs the generator (subprocess, writer role) with `flags` while the scheduler refreshes, then waits
    until every stream table of the scenario equals its defining query (or `converge_within` passes).
    Returns (events committed by kind, {stream table: (rows, extra, missing)}) for the caller to assert."""
    from devenv.scheduler import EmulatorScheduler
    from tests.support import scenario_defining_queries, stream_table_differences

    scheduler = EmulatorScheduler(db.admin_url, tick_interval_ms=200).start() if db.engine == "emulator" else None
    try:
        with GeneratorProcess(db.writer_url, flags) as gen:
            assert gen.wait(30) == 0, gen.log_text()
            committed = gen.summary()["events_committed"]
        queries = scenario_defining_queries(db.scenario)
        deadline = time.monotonic() + converge_within  # 5 s schedules must come round
        while True:
            with psycopg.connect(db.owner_url) as conn:
                report = {name: stream_table_differences(conn, name, q["query"]) for name, q in queries.items()}
            if all(extra == missing == 0 for _, extra, missing in report.values()) or time.monotonic() > deadline:
                return committed, report
            time.sleep(0.5)
    finally:
        if scheduler is not None:
            scheduler.stop()


def assert_converged(report: dict) -> None:
    for name, (rows, extra, missing) in report.items():
        assert rows > 0, f"{name} is empty"
        assert extra == 0 and missing == 0, f"{name}: {extra} stored rows not in its query, {missing} missing"
