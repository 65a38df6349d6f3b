"""The emulator's incremental aggregate path (issue 18) against real PostgreSQL 18.

pg_trickle maintains an aggregate from the change since the last refresh (src/dvm/operators/aggregate.rs,
diff_aggregate: COUNT/SUM algebraically, AVG through auxiliary sum and count, MIN/MAX, COUNT(DISTINCT) by group
rescan). The emulator does the same where it can keep the result exactly (an aggregate whose one changed source
received only INSERTs) and recomputes otherwise. What these tests hold:
- each scenario's first-level aggregates take the path, and an incremental refresh does not read the event
  table at all: it completes while another session holds ACCESS EXCLUSIVE on it (a recomputation waits), so its
  cost follows the change, not the history;
- every other kind of change (UPDATE, DELETE, TRUNCATE, two sources at once) rebuilds the state and stays exact;
- values are exact to the text (numeric scales, NULL arguments and keys, duplicates, MIN/MAX of text);
- what the path cannot keep exactly is recomputed and the plan says why;
- the state is the stream table owner's, invisible to readers, and goes with the stream table.
Emulator internals: skipped against the real extension.
"""

from __future__ import annotations

import random

import psycopg
import pytest
from psycopg import sql

from tests.support import scenario_defining_queries, stream_table_differences

# The first-level aggregates over each scenario's append-only event table.
INCREMENTAL = {
    "ecommerce": ("orders", ["product_sales", "customer_stats", "category_revenue"]),
    "fraud": ("transactions", ["user_velocity", "merchant_stats", "category_volume"]),
    "finance": ("trades", ["net_positions"]),
}

# n new events over the seeded dimension rows, in the generator's shape (as tests/bench/test_bench_emulator.py).
EVENTS = {
    "ecommerce": """
        INSERT INTO orders (customer_id, product_id, quantity, unit_price)
        SELECT (SELECT id FROM customers ORDER BY random() + g LIMIT 1),
               (SELECT id FROM products ORDER BY random() + g LIMIT 1),
               1 + (random() * 4)::int, round((5 + random() * 200)::numeric, 2)
          FROM generate_series(1, %(n)s) g""",
    "fraud": """
        INSERT INTO transactions (user_id, merchant_id, amount)
        SELECT (SELECT id FROM users ORDER BY random() + g LIMIT 1),
               (SELECT id FROM merchants ORDER BY random() + g LIMIT 1),
               round((1 + random() * 500)::numeric, 2)
          FROM generate_series(1, %(n)s) g""",
    "finance": """
        INSERT INTO trades (account_id, instrument_id, quantity, price)
        SELECT (SELECT id FROM accounts ORDER BY random() + g LIMIT 1),
               (SELECT id FROM instruments ORDER BY random() + g LIMIT 1),
               (CASE WHEN random() < 0.5 THEN -1 ELSE 1 END) * (1 + (random() * 99)::int),
               round((10 + random() * 300)::numeric, 4)
          FROM generate_series(1, %(n)s) g""",
}


UPDATE_ONE_EVENT = {
    "ecommerce": "UPDATE orders SET quantity = quantity + 1 WHERE id = (SELECT min(id) FROM orders)",
    "fraud": "UPDATE transactions SET amount = amount + 1 WHERE id = (SELECT min(id) FROM transactions)",
    "finance": "UPDATE trades SET quantity = quantity + 1 WHERE id = (SELECT min(id) FROM trades)",
}


def _plans(conn) -> dict[str, dict]:
    rows = conn.execute(
        """SELECT s.pgt_name, p.supported, p.reason, p.state_valid, p.incremental_refreshes, p.state_rebuilds
             FROM pgtrickle.emulator_delta_plans p JOIN pgtrickle.pgt_stream_tables s USING (pgt_id)"""
    ).fetchall()
    keys = ("supported", "reason", "state_valid", "incremental", "rebuilds")
    return {name: dict(zip(keys, rest, strict=True)) for name, *rest in rows}


def _refresh_while_locked(owner, admin, name: str, event_table: str) -> bool:
    """Refreshes `name` as the owner while another session holds ACCESS EXCLUSIVE on the event table: True when
    the refresh completed without touching the event table, False when it had to wait for it (lock_timeout)."""
    with admin.transaction():
        admin.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(event_table)))
        try:
            with owner.transaction():
                owner.execute("SET LOCAL lock_timeout = '3s'")
                owner.execute("SELECT pgtrickle.refresh_stream_table(%s)", (name,))
        except psycopg.errors.LockNotAvailable:
            return False
    return True


