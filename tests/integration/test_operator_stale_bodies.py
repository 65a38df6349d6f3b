"""The operator's kopf handlers fed stale bodies, deterministically, against PostgreSQL 18 + the engine.

kopf hands a resource's timer and its change handlers the body last seen on the watch stream, which lags
behind the handlers' own status patches; and it re-runs a change handler on a stale body when the
resourceVersion of its own patch does not come back within settings.persistence.consistency_timeout
(kopf/_core/reactor/processing.py, process_resource_causes; kmock never bumps resourceVersion, so in
test_operator_kopf.py it happens under load). Before services/operator/handlers.py kept ownership in
kopf's per-resource memo (Ownership), such a body made the operator "adopt" the stream table it had just
created, forget that it had suspended one (so it was never resumed), and leave a table it created behind
on delete ("this resource never created or adopted it"). Here the handlers are called in that order
directly (no Kubernetes API: Events are collected instead of posted)."""

from __future__ import annotations

import copy
from datetime import timedelta

import kopf
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devenv.postgres import free_port
from services.common import pgtrickle
from services.operator.config import OperatorConfig
from services.operator.handlers import Databases, build_registry

QUERY = "SELECT c.country, COUNT(*) AS customers FROM customers c GROUP BY c.country"
NAME = "stale_counts"


@pytest.fixture
def ecommerce(demo_db):
    return demo_db("ecommerce")


@pytest.fixture
def events(monkeypatch):
    posted: list[tuple[str, str, str]] = []

    def collect(body, *, type: str, reason: str, message: str = "", **_) -> None:
        posted.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", collect)
    return posted


@pytest.fixture
def operator(ecommerce):
    config = OperatorConfig(
        scenario="ecommerce",
        namespace="demo",
        health_host="127.0.0.1",
        health_port=free_port(),
        sync_interval=1.0,
        delete_timeout=0.0,
        conninfo=ecommerce.owner_url,
        default_database=conninfo_to_dict(ecommerce.owner_url)["dbname"],
        log_level="INFO",
    )
    databases = Databases(config)
    registry = build_registry(config, databases)
    # kopf's registries hold the functions as decorated (kopf/_core/intents/registries.py)
    found = registry._changing.get_all_handlers() + registry._spawning.get_all_handlers()
    yield {handler.fn.__name__: handler.fn for handler in found}
    databases.close()


def call(handler, memo: kopf.Memo, generation: int, spec: dict, status: dict) -> kopf.Patch:
    body = {
        "apiVersion": "pgtrickle.io/v1alpha1",
        "kind": "StreamTable",
        "metadata": {"name": "stale-counts", "namespace": "demo", "uid": "stale-counts", "generation": generation},
        "spec": spec,
        "status": status,
    }
    patch = kopf.Patch()
    handler(
        body=body,
        spec=spec,
        meta=body["metadata"],
        status=status,
        patch=patch,
        memo=memo,
        owners={},
        runtime=timedelta(seconds=1),
    )
    return patch


def patched(patch: kopf.Patch) -> dict:
    return copy.deepcopy(dict(patch.get("status", {})))


def test_stale_bodies_neither_lose_nor_invent_ownership(operator, ecommerce, events):
    apply_spec, sync_status, remove = operator["apply_spec"], operator["sync_status"], operator["remove"]
    memo = kopf.Memo()
    spec1 = {"name": NAME, "query": QUERY, "schedule": "1s"}

    def table():
        with psycopg.connect(ecommerce.owner_url, autocommit=True) as conn:
            return pgtrickle.find_stream_table(conn, NAME)

    # generation 1: created
    first = patched(call(apply_spec, memo, 1, spec1, {}))
    assert first["managed"] is True and first["observedGeneration"] == 1
    assert [reason for _, reason, _ in events] == ["Created"]
    created = table()

    # the create handler again on the body from before its own patch (status empty): nothing to adopt
    again = patched(call(apply_spec, memo, 1, spec1, {}))
    assert again["managed"] is True
    assert [reason for _, reason, _ in events] == ["Created"], events
    assert table().pgt_id == created.pgt_id

    # generation 2: suspended by the operator
    spec2 = {**spec1, "suspend": True}
    second = patched(call(apply_spec, memo, 2, spec2, first))
    assert second["suspendedByOperator"] is True and table().status == "SUSPENDED"
    # ... and again on a body whose status predates that (suspendedByOperator false): still ours to resume
    stale_two = patched(call(apply_spec, memo, 2, spec2, {**first, "observedGeneration": 2}))
    assert stale_two["suspendedByOperator"] is True and stale_two["managed"] is True

    # the status timer on a snapshot of generation 1 (before the suspension): skipped, writes nothing
    assert patched(call(sync_status, memo, 1, spec1, first)) == {}
    # the status timer on generation 2 with a status that predates the handler's patch: engine figures
    # only, never the ownership read from that snapshot
    stale_status = {**first, "observedGeneration": 2, "managed": False, "suspendedByOperator": False}
    timed = patched(call(sync_status, memo, 2, spec2, stale_status))
    assert timed["engineStatus"] == "SUSPENDED"
    assert not {"managed", "suspendedByOperator", "observedGeneration"} & timed.keys(), timed

    # generation 3 on a stale status: resumed, because this operator suspended it
    spec3 = {**spec1, "suspend": False}
    third = patched(call(apply_spec, memo, 3, spec3, {**first, "observedGeneration": 2}))
    assert table().status == "ACTIVE" and third["suspendedByOperator"] is False
    assert ("Normal", "Resumed") in {(kind, reason) for kind, reason, _ in events}

    # generation 2's body delivered after generation 3 was handled: superseded, nothing done or written
    assert patched(call(apply_spec, memo, 2, spec2, second)) == {}
    assert table().status == "ACTIVE"

    # deleted on a body whose status says nothing of ownership: the table this resource created is dropped
    call(remove, memo, 3, spec3, {})
    assert table() is None
    assert ("Normal", "Dropped") in {(kind, reason) for kind, reason, _ in events}
