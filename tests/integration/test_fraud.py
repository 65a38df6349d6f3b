"""The fraud scenario against real PostgreSQL 18: its DAG, the seed's queries, bursts that end HIGH, the
tier-rotation showcase, and every stream table equal to its query after a generator run."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import sql

from services.common import pgtrickle
from services.common.scenarios import get_scenario
from services.generator.scenarios import InsertTarget, load_scenario
from tests.generator_support import assert_converged, run_generator_until_converged
from tests.support import scenario_defining_queries

SCENARIO = get_scenario("fraud")


def _tick(db, times: int = 1) -> None:
    """One scheduler tick with every scheduled table due (emulator only; the real engine runs itself)."""
    if db.engine != "emulator":
        time.sleep(6)
        return
    with psycopg.connect(db.admin_url, autocommit=True) as conn:
        for _ in range(times):
            conn.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = last_refresh_at - interval '1 hour'")
            pgtrickle.emulator_tick(conn)


def _write(db, parts) -> None:
    """Writes generator events as the writer role, as the engine would (one transaction)."""
    with psycopg.connect(db.writer_url) as conn, conn.cursor() as cur:
        for part in parts:
            target = part.target
            if isinstance(target, InsertTarget):
                statement = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
                    sql.Identifier(target.table),
                    sql.SQL(", ").join(map(sql.Identifier, target.columns)),
                    sql.SQL(", ").join(sql.Placeholder() * len(target.columns)),
                )
            else:
                assignments = [sql.SQL("{} = %s").format(sql.Identifier(c)) for c in target.set_columns]
                assignments += [sql.SQL("{} = now()").format(sql.Identifier(c)) for c in target.touch_columns]
                statement = sql.SQL("UPDATE {} SET {} WHERE {}").format(
                    sql.Identifier(target.table),
                    sql.SQL(", ").join(assignments),
                    sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(c)) for c in target.key_columns),
                )
            cur.executemany(statement, part.rows)


def _loaded_generator(db, seed: int = 3):
    gen = load_scenario("fraud", seed)
    with psycopg.connect(db.writer_url) as conn:
        gen.load(conn)
    return gen


def test_stream_tables_sql_matches_the_manifest():
    parsed = scenario_defining_queries("fraud")
    assert list(parsed) == list(SCENARIO.stream_table_names)
    for spec in SCENARIO.stream_tables:
        assert (parsed[spec.name]["mode"], parsed[spec.name]["schedule"]) == (spec.refresh_mode, spec.schedule)


def test_dag_shape_has_the_diamond(demo_db):
    db = demo_db("fraud")
    with psycopg.connect(db.reader_url) as conn:
        tables = {st.pgt_name: st for st in pgtrickle.stream_tables(conn)}
        edges = {(d.source, d.pgt_name) for d in pgtrickle.dependencies(conn)}
    assert {(n, t.refresh_mode, t.schedule_label) for n, t in tables.items()} == {
        (s.name, s.refresh_mode, s.schedule) for s in SCENARIO.stream_tables
    }
    # transactions feeds both L1 aggregates, which both converge in risk_scores (with transactions again).
    for branch in ("user_velocity", "merchant_stats"):
        assert ("public.transactions", branch) in edges
        assert (f"public.{branch}", "risk_scores") in edges
    assert ("public.transactions", "risk_scores") in edges
    assert ("public.user_velocity", "country_risk") in edges
    assert {
        ("public.risk_scores", "alert_summary"),
        ("public.risk_scores", "top_risky_merchants"),
        ("public.top_risky_merchants", "top_10_risky_merchants"),
        ("public.merchant_risk_tier", "merchant_tier_stats"),
    } <= edges
    assert not any(src == "public.transactions" for src, target in edges if target == "merchant_tier_stats")


def test_seed_queries_run_unchanged_and_return_rows(demo_db):
    db = demo_db("fraud")
    queries = [
        "SELECT * FROM pgtrickle.pgt_status();",
        "SELECT tree_line FROM pgtrickle.dependency_tree() ORDER BY tree_line;",
        "SELECT txn_id, user_name, merchant_name, amount, risk_level FROM risk_scores WHERE risk_level = 'HIGH'"
        " ORDER BY txn_id DESC LIMIT 10;",
        "SELECT pgtrickle.refresh_stream_table('risk_scores');",
        "SELECT st.pgt_name, rh.action, rh.status, (rh.end_time - rh.start_time) AS duration, rh.start_time"
        " FROM pgtrickle.pgt_refresh_history rh JOIN pgtrickle.pgt_stream_tables st ON st.pgt_id = rh.pgt_id"
        " ORDER BY rh.start_time DESC LIMIT 20;",
    ]
    with psycopg.connect(db.owner_url, autocommit=True) as conn:  # the seed connects as demo
        for query in queries:
            assert conn.execute(query).fetchall(), query
        assert {r[0] for r in conn.execute("SELECT risk_level FROM risk_scores")} == {"LOW", "MEDIUM", "HIGH"}


@pytest.mark.parametrize("seed", [1, 2])
def test_consecutive_bursts_land_as_escalating_crypto_gambling_transactions_ending_high(demo_db, seed):
    db = demo_db("fraud")
    gen = _loaded_generator(db, seed)
    for _ in range(4):  # each burst inflates its user's average; the next one must still end HIGH
        parts = gen.burst()
        _write(db, parts)
        gen.committed(parts)
        _tick(db, 2)
        burst = parts[0].rows
        with psycopg.connect(db.reader_url) as conn:
            rows = conn.execute(
                "SELECT user_id, amount, merchant_category, risk_level FROM risk_scores ORDER BY txn_id DESC LIMIT %s",
                (len(burst),),
            ).fetchall()[::-1]
        assert 6 <= len(rows) == len(burst) <= 14
        assert {r[0] for r in rows} == {burst[0][0]}
        assert [r[1] for r in rows] == sorted(r[1] for r in rows)
        assert {r[2] for r in rows} <= {"Crypto", "Gambling"}
        assert rows[-1][3] == "HIGH"


def test_tier_rotation_changes_at_most_two_rows_of_merchant_tier_stats(demo_db):
    db = demo_db("fraud")
    gen = _loaded_generator(db)
    with psycopg.connect(db.reader_url) as conn:
        before = set(conn.execute("SELECT merchant_id, merchant_tier FROM merchant_tier_stats").fetchall())
    parts = gen.slow_change()
    [(tier, merchant_id)] = parts[0].rows
    _write(db, parts)
    _tick(db)
    with psycopg.connect(db.reader_url) as conn:
        after = set(conn.execute("SELECT merchant_id, merchant_tier FROM merchant_tier_stats").fetchall())
        last = conn.execute(
            "SELECT rh.rows_inserted + rh.rows_deleted FROM pgtrickle.pgt_refresh_history rh"
            " JOIN pgtrickle.pgt_stream_tables st USING (pgt_id) WHERE st.pgt_name = 'merchant_tier_stats'"
            " AND rh.status = 'COMPLETED' ORDER BY rh.refresh_id DESC LIMIT 1"
        ).fetchone()[0]
    assert len(before) == len(after) == 15
    assert after - before == {(merchant_id, tier)} and len(before - after) == 1
    if db.engine == "emulator":
        assert last <= 2  # one row replaced: 1 deleted + 1 inserted, of 15


@pytest.mark.slow
def test_stream_tables_equal_their_queries_after_a_generator_run(demo_db):
    db = demo_db("fraud")
    committed, report = run_generator_until_converged(
        db, "--scenario fraud --rate 150 --burst-interval 1 --slow-change-every 1 --duration 8 --seed 9"
    )
    assert committed["transaction"] > 800 and committed["burst_transaction"] >= 6 * 4
    assert committed["tier_rotation"] >= 4
    assert_converged(report)
    with psycopg.connect(db.owner_url) as conn:
        total = conn.execute("SELECT count(*) FROM transactions").fetchone()[0]
        assert total == 504 + committed["transaction"] + committed["burst_transaction"]
        assert conn.execute("SELECT sum(txn_count) FROM alert_summary").fetchone()[0] == total
        assert conn.execute("SELECT count(*) FROM merchant_tier_stats").fetchone()[0] == 15
        assert conn.execute("SELECT count(*) FROM top_10_risky_merchants").fetchone()[0] == 10


def test_the_dashboards_high_risk_feed_reads_risk_scores_through_its_partial_index(demo_db):
    """risk_scores keeps one row per transaction; the live feed must not scan it (sql/fraud/stream_tables.sql)."""
    from services.dashboard.scenarios.fraud import HIGH_FEED

    db = demo_db("fraud")
    with psycopg.connect(db.reader_url) as conn:
        conn.execute("SET enable_seqscan = off")  # the seed is small: ask which access path exists, not its cost
        plan = "\n".join(row[0] for row in conn.execute(sql.SQL("EXPLAIN {}").format(sql.SQL(HIGH_FEED))))
        assert "risk_scores_high_feed" in plan, plan
        assert conn.execute(HIGH_FEED).fetchall(), "the seed has HIGH-risk transactions"
