"""Shared by the operator's end-to-end tests: kmock's Kubernetes API with the StreamTable resource."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any

import kmock as kmock_lib
import pytest_asyncio

NAMESPACE = "demo"
RESOURCE = "pgtrickle.io/v1alpha1/streamtables"
BASE = f"/apis/pgtrickle.io/v1alpha1/namespaces/{NAMESPACE}/streamtables"
QUERY = "SELECT c.country, COUNT(*) AS customers FROM customers c GROUP BY c.country"
WAIT_S = 20.0


def streamtable(name: str, **spec: Any) -> dict:
    return {
        "apiVersion": "pgtrickle.io/v1alpha1",
        "kind": "StreamTable",
        # kmock keeps neither resourceVersion nor uid; kopf's JSON-patches test the former
        "metadata": {"name": name, "namespace": NAMESPACE, "generation": 1, "resourceVersion": "1", "uid": name},
        "spec": spec,
    }


async def eventually(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Polls `check` (sync; run in a thread so the operator's loop keeps going) until it returns a truthy value."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await asyncio.to_thread(check)
        if last:
            return last
        await asyncio.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


class Emulator(kmock_lib.KubernetesEmulator):
    """kmock's Kubernetes emulator, plus metadata.generateName (kopf names its Events that way)."""

    async def _handle(self, request):
        if request.action == kmock_lib.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:10]}"
        return await super()._handle(request)


@pytest_asyncio.fixture(name="k8s")
async def k8s_api():
    """Fixture `k8s`: an in-process Kubernetes API (import `k8s_api` into a test module to use it)."""
    async with Emulator() as emulator, kmock_lib.Server(emulator):
        declare_resources(emulator)
        yield emulator


def declare_resources(emulator: kmock_lib.KubernetesEmulator) -> None:
    """What the operator discovers: StreamTables (with the status subresource), Events, Namespaces."""
    emulator.resources[RESOURCE] = kmock_lib.ResourceInfo(
        kind="StreamTable", namespaced=True, subresources={"status"}, verbs={"list", "watch", "patch"}
    )
    emulator.resources["v1/events"] = kmock_lib.ResourceInfo(kind="Event", namespaced=True, verbs={"create"})
    emulator.resources["v1/namespaces"] = kmock_lib.ResourceInfo(kind="Namespace", namespaced=False)


def condition(obj: dict, kind: str) -> dict:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == kind), {})
