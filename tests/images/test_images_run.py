"""`make test-images`: the five images built and run as the chart runs them (docs/containers.md).

A private dockerd (tests/images/docker_support.py) builds a Debian base with debootstrap from this machine's
apt sources and all five images from services/Dockerfile (legacy builder; BuildKit is checked on one image).
Each container runs with the chart's security context (read-only root, tmpfs /tmp, UID 10001, cap-drop ALL,
no-new-privileges) and the chart's environment (tests/deploy_support.py, chart_env), on the host's network,
against PostgreSQL 18 on 127.0.0.1 with the emulator; the operator against kmock's in-process Kubernetes API
on 127.0.0.1 through a mounted kubeconfig.

Deviations from a cluster, each forced by this machine: host networking (so every port is a free one on
127.0.0.1, set through the services' own variables), the emulator instead of pg_trickle, unique database
names, kmock's namespace for the operator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from devenv.postgres import free_port
from tests.deploy_support import chart_env
from tests.images.docker_support import CHART_LIKE, IMAGES, Docker, image, private_docker

pytestmark = [pytest.mark.images, pytest.mark.timeout(2400)]

HEALTHY_WITHIN_S = 120.0
STOP_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def docker():
    """The private daemon with the base and the five images built; stopped and removed whatever happens."""
    daemon = private_docker()
    try:
        daemon.start()
        daemon.build_base()
        context = daemon.context()
        for name in IMAGES:
            daemon.timings[f"build {name}"] = daemon.build(name, context)
        yield daemon
    finally:
        daemon.stop()
        daemon.remove()
        leftover = daemon.root.exists()
        report = ", ".join(f"{what} {seconds:.1f}s" for what, seconds in daemon.timings.items())
        print(f"\n[images] timings: {report}")
        assert not leftover, f"{daemon.root} could not be removed"


@pytest.fixture
def database(pg_server):
    """A unique database name, dropped afterwards."""
    names = []

    def make(scenario: str) -> str:
        names.append(f"{scenario}_img_{uuid.uuid4().hex[:8]}")
        return names[-1]

    yield make
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        for name in names:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def env_file(directory: Path, env: dict[str, str]) -> str:
    path = directory / f"env-{uuid.uuid4().hex[:8]}"
    path.write_text("".join(f"{key}={value}\n" for key, value in env.items()))
    path.chmod(0o600)
    return str(path)


def run_bootstrap(docker: Docker, pg_server, scenario: str, db: str):
    env = chart_env("Job", "bootstrap", scenario)
    env.update(PGHOST="127.0.0.1", PGPORT=str(pg_server.port), DEMO_ENGINE="emulator", DEMO_DATABASE=db)
    env.update(BOOTSTRAP_CONNECT_TIMEOUT="20")
    return docker.run(
        "run", "--rm", *CHART_LIKE, "--env-file", env_file(docker.root, env), image("bootstrap"), check=False
    )


def test_images_are_built_lean_and_share_their_layers(docker):
    sizes = {name: docker.inspect(image(name))["Size"] for name in IMAGES}
    base = docker.inspect("pgtd-base:debootstrap")["Size"]
    print("\n[images] sizes: " + ", ".join(f"{n} {s / 1e6:.0f} MB" for n, s in {"base": base, **sizes}.items()))
    layers = {name: docker.inspect(image(name))["RootFS"]["Layers"] for name in IMAGES}
    shared = layers["generator"]
    for name in ("bootstrap", "dashboard", "exporter"):
        assert layers[name] == shared, f"{name} does not share the generator's layers (base, venv, /app)"
    assert layers["operator"][: len(shared)] == shared and len(layers["operator"]) == len(shared) + 1
    for name, config in ((n, docker.inspect(image(n))["Config"]) for n in IMAGES):
        assert config["User"] == "10001:10001", name
        assert f"DEMO_SERVICE={name}" in config["Env"], name
        assert config["Labels"]["org.opencontainers.image.title"] == f"pg-trickle-demo-{name}"
        assert (config.get("Healthcheck") or {}).get("Test") == (
            ["NONE"] if name == "bootstrap" else ["CMD", "python", "-m", "services.common.healthcheck"]
        ), name
    # The operator adds kopf only: no `kubernetes` client (what kopf logs in with: services/operator/health.py).
    assert sizes["operator"] - sizes["generator"] < 40e6, sizes


def test_buildkit_builds_the_same_dockerfile(docker):
    """No `# syntax=` line: BuildKit uses its built-in frontend (no registry pull) and builds it as well."""
    seconds = docker.build("bootstrap", docker.root / "context", buildkit=True, tag="pg-trickle-demo/buildkit:test")
    docker.timings["buildkit bootstrap"] = seconds
    config = docker.inspect("pg-trickle-demo/buildkit:test")["Config"]
    assert config["User"] == "10001:10001" and "DEMO_SERVICE=bootstrap" in config["Env"]


@pytest.mark.parametrize("scenario", ["ecommerce", "fraud", "finance"])
def test_bootstrap_exits_0_for_each_scenario(docker, pg_server, database, scenario):
    db = database(scenario)
    result = run_bootstrap(docker, pg_server, scenario, db)
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-3000:]
    with psycopg.connect(pg_server.url(db)) as conn:
        (tables,) = conn.execute("SELECT count(*) FROM pgtrickle.pgt_stream_tables").fetchone()
    assert tables > 0


class KubeApi:
    """kmock's Kubernetes API (tests/operator_support.py) in a thread of its own, on 127.0.0.1."""

    def __enter__(self) -> KubeApi:
        from tests.operator_support import Emulator, declare_resources

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = contextlib.AsyncExitStack()

        async def start():
            import kmock

            emulator = await self.stack.enter_async_context(Emulator())
            await self.stack.enter_async_context(kmock.Server(emulator))
            declare_resources(emulator)
            return emulator

        self.emulator = self.call(start())
        self.url = str(self.emulator.url)
        return self

    def call(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def create(self, body: dict) -> int:
        from tests.operator_support import BASE

        async def post():
            async with self.emulator.post(BASE, json=body) as response:
                return response.status

        return self.call(post())

    def get(self, name: str) -> dict:
        from tests.operator_support import NAMESPACE, RESOURCE

        async def read():
            return self.emulator.objects[RESOURCE, NAMESPACE, name].raw

        return self.call(read())

    def __exit__(self, *exc) -> None:
        self.call(self.stack.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)


def health(docker: Docker, name: str) -> str:
    state = docker.inspect(name)["State"]
    if not state["Running"]:
        logs = docker.run("logs", name, check=False)
        raise AssertionError(f"{name} exited {state['ExitCode']}:\n{(logs.stdout + logs.stderr).decode()[-3000:]}")
    return state.get("Health", {}).get("Status", "none")


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_services_run_as_the_chart_runs_them(docker, pg_server, database, tmp_path):
    from tests.operator_support import NAMESPACE, QUERY, condition, streamtable

    db = database("ecommerce")
    boot = run_bootstrap(docker, pg_server, "ecommerce", db)
    assert boot.returncode == 0, boot.stderr.decode()[-3000:]
    local = {"PGHOST": "127.0.0.1", "PGPORT": str(pg_server.port), "PGDATABASE": db}
    ports = {name: free_port() for name in ("generator", "dashboard", "exporter", "operator")}
    generator_url = f"http://127.0.0.1:{ports['generator']}"
    envs = {
        "generator": {**chart_env("Deployment", "generator", "ecommerce"), **local,
                      "GENERATOR_HTTP_HOST": "127.0.0.1", "GENERATOR_HTTP_PORT": str(ports["generator"])},
        "dashboard": {**chart_env("Deployment", "dashboard", "ecommerce"), **local, "GENERATOR_URL": generator_url,
                      "DASHBOARD_HOST": "127.0.0.1", "DASHBOARD_PORT": str(ports["dashboard"])},
        "exporter": {**chart_env("Deployment", "exporter", "ecommerce"), **local,
                     "EXPORTER_HOST": "127.0.0.1", "EXPORTER_PORT": str(ports["exporter"])},
    }  # fmt: skip
    if "GENERATOR_URL" in envs["exporter"]:
        envs["exporter"]["GENERATOR_URL"] = generator_url

    with KubeApi() as kube:
        kubeconfig_dir = docker.root / "kube"
        kubeconfig_dir.mkdir(mode=0o755, exist_ok=True)
        (kubeconfig_dir / "config").write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "kmock", "cluster": {"server": kube.url}}],
                    "users": [{"name": "operator", "user": {"token": "not-a-secret"}}],
                    "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "operator"}}],
                    "current-context": "kmock",
                }
            )
        )
        (kubeconfig_dir / "config").chmod(0o644)
        envs["operator"] = {
            **chart_env("Deployment", "operator", "ecommerce"),
            **local,
            "OPERATOR_NAMESPACE": NAMESPACE,
            "OPERATOR_HEALTH_HOST": "127.0.0.1",
            "OPERATOR_HEALTH_PORT": str(ports["operator"]),
            "OPERATOR_SYNC_INTERVAL": "2",
            "KUBECONFIG": "/etc/pgtd-kube/config",
        }
        started = {}
        try:
            for name, env in envs.items():
                extra = ["-v", f"{kubeconfig_dir}:/etc/pgtd-kube:ro"] if name == "operator" else []
                docker.run("run", "-d", "--name", name, *CHART_LIKE, *extra,
                           "--env-file", env_file(docker.root, env), image(name))  # fmt: skip
                started[name] = time.monotonic()

            # every HEALTHCHECK turns healthy (the operator's is its /readyz: the Kubernetes API answers)
            deadline = time.monotonic() + HEALTHY_WITHIN_S
            waiting = set(envs)
            while waiting:
                waiting = {name for name in waiting if health(docker, name) != "healthy"}
                assert time.monotonic() < deadline, f"not healthy within {HEALTHY_WITHIN_S:.0f}s: {sorted(waiting)}"
                time.sleep(1)

            # the operator reconciles one StreamTable
            assert kube.create(streamtable("from-image", query=QUERY)) == 200
            deadline = time.monotonic() + 60
            while condition(kube.get("from-image"), "Ready").get("status") != "True":
                health(docker, "operator")
                assert time.monotonic() < deadline, kube.get("from-image")
                time.sleep(0.5)
            with psycopg.connect(pg_server.url(db)) as conn:
                (made,) = conn.execute(
                    "SELECT count(*) FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'from_image'"
                ).fetchone()
            assert made == 1

            # the generator writes
            with psycopg.connect(pg_server.url(db)) as conn:
                (before,) = conn.execute("SELECT count(*) FROM orders").fetchone()
                deadline = time.monotonic() + 60
                while conn.execute("SELECT count(*) FROM orders").fetchone()[0] <= before:
                    assert time.monotonic() < deadline, "the generator wrote no orders"
                    time.sleep(1)

            # the dashboard's snapshot has rows; the exporter says pg_trickle_up 1
            status, body = http_get(f"http://127.0.0.1:{ports['dashboard']}/api/snapshot")
            assert status == 200, body[:500]
            panels = json.loads(body)["panels"]
            assert any(p["table"] and p["table"]["rows"] for p in panels), panels
            status, body = http_get(f"http://127.0.0.1:{ports['exporter']}/metrics")
            assert status == 200 and b"\npg_trickle_up 1" in body, body[:2000]
        finally:
            stops = {}
            for name in started:
                began = time.monotonic()
                result = docker.run("stop", "-t", "10", name, check=False, timeout=60)
                stops[name] = (result.returncode, time.monotonic() - began, docker.inspect(name)["State"]["ExitCode"])
            print("\n[images] docker stop: " + ", ".join(f"{n} {s:.1f}s exit {c}" for n, (_, s, c) in stops.items()))
    for name, (code, seconds, exit_code) in stops.items():
        logs = docker.run("logs", name, check=False)
        output = (logs.stdout + logs.stderr).decode()[-2000:]
        assert code == 0 and seconds < STOP_WITHIN_S, f"docker stop {name}: exit {code} after {seconds:.1f}s"
        assert exit_code == 0, f"{name} exited {exit_code} on SIGTERM:\n{output}"
