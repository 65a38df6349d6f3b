"""Benchmark (make bench): what one emulator scheduler tick costs as the event history grows, and how fresh
the stream tables stay while the scheduler runs (issue 18).

For each scenario and each history size (event rows bulk-loaded in the generator's shape by `demo_writer`):
- tick: a small batch of new events is written, every stream table is forced due, and one
  `pgtrickle.emulator_tick()` is timed as the owner `demo` (median of a few ticks);
- freshness: `CALL pgtrickle.emulator_run(...)` drives the scheduler while the writer adds events every
  100 ms; every 200 ms the staleness of each stream table (`clock_timestamp() - data_timestamp`, as
  pg_trickle's `get_staleness`) is sampled; p50/p95 per table are printed, with the p95 of the time since
  the last refresh (NO_DATA included: whether the schedule is kept). A table whose sources receive no
  writes during the run (e.g. a price list) keeps an old data_timestamp: its freshness is not a delay.
The growth exponent is log(t_large / t_small) / log(rows_large / rows_small) between consecutive sizes.

Sizes: BENCH_EMULATOR_ROWS (comma-separated, default "10000,100000"; e.g. "10000,100000,1000000").
Freshness run length: BENCH_EMULATOR_SECONDS (default 8). Figures are printed, never asserted.
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import threading
import time

import psycopg
import pytest

from devenv.scheduler import DEFAULT_WORKERS

ROWS = [int(x) for x in os.environ.get("BENCH_EMULATOR_ROWS", "10000,100000").split(",") if x.strip()]
FRESHNESS_S = float(os.environ.get("BENCH_EMULATOR_SECONDS", "8"))
# Scheduler sessions of the freshness run (BENCH_EMULATOR_WORKERS, default: make preview's default).
WORKERS = int(os.environ.get("BENCH_EMULATOR_WORKERS", str(DEFAULT_WORKERS)))
TICKS = 5
TICK_MS = 500  # the scheduler's default tick interval (emulator_run), as make preview runs it
BATCH = 50  # events written before each timed tick and every 100 ms during the freshness run

# One INSERT ... SELECT per scenario: n events over the seeded dimension rows, in the generator's shape.
EVENTS = {
    "ecommerce": """
        INSERT INTO orders (customer_id, product_id, quantity, unit_price)
        SELECT c.ids[1 + (random() * (array_length(c.ids, 1) - 1))::int],
               p.ids[1 + (random() * (array_length(p.ids, 1) - 1))::int],
               1 + (random() * 4)::int, round((5 + random() * 200)::numeric, 2)
          FROM generate_series(1, %(n)s) g,
               (SELECT array_agg(id) ids FROM customers) c, (SELECT array_agg(id) ids FROM products) p
    """,
    "fraud": """
        INSERT INTO transactions (user_id, merchant_id, amount)
        SELECT u.ids[1 + (random() * (array_length(u.ids, 1) - 1))::int],
               m.ids[1 + (random() * (array_length(m.ids, 1) - 1))::int],
               round((1 + random() * 500)::numeric, 2)
          FROM generate_series(1, %(n)s) g,
               (SELECT array_agg(id) ids FROM users) u, (SELECT array_agg(id) ids FROM merchants) m
    """,
    "finance": """
        INSERT INTO trades (account_id, instrument_id, quantity, price)
        SELECT a.ids[1 + (random() * (array_length(a.ids, 1) - 1))::int],
               i.ids[1 + (random() * (array_length(i.ids, 1) - 1))::int],
               (CASE WHEN random() < 0.5 THEN -1 ELSE 1 END) * (1 + (random() * 99)::int),
               round((10 + random() * 300)::numeric, 4)
          FROM generate_series(1, %(n)s) g,
               (SELECT array_agg(id) ids FROM accounts) a, (SELECT array_agg(id) ids FROM instruments) i
    """,
}


def _write(url: str, scenario: str, n: int) -> None:
    with psycopg.connect(url) as conn:
        conn.execute(EVENTS[scenario], {"n": n})


def _tick_seconds(db) -> list[float]:
    times = []
    with psycopg.connect(db.admin_url, autocommit=True) as admin, psycopg.connect(db.owner_url) as owner:
        for _ in range(TICKS):
            _write(db.writer_url, db.scenario, BATCH)
            admin.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = '-infinity'")
            started = time.perf_counter()
            owner.execute("SELECT pgtrickle.emulator_tick()")
            owner.commit()
            times.append(time.perf_counter() - started)
    return times


def _freshness(db) -> dict[str, tuple[float, float, float, str]]:
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer():
        try:
            while not stop.is_set():
                _write(db.writer_url, db.scenario, BATCH // 5)
                stop.wait(0.1)
        except BaseException as exc:  # reported below
            errors.append(exc)

    schedulers = [psycopg.connect(db.owner_url, autocommit=True) for _ in range(WORKERS)]
    for conn in schedulers:  # every session gets one of the pg_trickle.max_concurrent_refreshes slots
        conn.execute("SELECT set_config('pg_trickle.max_concurrent_refreshes', %s, false)", (str(WORKERS),))
    runners = [threading.Thread(target=_run_quietly, args=(conn,), daemon=True) for conn in schedulers]
    feeder = threading.Thread(target=writer, daemon=True)
    for runner in runners:
        runner.start()
    feeder.start()
    samples: dict[str, list[float]] = {}
    ages: dict[str, list[float]] = {}
    schedules: dict[str, str] = {}
    deadline = time.monotonic() + FRESHNESS_S
    with psycopg.connect(db.reader_url, autocommit=True) as reader:
        time.sleep(1.0)  # let the scheduler's first refreshes land before sampling
        while time.monotonic() < deadline:
            for name, schedule, stale, age in reader.execute(
                "SELECT pgt_name, coalesce(schedule, 'calculated'),"
                " extract(epoch FROM clock_timestamp() - data_timestamp)::float8,"
                " extract(epoch FROM clock_timestamp() - last_refresh_at)::float8"
                " FROM pgtrickle.pgt_stream_tables WHERE data_timestamp IS NOT NULL"
            ):
                samples.setdefault(name, []).append(stale)
                ages.setdefault(name, []).append(age)
                schedules[name] = schedule
            time.sleep(0.2)
    stop.set()
    feeder.join(10)
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        for conn in schedulers:
            admin.execute("SELECT pg_cancel_backend(%s)", (conn.info.backend_pid,))
    for runner in runners:
        runner.join(30)
    for conn in schedulers:
        conn.close()
    assert not errors, errors
    return {name: (statistics.median(v), _p95(v), _p95(ages[name]), schedules[name]) for name, v in samples.items()}


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]


def _run_quietly(conn) -> None:
    with contextlib.suppress(psycopg.errors.QueryCanceled):
        conn.execute("CALL pgtrickle.emulator_run(%s)", (TICK_MS,))


@pytest.mark.bench
@pytest.mark.parametrize("scenario", ["ecommerce", "fraud", "finance"])
def test_emulator_tick_and_freshness_by_history(demo_db, scenario):
    results = []
    db = demo_db(scenario)
    loaded = 0
    for rows in sorted(ROWS):
        _write(db.writer_url, scenario, rows - loaded)
        loaded = rows
        with psycopg.connect(db.owner_url, autocommit=True) as owner:
            owner.execute("ANALYZE")
        with psycopg.connect(db.owner_url) as owner:  # absorb the bulk load (one refresh of everything)
            owner.execute("SELECT pgtrickle.emulator_tick()")
        ticks = _tick_seconds(db)
        fresh = _freshness(db)
        results.append((rows, statistics.median(ticks), fresh))

    lines = [f"\n== emulator benchmark: {scenario} (tick = all stream tables due, median of {TICKS}) =="]
    previous = None
    for rows, tick, fresh in results:
        growth = ""
        if previous:
            growth = f"  growth exponent {math.log(tick / previous[1]) / math.log(rows / previous[0]):.2f}"
        lines.append(f"  {rows:>10,} event rows: tick {tick * 1000:9.1f} ms{growth}")
        for name in sorted(fresh):
            p50, p95, age95, schedule = fresh[name]
            lines.append(
                f"      {name:<28} {schedule:>10}  freshness p50 {p50:6.2f} s  p95 {p95:6.2f} s"
                f"  (since last refresh p95 {age95:6.2f} s)"
            )
        previous = (rows, tick)
    print("\n".join(lines))
    assert len(results) == len(ROWS)