def _assert_exact(conn, scenario: str, names) -> None:
    for name, spec in scenario_defining_queries(scenario).items():
        if name not in names:
            continue
        _rows, extra, missing = stream_table_differences(conn, name, spec["query"])
        assert (extra, missing) == (0, 0), f"{scenario}.{name}: {extra} stored rows not produced, {missing} missing"


@pytest.mark.parametrize("scenario", sorted(INCREMENTAL))
def test_scenario_aggregates_follow_the_change_not_the_history(demo_db, scenario):
    db = demo_db(scenario)
    if db.engine != "emulator":
        pytest.skip("the emulator's incremental path (the real engine maintains its own)")
    event_table, names = INCREMENTAL[scenario]
    with (
        psycopg.connect(db.writer_url, autocommit=True) as writer,
        psycopg.connect(db.owner_url, autocommit=True) as owner,
        psycopg.connect(db.admin_url, autocommit=True) as admin,
    ):
        writer.execute(EVENTS[scenario], {"n": 200})
        for name in names:  # the first DIFFERENTIAL refresh after the initial fill builds the state (reads the events)
            assert not _refresh_while_locked(owner, admin, name, event_table)
            owner.execute("SELECT pgtrickle.refresh_stream_table(%s)", (name,))
        before = _plans(owner)
        for batch in range(3):
            writer.execute(EVENTS[scenario], {"n": 20 + batch})
            for name in names:
                assert _refresh_while_locked(owner, admin, name, event_table), (
                    f"{name} had to read {event_table}: it recomputed; {_plans(owner)[name]}"
                )
        after = _plans(owner)
        for name in names:
            assert after[name]["supported"], after[name]["reason"]
            assert after[name]["incremental"] - before[name]["incremental"] == 3, (name, before[name], after[name])
            assert after[name]["rebuilds"] == before[name]["rebuilds"]
        _assert_exact(owner, scenario, names)

        # An UPDATE of an event row is not an insert: the next refresh rebuilds (reads the events) and is exact.
        owner.execute(UPDATE_ONE_EVENT[scenario])
        for name in names:
            assert not _refresh_while_locked(owner, admin, name, event_table)
            owner.execute("SELECT pgtrickle.refresh_stream_table(%s)", (name,))
        rebuilt = _plans(owner)
        assert all(rebuilt[n]["rebuilds"] == after[n]["rebuilds"] + 1 and rebuilt[n]["state_valid"] for n in names)
        writer.execute(EVENTS[scenario], {"n": 5})
        for name in names:
            assert _refresh_while_locked(owner, admin, name, event_table)
        _assert_exact(owner, scenario, names)


@pytest.fixture
def db(emulator_db):
    with psycopg.connect(emulator_db, autocommit=True) as conn:
        yield conn


def _exact(conn, name: str) -> None:
    query = conn.execute(
        "SELECT defining_query FROM pgtrickle.pgt_stream_tables WHERE pgt_name = %s", (name,)
    ).fetchone()[0]
    _rows, extra, missing = stream_table_differences(conn, name, query)
    texts = sql.SQL(
        "SELECT count(*) FROM ((SELECT ROW(t.*)::text FROM ({q}) t EXCEPT ALL SELECT ROW({c})::text FROM {n} s)"
        " UNION ALL (SELECT ROW({c})::text FROM {n} s EXCEPT ALL SELECT ROW(t.*)::text FROM ({q}) t)) x"
    )
    cols = [r[0] for r in conn.execute("SELECT unnest(pgtrickle.emulator_columns(%s::regclass))", (name,)).fetchall()]
    by_text = conn.execute(
        texts.format(q=sql.SQL(query), n=sql.Identifier(name), c=sql.SQL(", ").join(sql.SQL("s." + c) for c in cols))
    ).fetchone()[0]
    assert (extra, missing, by_text) == (0, 0, 0), f"{name}: {extra} extra, {missing} missing, {by_text} differ as text"


