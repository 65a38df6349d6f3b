"""`python -m services.operator` as a process: bad configuration -> one line and exit code 2; a real run
against kmock's Kubernetes API (kubeconfig) reconciles, serves /healthz, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import aiohttp
import pytest

from devenv.postgres import free_port
from tests.operator_support import BASE, NAMESPACE, QUERY, RESOURCE, condition, k8s_api, streamtable  # noqa: F401
from tests.support import ROOT, missing_prerequisite


def base_env(**extra: str) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    return {**keep, **extra}


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("OPERATOR_HEALTH_PORT", "http", "OPERATOR_HEALTH_PORT='http' is not a valid int"),
        ("OPERATOR_SYNC_INTERVAL", "0", "OPERATOR_SYNC_INTERVAL='0' is too small"),
        ("OPERATOR_NAMESPACE", "Not_A_Namespace", "OPERATOR_NAMESPACE='Not_A_Namespace' is not a valid namespace"),
        ("DEMO_SCENARIO", "banking", "DEMO_SCENARIO='banking' is not valid"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_code_2(variable, value, expected):
    env = base_env(**{"OPERATOR_NAMESPACE": "demo", variable: value})
    result = subprocess.run(
        [sys.executable, "-m", "services.operator"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("operator: configuration error: ")
    assert expected in lines[0]


def test_namespace_is_required_outside_a_pod():
    result = subprocess.run(
        [sys.executable, "-m", "services.operator"],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "OPERATOR_NAMESPACE is not set" in result.stderr


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_runs_against_a_kubeconfig_and_stops_on_sigterm(k8s, demo_db, tmp_path):
    db = demo_db("ecommerce")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": str(k8s.url)}}],
                "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
                "current-context": "kmock",
            }
        )
    )
    port = free_port()
    env = base_env(
        KUBECONFIG=str(kubeconfig),
        HOME=str(tmp_path),
        OPERATOR_NAMESPACE=NAMESPACE,
        OPERATOR_HEALTH_HOST="127.0.0.1",
        OPERATOR_HEALTH_PORT=str(port),
        OPERATOR_SYNC_INTERVAL="1",
        DATABASE_URL=db.owner_url,
        LOG_LEVEL="INFO",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.operator", cwd=ROOT, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                if process.returncode is not None:
                    raise AssertionError((await process.stderr.read()).decode()[:3000])  # why it exited
                try:
                    async with http.get(f"http://127.0.0.1:{port}/healthz") as rsp:
                        if rsp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, "/healthz never answered"
                await asyncio.sleep(0.3)

        async with k8s.post(BASE, json=streamtable("from-process", query=QUERY)) as response:
            assert response.status == 200
        deadline = time.monotonic() + 30
        while condition(k8s.objects[RESOURCE, NAMESPACE, "from-process"].raw, "Ready").get("status") != "True":
            assert time.monotonic() < deadline, k8s.objects[RESOURCE, NAMESPACE, "from-process"].raw
            await asyncio.sleep(0.3)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        stderr = await asyncio.wait_for(process.stderr.read(), timeout=30)
        code = await asyncio.wait_for(process.wait(), timeout=30)
    messages = [json.loads(line)["msg"] for line in stderr.decode().splitlines() if line.startswith("{")]
    assert code == 0, stderr.decode()[-2000:]
    assert "operator starting" in messages and messages[-1] == "operator stopped"
    assert any(m.startswith("created stream table from_process") for m in messages)


# -- the image's user: a UID without a passwd entry, the chart's environment ---------------------------------
NO_PASSWD_UID = 54_321


def interpreter_for(uid: int) -> tuple[str, dict[str, str]]:
    """A Python that `uid` may execute, and the environment that lets it import the venv's packages: the venv's
    own when every directory up to it is open to others, else the system's python3 of the same version with the
    venv's site-packages on PYTHONPATH (a root-only pyenv under /root, as on CI's machines)."""
    import sysconfig

    own = os.path.realpath(sys.executable)
    if all(os.stat(p).st_mode & 0o001 for p in [own, *map(str, __import__("pathlib").Path(own).parents)]):
        return sys.executable, {}
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/bin:/bin")
    if system is None:
        pytest.skip(f"{own} is not executable by other users and there is no /usr/bin/{version}")
    return system, {"PYTHONPATH": os.pathsep.join([str(ROOT), sysconfig.get_paths()["purelib"]])}


def kubeconfig_for(server: str) -> str:
    """A kubeconfig in a directory any UID can read (pytest's tmp_path is root's only)."""
    directory = tempfile.mkdtemp(prefix="pgtd-kubeconfig-")
    os.chmod(directory, 0o755)  # noqa: S103 - a test kubeconfig holding a dummy token
    path = os.path.join(directory, "kubeconfig")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kmock", "cluster": {"server": server}}],
        "users": [{"name": "tester", "user": {"token": "not-a-secret"}}],
        "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "tester"}}],
        "current-context": "kmock",
    }
    with open(path, "w") as handle:
        json.dump(config, handle)
    os.chmod(path, 0o644)
    return path


def operator_env_from_chart(db, kubeconfig: str, port: int) -> dict[str, str]:
    """The chart's variables for the operator Deployment (tests/deploy_support.py, chart_env), with what this
    machine forces: kmock's namespace, the local server and database, a free probe port on 127.0.0.1."""
    from psycopg.conninfo import conninfo_to_dict

    from tests.deploy_support import chart_env

    env = chart_env("Deployment", "operator", "ecommerce")
    assert env["POD_ID"].startswith("demo-pg-trickle-demo-operator-"), "the chart passes the pod's name"
    target = conninfo_to_dict(db.owner_url)
    env.update(
        OPERATOR_NAMESPACE=NAMESPACE,
        OPERATOR_HEALTH_HOST="127.0.0.1",
        OPERATOR_HEALTH_PORT=str(port),
        OPERATOR_SYNC_INTERVAL="1",
        PGHOST="127.0.0.1",
        PGPORT=str(target["port"]),
        PGDATABASE=target["dbname"],
        KUBECONFIG=kubeconfig,
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


async def start_as(uid: int, env: dict[str, str]) -> asyncio.subprocess.Process:
    python, extra = interpreter_for(uid)
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL")}  # no HOME, no USER
    return await asyncio.create_subprocess_exec(
        python,
        "-m",
        "services.operator",
        cwd=ROOT,
        env={**keep, **extra, **env},
        stderr=asyncio.subprocess.PIPE,
        user=uid,
        group=uid,
        extra_groups=[],
    )


async def get(http: aiohttp.ClientSession, url: str) -> tuple[int, dict]:
    async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as rsp:
        return rsp.status, await rsp.json()


async def wait_for_probe(process, http, url: str, timeout: float = 30) -> tuple[int, dict]:
    deadline = time.monotonic() + timeout
    while True:
        if process.returncode is not None:
            raise AssertionError((await process.stderr.read()).decode()[-3000:])  # why it exited
        try:
            return await get(http, url)
        except aiohttp.ClientError:
            pass
        assert time.monotonic() < deadline, f"{url} never answered"
        await asyncio.sleep(0.3)


async def stop(process) -> tuple[int, list[dict], str]:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    stderr = await asyncio.wait_for(process.stderr.read(), timeout=30)
    code = await asyncio.wait_for(process.wait(), timeout=30)
    records = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    return code, records, stderr.decode()


def require_root_for_setuid() -> None:
    if os.geteuid() != 0:
        missing_prerequisite("running the operator as another UID needs root")
    with pytest.raises(KeyError):
        pwd.getpwuid(NO_PASSWD_UID)  # the point: no passwd entry, like UID 10001 in the image


@pytest.mark.asyncio
@pytest.mark.timeout(150)
async def test_runs_as_a_uid_without_a_passwd_entry_with_the_charts_environment(k8s, demo_db):
    """kopf's default identity calls getpass.getuser(), which raised KeyError for the image's UID 10001 and
    crashed the operator a second after start (kopf/_core/engines/peering.py, detect_own_id). With the chart's
    POD_ID and an explicit identity it starts, reconciles, is live and ready, and stops on SIGTERM."""
    require_root_for_setuid()
    db = demo_db("ecommerce")
    port = free_port()
    env = operator_env_from_chart(db, kubeconfig_for(str(k8s.url)), port)
    process = await start_as(NO_PASSWD_UID, env)
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await wait_for_probe(process, http, f"http://127.0.0.1:{port}/healthz")
            assert status == 200 and body["status"] == "ok"
            async with k8s.post(BASE, json=streamtable("as-uid", query=QUERY)) as response:
                assert response.status == 200
            deadline = time.monotonic() + 30
            while condition(k8s.objects[RESOURCE, NAMESPACE, "as-uid"].raw, "Ready").get("status") != "True":
                assert process.returncode is None, "the operator exited"
                assert time.monotonic() < deadline, k8s.objects[RESOURCE, NAMESPACE, "as-uid"].raw
                await asyncio.sleep(0.3)
            status, body = await get(http, f"http://127.0.0.1:{port}/readyz")
            assert status == 200, body
    finally:
        code, records, stderr = await stop(process)
    assert code == 0, stderr[-3000:]
    assert "getpwuid" not in stderr and "Traceback" not in stderr, stderr[-3000:]
    starting = next(r for r in records if r["msg"] == "operator starting")
    assert starting["identity"] == env["POD_ID"]
    assert any(r["msg"].startswith("created stream table as_uid") for r in records)
    # (aiohttp may log "Unclosed connector" for kopf's API session after our last line: the lines are checked)
    assert "operator stopped" in [r["msg"] for r in records], stderr[-3000:]


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_an_unreachable_api_is_not_ready_but_stays_alive(demo_db):
    """No Kubernetes API at the kubeconfig's address: /readyz says so (503, "cannot reach the Kubernetes API"),
    /healthz stays 200 (a liveness probe must not restart the operator for an outage it cannot fix), and the
    process keeps running until SIGTERM."""
    db = demo_db("ecommerce")
    port = free_port()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = operator_env_from_chart(db, kubeconfig_for(dead), port)
    if os.geteuid() == 0:
        require_root_for_setuid()
        process = await start_as(NO_PASSWD_UID, env)
    else:
        process = await start_as(os.geteuid(), env)
    try:
        async with aiohttp.ClientSession() as http:
            status, _ = await wait_for_probe(process, http, f"http://127.0.0.1:{port}/healthz")
            assert status == 200
            status, body = await get(http, f"http://127.0.0.1:{port}/readyz")
            assert status == 503, body
            assert body["detail"].startswith(f"cannot reach the Kubernetes API at {dead}"), body
            await asyncio.sleep(8)  # past kopf's first retries of the watch
            assert process.returncode is None, "the operator exited while the API was unreachable"
            status, _ = await get(http, f"http://127.0.0.1:{port}/healthz")
            assert status == 200
            status, body = await get(http, f"http://127.0.0.1:{port}/readyz")
            assert status == 503 and "cannot reach the Kubernetes API" in body["detail"], body
    finally:
        code, records, stderr = await stop(process)
    assert code == 0, stderr[-3000:]
    # (aiohttp may log "Unclosed connector" for kopf's API session after our last line: the lines are checked)
    assert "operator stopped" in [r["msg"] for r in records], stderr[-3000:]
