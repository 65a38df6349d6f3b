"""The README's "Try it" queries run as written, as the `demo` role the preview's psql line uses, and give
what the text says: named columns only (no internal `__pgt_*` column), ranks in order, sorted figures."""

from __future__ import annotations

import re

import psycopg

from services.common import pgtrickle
from services.common.scenarios import get_scenario
from tests.support import ROOT


def _readme_queries() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Try it (ecommerce)", 1)[1]
    block = re.search(r"```sql\n(.*?)```", section, flags=re.S).group(1)
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_the_readme_queries_run_as_written_and_read_as_described(demo_db):
    db = demo_db("ecommerce")
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        # Orders of different sizes from many customers, a few repriced products, then one refresh round.
        customers = [r[0] for r in conn.execute("SELECT id FROM customers ORDER BY id LIMIT 15")]
        for i, customer in enumerate(customers):
            conn.execute(
                "INSERT INTO orders (customer_id, product_id, quantity, unit_price) VALUES (%s, %s, %s, 10.5)",
                (customer, 1 + i % 5, 1 + i),
            )
        conn.execute(
            "UPDATE product_catalog SET current_price = round(current_price * (0.8 + product_id % 5 * 0.1), 2)"
        )
        conn.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = now() - interval '1 hour'")
        pgtrickle.emulator_tick(conn)

    queries = _readme_queries()
    assert len(queries) == 5, queries
    results = {}
    with psycopg.connect(db.owner_url, autocommit=True) as conn:
        for query in queries:
            cur = conn.execute(query)
            columns = [c.name for c in cur.description]
            assert not any(c.startswith("__pgt") for c in columns), f"internal column in: {query}"
            results[query] = (columns, cur.fetchall())

    categories, tops, prices, status, tree = (results[q] for q in queries)
    revenue = [row[categories[0].index("revenue")] for row in categories[1]]
    assert revenue and revenue == sorted(revenue, reverse=True)

    assert tops[0] == ["rank", "customer_name", "country", "order_count", "total_spent"]
    ranks = [row[0] for row in tops[1]]
    assert ranks == list(range(1, len(ranks) + 1)) and len(ranks) == 10, "ranks 1..10 in order"
    spent = [row[4] for row in tops[1]]
    assert spent == sorted(spent, reverse=True)

    changes = [abs(row[3]) for row in prices[1]]
    assert 0 < len(changes) <= 10 and changes == sorted(changes, reverse=True) and changes[0] > 0

    names = [row[0] for row in status[1]]
    expected = sorted(f"public.{name}" for name in get_scenario("ecommerce").stream_table_names)
    assert names == expected and {row[1] for row in status[1]} == {"ACTIVE"}

    lines = "\n".join(row[0] for row in tree[1])
    assert all(name in lines for name in get_scenario("ecommerce").stream_table_names), lines
