"""The operator end to end: kopf (in-process, standalone, the real handlers) against kmock's in-process
Kubernetes API, and PostgreSQL 18 + the engine behind it. Apply a StreamTable -> the stream table exists
and its status is filled; change the schedule -> altered; a bad query -> Degraded with the database's
message; delete -> dropped or retained per deletionPolicy."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import kmock as kmock_lib
import kopf
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devenv.postgres import free_port
from services.common import pgtrickle
from services.operator.config import OperatorConfig
from services.operator.handlers import Databases, build_registry, make_settings
from services.operator.spec import FINALIZER
from tests.operator_support import (  # noqa: F401 - k8s_api is the fixture `k8s`
    BASE,
    NAMESPACE,
    QUERY,
    RESOURCE,
    Emulator,
    condition,
    eventually,
    k8s_api,
    streamtable,
)
from tests.unit.test_operator_crd import VALIDATOR


@pytest.fixture
def ecommerce(demo_db):
    return demo_db("ecommerce")


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_operator_against_kmock(k8s: Emulator, ecommerce, caplog):
    caplog.set_level(logging.INFO)

    health_port = free_port()
    config = OperatorConfig(
        scenario="ecommerce",
        namespace=NAMESPACE,
        health_host="127.0.0.1",
        health_port=health_port,
        sync_interval=1.0,
        delete_timeout=600.0,
        conninfo=ecommerce.owner_url,
        default_database=conninfo_to_dict(ecommerce.owner_url)["dbname"],
        log_level="INFO",
    )
    databases = Databases(config)
    registry = build_registry(
        config, databases, login=lambda **_: kopf.ConnectionInfo(server=str(k8s.url), insecure=True)
    )

    def obj(name: str) -> dict:
        try:
            found = k8s.objects[RESOURCE, NAMESPACE, name]
        except KeyError:
            return {}
        return {} if found.deleted else found.raw

    def table(name: str):
        with psycopg.connect(ecommerce.owner_url, autocommit=True) as conn:
            return pgtrickle.find_stream_table(conn, name)

    async def patch(name: str, body: dict) -> None:
        headers = {"Content-Type": "application/merge-patch+json"}
        async with k8s.patch(f"{BASE}/{name}", json=body, headers=headers) as response:
            assert response.status == 200, await response.text()

    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=make_settings(),
            standalone=True,
            namespaces=[NAMESPACE],
            liveness_endpoint=f"http://127.0.0.1:{health_port}/healthz",
            stop_flag=stop,
        )
    )
    try:
        if True:
            # apply -> created, finalizer set, status filled
            async with k8s.post(BASE, json=streamtable("country-counts", query=QUERY, schedule="1s")) as response:
                assert response.status == 200, await response.text()
            ready = await eventually(
                lambda: condition(obj("country-counts"), "Ready").get("status") == "True" and obj("country-counts"),
                "Ready=True on country-counts",
            )
            created = table("country_counts")
            assert (created.schedule, created.status) == ("1s", "ACTIVE")
            assert FINALIZER in ready["metadata"]["finalizers"]
            status = ready["status"]
            assert status["managed"] is True
            assert status["sqlName"] == "public.country_counts"
            assert status["engineStatus"] == "ACTIVE"
            assert status["effectiveRefreshMode"] == "DIFFERENTIAL" or ecommerce.engine != "emulator"
            assert status["schedule"] == "1s" and status["consecutiveErrors"] == 0
            assert status["lastRefresh"] and status["staleness"]
            assert list(VALIDATOR.iter_errors(ready)) == []  # what the operator writes fits the CRD

            # change the schedule -> altered in place
            await patch("country-counts", {"metadata": {"generation": 2}, "spec": {"schedule": "5m"}})
            await eventually(lambda: table("country_counts").schedule == "5m", "schedule altered to 5m")
            assert table("country_counts").pgt_id == created.pgt_id
            await eventually(lambda: obj("country-counts")["status"].get("schedule") == "5m", "status.schedule 5m")

            # suspend and resume
            await patch("country-counts", {"metadata": {"generation": 3}, "spec": {"suspend": True}})
            await eventually(lambda: table("country_counts").status == "SUSPENDED", "suspended")
            await eventually(
                lambda: condition(obj("country-counts"), "Ready").get("reason") == "Suspended", "Ready/Suspended"
            )
            await patch("country-counts", {"metadata": {"generation": 4}, "spec": {"suspend": False}})
            await eventually(lambda: table("country_counts").status == "ACTIVE", "resumed")
            await eventually(lambda: condition(obj("country-counts"), "Ready").get("status") == "True", "Ready again")

            # dropped behind the operator's back: the status timer creates it again
            def drop_by_hand():
                with psycopg.connect(ecommerce.owner_url, autocommit=True) as conn:
                    pgtrickle.drop_stream_table(conn, "country_counts")

            await asyncio.to_thread(drop_by_hand)
            recreated = await eventually(lambda: table("country_counts"), "country_counts re-created")
            assert recreated.pgt_id != created.pgt_id and recreated.schedule == "5m"

            # altered behind the operator's back: the status timer puts the spec's schedule back
            def alter_by_hand():
                with psycopg.connect(ecommerce.owner_url, autocommit=True) as conn:
                    pgtrickle.alter_stream_table(conn, "country_counts", schedule="7m")

            await asyncio.to_thread(alter_by_hand)
            await eventually(lambda: table("country_counts").schedule == "5m", "drift undone")
            assert table("country_counts").pgt_id == recreated.pgt_id

            # a second resource naming the same stream table (same definition) does not adopt it again
            twin = streamtable("country-twin", query=QUERY, schedule="5m")
            twin["spec"]["name"] = "country_counts"
            async with k8s.post(BASE, json=twin) as response:
                assert response.status == 200
            conflict = await eventually(
                lambda: (
                    condition(obj("country-twin"), "Degraded").get("reason") == "NameConflict"
                    and condition(obj("country-twin"), "Degraded")
                ),
                "NameConflict on country-twin",
            )
            assert "already managed by StreamTable country-counts" in conflict["message"]
            assert obj("country-twin")["status"]["managed"] is False

            # a bad query -> Degraded with the database's own message; nothing created
            async with k8s.post(BASE, json=streamtable("broken", query="SELEKT 1")) as response:
                assert response.status == 200
            degraded = await eventually(
                lambda: (
                    condition(obj("broken"), "Degraded").get("status") == "True"
                    and condition(obj("broken"), "Degraded")
                ),
                "Degraded=True on broken",
            )
            assert degraded["reason"] == "DatabaseError"
            assert 'syntax error at or near "SELEKT"' in degraded["message"]
            assert condition(obj("broken"), "Ready")["status"] == "False"
            assert table("broken") is None
            await asyncio.sleep(2.5)  # two status-timer periods later the problem is still reported
            assert condition(obj("broken"), "Degraded")["reason"] == "DatabaseError"
            assert obj("broken")["status"]["specApplied"] is False

            # fixing the query heals it
            await patch("broken", {"metadata": {"generation": 2}, "spec": {"query": QUERY}})
            await eventually(lambda: condition(obj("broken"), "Ready").get("status") == "True", "broken healed")

            # a query over a stream table not yet created: Degraded (DependencyMissing), retried until it exists
            downstream = streamtable(
                "busiest", query="SELECT country FROM upstream_counts ORDER BY customers DESC LIMIT 3"
            )
            async with k8s.post(BASE, json=downstream) as response:
                assert response.status == 200
            waiting = await eventually(
                lambda: (
                    condition(obj("busiest"), "Degraded").get("reason") == "DependencyMissing"
                    and condition(obj("busiest"), "Degraded")
                ),
                "busiest waiting for its dependency",
            )
            assert waiting["status"] == "True" and "upstream_counts" in waiting["message"]
            async with k8s.post(BASE, json=streamtable("upstream-counts", query=QUERY)) as response:
                assert response.status == 200
            await eventually(lambda: condition(obj("busiest"), "Ready").get("status") == "True", "busiest created")
            assert condition(obj("busiest"), "Degraded")["status"] == "False"
            assert table("busiest") is not None

            # liveness endpoint answers while the operator runs
            async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{health_port}/healthz") as rsp:
                assert rsp.status == 200

            # delete: Delete drops, Retain keeps
            await patch("broken", {"spec": {"deletionPolicy": "Retain"}})
            await asyncio.sleep(0.5)
            async with k8s.delete(f"{BASE}/country-twin") as response:
                assert response.status == 200
            await eventually(lambda: not obj("country-twin"), "country-twin released")
            assert table("country_counts") is not None  # the twin never managed it
            for name in ("country-counts", "broken", "busiest", "upstream-counts"):
                async with k8s.delete(f"{BASE}/{name}") as response:
                    assert response.status == 200
            await eventually(
                lambda: not any(obj(n) for n in ("country-counts", "broken", "busiest", "upstream-counts")),
                "all resources released",
            )
            assert table("country_counts") is None
            assert table("broken") is not None  # deletionPolicy: Retain
            assert table("busiest") is None and table("upstream_counts") is None

            def all_events() -> list[dict]:
                return [o.raw for (res, _, _), o in k8s.objects.items() if res == kmock_lib.resource("v1/events")]

            def involved(event: dict) -> tuple:
                return (event.get("involvedObject", {}).get("name"), event.get("reason"))

            # kopf.event only queues an Event; kopf's poster task (kopf/_core/engines/posting.py, poster) sends it
            # later, so the last deletions' Events may arrive after their resources are released (polled on the
            # loop, not in a thread as `eventually` does: kmock changes its objects on this loop)
            final = {("country-counts", "Dropped"), ("broken", "Retained")}
            deadline = asyncio.get_running_loop().time() + 20
            while not final <= {involved(e) for e in all_events()} and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.2)
            events = all_events()
            reasons = {(e.get("involvedObject", {}).get("name"), e.get("reason")) for e in events}
            assert ("country-counts", "Created") in reasons
            assert ("country-counts", "Altered") in reasons
            drift_events = [e["message"] for e in events if e.get("reason") == "Altered"]
            assert any("schedule 7m -> 5m (it had been changed outside the operator)" in m for m in drift_events)
            assert ("country-counts", "Dropped") in reasons
            assert ("broken", "DatabaseError") in reasons
            assert ("broken", "Retained") in reasons
            assert ("country-counts", "Suspended") in reasons and ("country-counts", "Resumed") in reasons
            waits = [
                e for e in events if e.get("involvedObject", {}).get("name") == "busiest" and e["type"] == "Warning"
            ]
            assert [e["reason"] for e in waits] == ["DependencyMissing"]  # once, not once per retry
    finally:
        stop.set()
        await asyncio.wait_for(operator, timeout=15)
        databases.close()