def test_exact_to_the_text_with_nulls_scales_duplicates_and_text_extremes(db):
    """A seeded random sequence of insert-only batches (the incremental path) with, now and then, an UPDATE, a
    DELETE or a TRUNCATE (a rebuild): after every refresh each table equals its query value for value, as text."""
    db.execute("CREATE TABLE dim (id int PRIMARY KEY, grp text, weight numeric)")
    db.execute(
        "INSERT INTO dim SELECT g, CASE WHEN g % 4 = 0 THEN NULL ELSE 'g' || (g % 3) END, g / 3.0"
        " FROM generate_series(1, 12) g"
    )
    db.execute("CREATE TABLE ev (id bigserial PRIMARY KEY, dim_id int, amount numeric, qty int, label text)")
    queries = {
        "agg_inner": """SELECT d.grp, count(*) AS n, count(e.amount) AS n_amount, sum(e.amount) AS total,
                               round(avg(e.amount), 3) AS mean, avg(e.qty) AS mean_qty, min(e.label) AS first_label,
                               max(e.qty) AS top_qty, count(DISTINCT e.label) AS labels, sum(e.qty) AS qty
                          FROM ev e JOIN dim d ON d.id = e.dim_id GROUP BY d.grp""",
        "agg_left": """SELECT d.id, d.grp, count(e.id) AS n, coalesce(sum(e.amount), 0) AS total,
                              coalesce(round(avg(e.amount * e.qty), 2), 0) AS mean_value, max(e.label) AS last_label,
                              count(DISTINCT e.qty) AS qtys
                         FROM dim d LEFT JOIN ev e ON e.dim_id = d.id GROUP BY d.id, d.grp""",
        "agg_where": """SELECT e.dim_id, e.qty, sum(e.amount) AS total, min(e.qty) AS low_qty
                          FROM ev e WHERE e.amount > 1 GROUP BY e.dim_id, e.qty""",
    }
    for name, query in queries.items():
        db.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1s', 'DIFFERENTIAL')", (name, query))
    rng = random.Random(20261130)
    scales = ["1.5", "1.50", "2.125", "0", "0.0", "-3.10", "100", None]
    labels = ["a", "b", "B", "a ", "é", None]
    for step in range(40):
        roll = rng.random()
        if roll < 0.8 or step < 3:
            rows = [
                (rng.choice([*range(1, 14), None]), rng.choice(scales), rng.choice([1, 2, None, 7]), rng.choice(labels))
                for _ in range(rng.randint(0, 6))
            ]
            for row in rows:
                db.execute("INSERT INTO ev (dim_id, amount, qty, label) VALUES (%s, %s::numeric, %s, %s)", row)
        elif roll < 0.88:
            db.execute("UPDATE ev SET amount = amount * 2 WHERE id = (SELECT min(id) FROM ev)")
        elif roll < 0.96:
            db.execute("DELETE FROM ev WHERE id = (SELECT max(id) FROM ev)")
        else:
            db.execute("TRUNCATE ev")
        for name in queries:
            db.execute("SELECT pgtrickle.refresh_stream_table(%s)", (name,))
            _exact(db, name)
    plans = _plans(db)
    for name in queries:
        assert plans[name]["supported"], plans[name]["reason"]
        assert plans[name]["incremental"] >= 20, (name, plans[name])
        assert plans[name]["rebuilds"] >= 2, (name, plans[name])


def test_what_cannot_be_kept_exactly_is_recomputed_with_a_reason(db):
    db.execute("CREATE TABLE dim (id int PRIMARY KEY, grp text)")
    db.execute("INSERT INTO dim SELECT g, 'g' || (g % 3) FROM generate_series(1, 6) g")
    db.execute("CREATE TABLE ev (id bigserial PRIMARY KEY, dim_id int, amount numeric, ratio float8)")
    refused = {
        "having": ("SELECT dim_id, sum(amount) AS total FROM ev GROUP BY dim_id HAVING count(*) > 1", "HAVING"),
        "float_sum": ("SELECT dim_id, sum(ratio) AS total FROM ev GROUP BY dim_id", "SUM over double precision"),
        "subquery": (
            "SELECT dim_id, sum(amount) AS total FROM ev WHERE dim_id IN (SELECT id FROM dim) GROUP BY dim_id",
            "a subquery",
        ),
        "no_group": ("SELECT e.id, d.grp FROM ev e JOIN dim d ON d.id = e.dim_id", "no GROUP BY"),
        "string_agg": ("SELECT dim_id, string_agg(amount::text, ',') AS s FROM ev GROUP BY dim_id", "no aggregate"),
        # an aggregate the plan does not know, beside one it knows: caught when the state is built
        "mixed_aggregates": (
            "SELECT dim_id, sum(amount) AS total, string_agg(amount::text, ',') AS s FROM ev GROUP BY dim_id",
            "state rebuild failed",
        ),
        "self_join": (
            "SELECT a.dim_id, count(b.id) AS n FROM ev a JOIN ev b ON b.dim_id = a.dim_id GROUP BY a.dim_id",
            "no source whose change buffer the delta can read",
        ),
    }
    for name, (query, _) in refused.items():
        db.execute("SELECT pgtrickle.create_stream_table(%s, %s, '1s', 'DIFFERENTIAL')", (name, query))
    # COUNT(*) counts the row a LEFT JOIN adds for a group without events: inserts into ev are recomputed
    # (inserts into dim, the preserved side, could still be applied as a delta).
    db.execute(
        "SELECT pgtrickle.create_stream_table('rows_of_left_join', $$SELECT d.id, count(*) AS n FROM dim d"
        " LEFT JOIN ev e ON e.dim_id = d.id GROUP BY d.id$$, '1s', 'DIFFERENTIAL')"
    )
    for batch in range(3):
        db.execute(
            "INSERT INTO ev (dim_id, amount, ratio) SELECT 1 + g %% 6, g * 1.25, g / 7.0 FROM generate_series(1, %s) g",
            (5 + batch,),
        )
        for name in [*refused, "rows_of_left_join"]:
            db.execute("SELECT pgtrickle.refresh_stream_table(%s)", (name,))
            _exact(db, name)
    plans = _plans(db)
    assert plans["rows_of_left_join"]["incremental"] == 0
    sources = db.execute(
        "SELECT p.sources -> ('ev'::regclass::oid)::text FROM pgtrickle.emulator_delta_plans p"
        " JOIN pgtrickle.pgt_stream_tables s USING (pgt_id) WHERE s.pgt_name = 'rows_of_left_join'"
    ).fetchone()[0]
    assert sources["ok"] is False and "LEFT JOIN" in sources["reason"], sources
    for name, (_, reason) in refused.items():
        assert not plans[name]["supported"], name
        assert reason in plans[name]["reason"], (name, plans[name]["reason"])
        assert plans[name]["incremental"] == 0


