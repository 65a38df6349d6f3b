"""Benchmark (make bench): the generator's maximum sustained ecommerce event rate for 30 s against
embedded PostgreSQL 18 (bootstrapped with the emulator; no scheduler running), printed beside the ceiling
measured in the same run: the same order rows loaded by one COPY, by the same role, into the same table.

Figures are reported, not asserted (targets: >= 10,000 events/s and >= 0.5x the COPY ceiling).
"""

from __future__ import annotations

import os
import time
import uuid

import psycopg
import pytest

from tests.generator_support import GeneratorProcess, run_in_database

DURATION_S = float(os.environ.get("BENCH_GENERATOR_SECONDS", "30"))
UNLIMITED = "10000000"  # events/s: far above what any machine sustains, so the writer sets the pace
# Flash sales and reprices every ~5 s as well, so every kind of ecommerce event is in the mix.
FLAGS = f"--rate {UNLIMITED} --max-rate {UNLIMITED} --burst-interval 5 --slow-change-every 5 --seed 1".split()


@pytest.mark.bench
def test_generator_max_sustained_rate_vs_copy_ceiling(demo_db):
    db = demo_db()
    with GeneratorProcess(db.writer_url, *FLAGS, "--duration", str(DURATION_S)) as gen:
        assert gen.wait(DURATION_S + 60) == 0, gen.log_text()
        summary = gen.summary()
    run_id, elapsed = summary["run_id"], summary["elapsed_s"]
    events = summary["events_committed_total"]
    found = run_in_database(db.admin_url, run_id)
    assert found.ledger_events == events > 0
    order_rows = found.rows  # every event but the reprices

    # The ceiling: the very same order rows (new run id) loaded with one COPY, in one transaction.
    with psycopg.connect(db.writer_url) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY (SELECT customer_id, product_id, quantity, unit_price, %s::uuid, generator_seq FROM orders"
                " WHERE generator_run_id = %s ORDER BY generator_seq) TO STDOUT",
                (str(uuid.uuid4()), run_id),
            ) as copy,
        ):
            data = b"".join(bytes(chunk) for chunk in copy)
        conn.commit()
        started = time.perf_counter()
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY orders (customer_id, product_id, quantity, unit_price, generator_run_id, generator_seq)"
                " FROM STDIN"
            ) as copy,
        ):
            copy.write(data)
        conn.commit()
        copy_seconds = time.perf_counter() - started

    rate = events / elapsed
    ceiling = order_rows / copy_seconds
    ratio = rate / ceiling
    print(
        "\n"
        "== generator benchmark (ecommerce, embedded PostgreSQL 18, scheduler off) ==\n"
        f"  generator     {events:>12,} events in {elapsed:6.1f} s = {rate:>10,.0f} events/s sustained"
        f"  ({summary['batches']:,} transactions; {summary['events_committed']})\n"
        f"  COPY ceiling  {order_rows:>12,} rows   in {copy_seconds:6.1f} s = {ceiling:>10,.0f} rows/s (one COPY)\n"
        f"  ratio         {ratio:.2f}x of the COPY ceiling\n"
        f"  targets       >= 10,000 events/s: {'met' if rate >= 10_000 else 'NOT met'};"
        f"  >= 0.5x COPY: {'met' if ratio >= 0.5 else 'NOT met'}\n"
    )
