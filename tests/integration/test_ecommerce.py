"""sql/ecommerce: seed data, the six stream tables, and the seed's "Playing with the ecommerce demo"
queries, against bootstrapped databases (emulator, or the real pg_trickle under TEST_DATABASE_URL)."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from services.common.scenarios import get_scenario
from tests.generator_support import assert_converged, run_generator_until_converged
from tests.support import scenario_defining_queries

SCENARIO = get_scenario("ecommerce")

# Verbatim from the seed README, section "Playing with the ecommerce demo".
SEED_QUERIES = {
    "category revenue": "SELECT * FROM category_revenue ORDER BY revenue DESC;",
    "top 10 customers": "SELECT * FROM top_10_customers;",
    "price changes": (
        "SELECT product_name, base_price, current_price, pct_change FROM catalog_price_impact "
        "ORDER BY ABS(pct_change) DESC;"
    ),
    "refresh efficiency": (
        "SELECT pgt_name, avg_diff_ms, diff_speedup, avg_change_ratio FROM pgtrickle.refresh_efficiency() "
        "ORDER BY pgt_name;"
    ),
}


def _tick(db, times: int = 1) -> None:
    if db.engine == "emulator":
        with psycopg.connect(db.admin_url, autocommit=True) as conn:
            for _ in range(times):
                conn.execute("SELECT pgtrickle.emulator_tick()")


def test_stream_tables_sql_matches_the_scenario_manifest():
    parsed = scenario_defining_queries("ecommerce")
    assert list(parsed) == list(SCENARIO.stream_table_names)
    for spec in SCENARIO.stream_tables:
        assert (parsed[spec.name]["mode"], parsed[spec.name]["schedule"]) == (spec.refresh_mode, spec.schedule)


def test_seed_is_realistic_and_every_stream_table_has_rows_after_bootstrap(demo_db):
    db = demo_db()
    with psycopg.connect(db.owner_url) as conn:
        counts = {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(t))).fetchone()[0]
            for t in (*SCENARIO.base_tables, *SCENARIO.stream_table_names)
        }
        countries = conn.execute("SELECT count(DISTINCT country) FROM customers").fetchone()[0]
        unpriced = conn.execute(
            "SELECT count(*) FROM products p LEFT JOIN product_catalog pc ON pc.product_id = p.id"
            " WHERE pc.product_id IS NULL OR p.base_price <= 0"
        ).fetchone()[0]
        empty_categories = conn.execute(
            "SELECT count(*) FROM categories c WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.category_id = c.id)"
        ).fetchone()[0]
    assert (counts["categories"], counts["products"], counts["customers"]) == (8, 60, 200)
    assert counts["product_catalog"] == 60 and counts["orders"] == 500
    assert countries == 12 and unpriced == 0 and empty_categories == 0
    for name in SCENARIO.stream_table_names:
        assert counts[name] > 0, f"{name} is empty right after bootstrap"
    assert counts["top_10_customers"] == 10 and counts["category_revenue"] == 8 and counts["product_sales"] == 60


def test_seed_is_deterministic(demo_db):
    fingerprint = """
        SELECT md5(string_agg(x, '|' ORDER BY x)) FROM (
            SELECT 'c' || id || name FROM categories
            UNION ALL SELECT 'p' || id || name || category_id || base_price FROM products
            UNION ALL SELECT 'u' || id || name || country FROM customers
            UNION ALL SELECT 'k' || product_id || current_price FROM product_catalog
            UNION ALL SELECT 'o' || id || customer_id || product_id || quantity || unit_price FROM orders
        ) AS rows(x)"""
    prints = []
    for _ in range(2):
        with psycopg.connect(demo_db().owner_url) as conn:
            prints.append(conn.execute(fingerprint).fetchone()[0])
    assert prints[0] == prints[1]


def test_seed_queries_run_unchanged_and_return_rows(demo_db):
    db = demo_db()
    _tick(db, 2)
    for role_url in (db.owner_url, db.reader_url):
        with psycopg.connect(role_url) as conn:
            for label, query in SEED_QUERIES.items():
                rows = conn.execute(query).fetchall()
                assert rows, f"{label}: no rows"
            top = conn.execute(SEED_QUERIES["top 10 customers"]).fetchall()
            assert len(top) == 10
            efficiency = {row[0] for row in conn.execute(SEED_QUERIES["refresh efficiency"])}
            assert efficiency == set(SCENARIO.stream_table_names)


@pytest.mark.slow
def test_stream_tables_equal_their_defining_queries_after_a_generator_run(demo_db):
    """~10 s of orders at 200/s with a flash sale and a reprice about every second, refreshed by the
    scheduler while it runs; afterwards every stream table converges to exactly its defining query."""
    db = demo_db()
    committed, report = run_generator_until_converged(
        db, "--rate 200 --burst-interval 1 --slow-change-every 1 --duration 10 --seed 4"
    )
    assert committed["order"] > 1500 and committed["flash_sale_order"] >= 8 * 6 and committed["reprice"] >= 6
    assert_converged(report)
    with psycopg.connect(db.owner_url) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        (in_product_sales,) = conn.execute("SELECT sum(order_count) FROM product_sales").fetchone()
        repriced, widest = conn.execute(
            "SELECT count(*), max(abs(pct_change)) FROM catalog_price_impact"
            " WHERE price_last_updated >= (SELECT min(ordered_at) FROM orders WHERE generator_run_id IS NOT NULL)"
        ).fetchone()
    assert in_product_sales == orders == 500 + committed["order"] + committed["flash_sale_order"]
    assert 1 <= repriced <= committed["reprice"] and widest <= 20
