"""`python -m services.operator` as a process: bad configuration -> one line and exit code 2; a real run
against kmock's Kubernetes API (kubeconfig) reconciles, serves /healthz, and stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from devenv.postgres import free_port
from tests.operator_support import BASE, NAMESPACE, QUERY, RESOURCE, condition, k8s_api, streamtable  # noqa: F401
from tests.support import ROOT


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