def test_the_state_is_the_owners_and_goes_with_the_stream_table(demo_db):
    db = demo_db("ecommerce")
    if db.engine != "emulator":
        pytest.skip("the emulator's incremental path")
    state_tables = """SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c
                       WHERE c.relnamespace = 'pgtrickle_changes'::regnamespace AND c.relkind = 'r'
                         AND c.relname LIKE 'emulator%%'"""
    with (
        psycopg.connect(db.owner_url, autocommit=True) as owner,
        psycopg.connect(db.admin_url, autocommit=True) as admin,
    ):
        owner.execute(EVENTS["ecommerce"], {"n": 10})
        owner.execute("SELECT pgtrickle.refresh_stream_table('category_revenue')")
        tables = admin.execute(state_tables).fetchall()
        assert {owner_name for _, owner_name in tables} == {"demo"} and len(tables) == 2, (
            tables
        )  # state + distinct values
        for relname, _ in tables:
            assert not admin.execute(
                "SELECT has_table_privilege('demo_reader', %s, 'SELECT')"
                " OR has_table_privilege('demo_writer', %s, 'SELECT')",
                (f"pgtrickle_changes.{relname}",) * 2,
            ).fetchone()[0]
        # A superuser's refresh recomputes (it never writes the owner's state) and marks the state stale.
        admin.execute(EVENTS["ecommerce"], {"n": 3})
        admin.execute("SELECT pgtrickle.refresh_stream_table('category_revenue')")
        assert not _plans(admin)["category_revenue"]["state_valid"]
        owner.execute("SELECT pgtrickle.refresh_stream_table('category_revenue')")
        assert _plans(admin)["category_revenue"]["state_valid"]
        _assert_exact(owner, "ecommerce", ["category_revenue"])
        # A new query forgets the plan and its state; dropping the stream table leaves nothing behind.
        owner.execute("""SELECT pgtrickle.alter_stream_table('category_revenue', query => $$
                           SELECT cat.id AS category_id, count(o.id) AS order_count FROM categories cat
                             JOIN products p ON p.category_id = cat.id JOIN orders o ON o.product_id = p.id
                            GROUP BY cat.id $$)""")
        assert "category_revenue" not in {n for n, p in _plans(admin).items() if p["state_valid"]}
        assert not [t for t in admin.execute(state_tables).fetchall() if t[0].startswith("emulator_distinct")]
        owner.execute("SELECT pgtrickle.drop_stream_table('top_10_customers')")
        for name in ("country_revenue", "category_revenue", "customer_stats", "product_sales"):
            owner.execute("SELECT pgtrickle.refresh_stream_table(%s)", (name,))
            owner.execute("SELECT pgtrickle.drop_stream_table(%s)", (name,))
        assert admin.execute(state_tables).fetchall() == []
        assert "category_revenue" not in _plans(admin)
