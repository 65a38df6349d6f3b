"""services.common.pgtrickle and the pool, as the dashboard and exporter will use them: the read-only
role reads every catalog view it needs, through a pool with identity, timeout and read-only sessions."""

from __future__ import annotations

import psycopg
import pytest

from services.common import pgtrickle
from services.common.db import make_pool
from services.common.scenarios import get_scenario


@pytest.fixture
def ecommerce(demo_db):
    db = demo_db("ecommerce")
    if db.engine == "emulator":
        with psycopg.connect(db.owner_url, autocommit=True) as owner:
            owner.execute("INSERT INTO orders (customer_id, product_id, quantity, unit_price) VALUES (1, 1, 2, 9.99)")
            owner.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = now() - interval '1 hour'")
            pgtrickle.emulator_tick(owner)
    return db


def test_reader_pool_reads_every_catalog_view(ecommerce):
    spec = get_scenario("ecommerce")
    pool = make_pool(
        ecommerce.reader_url, application_name="demo-test-reader", statement_timeout_ms=1234, read_only=True
    )
    pool.open(wait=True, timeout=10)
    try:
        with pool.connection(timeout=5) as conn:
            identity = conn.execute(
                "SELECT current_setting('application_name'), current_setting('statement_timeout'), current_user"
            ).fetchone()
            assert identity == ("demo-test-reader", "1234ms", "demo_reader")
            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                conn.execute("CREATE TEMPORARY TABLE scratch (x int)")
        with pool.connection(timeout=5) as conn:
            assert "emulator" in pgtrickle.version(conn) or ecommerce.engine == "extension"
            names = set(spec.stream_table_names)
            assert {s.pgt_name for s in pgtrickle.stream_tables(conn)} == names
            assert {s.name for s in pgtrickle.status(conn)} == {f"public.{n}" for n in names}
            assert {e.pgt_name for e in pgtrickle.refresh_efficiency(conn)} == names
            assert {r.pgt_name for r in pgtrickle.recommend_refresh_mode(conn)} == names
            [one] = pgtrickle.recommend_refresh_mode(conn, "catalog_price_impact")
            assert one.recommended_mode in {"DIFFERENTIAL", "FULL", "KEEP"}
            assert one.confidence in {"high", "medium", "low"}

            tree = pgtrickle.dependency_tree(conn)
            assert {t.node for t in tree if t.node_type == "stream_table"} == {f"public.{n}" for n in names}
            assert "public.orders" in {t.node for t in tree if t.node_type == "source_table"}

            edges = {(d.source, d.pgt_name, d.source_type) for d in pgtrickle.dependencies(conn)}
            assert ("public.customer_stats", "country_revenue", "STREAM_TABLE") in edges
            assert ("public.customer_stats", "top_10_customers", "STREAM_TABLE") in edges
            assert ("public.orders", "category_revenue", "TABLE") in edges

            checks = {h.check_name: h.severity for h in pgtrickle.health_check(conn)}
            assert {"scheduler_running", "error_tables"} <= set(checks)

            recent = pgtrickle.recent_refreshes(conn, limit=5)
            assert 0 < len(recent) <= 5
            assert all(r.status in {"COMPLETED", "FAILED"} for r in recent)
            assert recent == sorted(recent, key=lambda r: r.start_time, reverse=True)
            oldest_first = pgtrickle.refreshes_after(conn, 0)
            assert [r.refresh_id for r in oldest_first] == sorted(r.refresh_id for r in oldest_first)
            newest = oldest_first[-1].refresh_id
            assert pgtrickle.refreshes_after(conn, newest) == []  # incremental readers see only what is new
            assert len(oldest_first) >= 3
            third_newest = oldest_first[-3].refresh_id
            assert [r.refresh_id for r in pgtrickle.refreshes_after(conn, third_newest)] == [
                r.refresh_id for r in oldest_first[-2:]
            ]
            # pg_trickle 0.67 writes start_time and end_time with one now(): no history duration is a measure
            assert all(r.end_time == r.start_time and r.duration_seconds is None for r in oldest_first)
    finally:
        pool.close()


def test_reader_cannot_change_stream_tables(ecommerce):
    with psycopg.connect(ecommerce.reader_url, autocommit=True) as conn:
        with pytest.raises(psycopg.Error):
            pgtrickle.refresh_stream_table(conn, "category_revenue")
        with pytest.raises(psycopg.Error):
            pgtrickle.drop_stream_table(conn, "category_revenue")
    with psycopg.connect(ecommerce.owner_url) as conn:
        assert "category_revenue" in {s.pgt_name for s in pgtrickle.stream_tables(conn)}
