"""sql/ecommerce: seed data, the six stream tables, and the seed's "Playing with the ecommerce demo"
queries, against bootstrapped databases (emulator, or the real pg_trickle under TEST_DATABASE_URL)."""

from __future__ import annotations

import re
import time

import psycopg
import pytest
from psycopg import sql

from devenv.scheduler import EmulatorScheduler
from services.common.scenarios import get_scenario
from tests.generator_support import GeneratorProcess

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

_CREATE = re.compile(
    r"create_stream_table_if_not_exists\(\s*name\s*=>\s*'(?P<name>\w+)',\s*query\s*=>\s*\$\$(?P<query>.*?)\$\$,"
    r"\s*schedule\s*=>\s*'(?P<schedule>[^']+)',\s*refresh_mode\s*=>\s*'(?P<mode>\w+)'\s*\)",
    re.DOTALL,
)


def defining_queries() -> dict[str, dict[str, str]]:
    """name -> {query, schedule, mode}, in file order, parsed from sql/ecommerce/stream_tables.sql."""
    text = SCENARIO.sql_file("stream_tables.sql").read_text()
    return {
        m["name"]: {"query": m["query"], "schedule": m["schedule"], "mode": m["mode"]} for m in _CREATE.finditer(text)
    }


def _tick(db, times: int = 1) -> None:
    if db.engine == "emulator":
        with psycopg.connect(db.admin_url, autocommit=True) as conn:
            for _ in range(times):
                conn.execute("SELECT pgtrickle.emulator_tick()")


def differences(conn: psycopg.Connection, name: str, query: str) -> tuple[int, int, int]:
    """(rows stored, rows stored but not produced by the query, rows produced but not stored), as
    multisets, over the query's own columns (the engine adds bookkeeping columns such as __pgt_row_id)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM ({}) AS q LIMIT 0").format(sql.SQL(query)))
        columns = sql.SQL(", ").join(sql.Identifier(col.name) for col in cur.description)
    stored = sql.SQL("SELECT {} FROM {}").format(columns, sql.Identifier(name))
    fresh = sql.SQL("SELECT * FROM ({}) AS q").format(sql.SQL(query))
    (rows,) = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(name))).fetchone()
    (extra,) = conn.execute(sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) AS d").format(stored, fresh)).fetchone()
    (missing,) = conn.execute(sql.SQL("SELECT count(*) FROM ({} EXCEPT ALL {}) AS d").format(fresh, stored)).fetchone()
    return rows, extra, missing


def test_stream_tables_sql_matches_the_scenario_manifest():
    parsed = defining_queries()
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
    scheduler = EmulatorScheduler(db.admin_url, tick_interval_ms=200).start() if db.engine == "emulator" else None
    try:
        with GeneratorProcess(
            db.writer_url, "--rate 200 --burst-interval 1 --slow-change-every 1 --duration 10 --seed 4"
        ) as gen:
            assert gen.wait(30) == 0, gen.log_text()
            committed = gen.summary()["events_committed"]
        assert committed["order"] > 1500 and committed["flash_sale_order"] >= 8 * 6 and committed["reprice"] >= 6

        queries = defining_queries()
        deadline = time.monotonic() + 20  # catalog_price_impact refreshes every 5 s
        while True:
            with psycopg.connect(db.owner_url) as conn:
                report = {name: differences(conn, name, spec["query"]) for name, spec in queries.items()}
            if all(extra == missing == 0 for _, extra, missing in report.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    finally:
        if scheduler is not None:
            scheduler.stop()
    for name, (rows, extra, missing) in report.items():
        assert rows > 0, f"{name} is empty"
        assert extra == 0 and missing == 0, f"{name}: {extra} stored rows not in its query, {missing} missing"
    with psycopg.connect(db.owner_url) as conn:
        orders = conn.execute("SELECT count(*) FROM orders").fetchone()[0]
        (in_product_sales,) = conn.execute("SELECT sum(order_count) FROM product_sales").fetchone()
        repriced, widest = conn.execute(
            "SELECT count(*), max(abs(pct_change)) FROM catalog_price_impact"
            " WHERE price_last_updated >= (SELECT min(ordered_at) FROM orders WHERE generator_run_id IS NOT NULL)"
        ).fetchone()
    assert in_product_sales == orders == 500 + committed["order"] + committed["flash_sale_order"]
    assert 1 <= repriced <= committed["reprice"] and widest <= 20
