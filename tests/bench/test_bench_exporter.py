"""Benchmark (make bench): the exporter's scrape duration with 200 stream tables and 1,000,000 refresh-history
rows, p50 and p95 over 100 scrapes (target p95 < 100 ms), beside Debian's prometheus-postgres-exporter
running custom queries that produce the same per-stream-table figures against the same database, in the
same run. Between two scrapes, one new refresh per stream table lands in the history (200 rows), for both.

Figures are printed, not asserted. The machine is shared: run it alone and read the figures as indicative.
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from devenv.postgres import free_port
from services.common.db import make_pool
from services.exporter.analyses import AnalysesReader
from services.exporter.history import DURATION_BUCKETS, HistoryTracker
from tests.monitoring.support import ExporterProcess, http_get, wait_for

STREAM_TABLES = int(os.environ.get("BENCH_EXPORTER_TABLES", "200"))
HISTORY_ROWS = int(os.environ.get("BENCH_EXPORTER_HISTORY", "1000000"))
SCRAPES = int(os.environ.get("BENCH_EXPORTER_SCRAPES", "100"))
POSTGRES_EXPORTER = "prometheus-postgres-exporter"

_BUCKETS = ",\n".join(
    f"        count(*) FILTER (WHERE work AND d <= {bound}) AS le_{str(bound).replace('.', '_')}"
    for bound in DURATION_BUCKETS
)
# postgres_exporter custom queries (its deprecated extend.query-path, as pg_trickle's own monitoring bundle
# uses): the same per-stream-table figures as our exporter, read the only way a stateless exporter can:
# grouped over the whole history at every scrape.
_BUCKET_METRICS = "\n".join(
    f"    - le_{str(bound).replace('.', '_')}: {{usage: COUNTER, description: bucket}}" for bound in DURATION_BUCKETS
)
CUSTOM_QUERIES = """
pg_trickle_st:
  query: |
    SELECT pgt_schema AS schema, pgt_name AS name,
           (status = 'ACTIVE')::int AS active, (status = 'SUSPENDED')::int AS suspended,
           (status = 'ERROR')::int AS error, (status = 'INITIALIZING')::int AS initializing,
           extract(epoch FROM now() - data_timestamp) AS staleness_seconds,
           extract(epoch FROM now() - last_refresh_at) AS seconds_since_last_refresh,
           consecutive_errors, is_populated::int AS populated
      FROM pgtrickle.pgt_stream_tables
  metrics:
    - schema: {usage: LABEL, description: schema}
    - name: {usage: LABEL, description: name}
    - active: {usage: GAUGE, description: status ACTIVE}
    - suspended: {usage: GAUGE, description: status SUSPENDED}
    - error: {usage: GAUGE, description: status ERROR}
    - initializing: {usage: GAUGE, description: status INITIALIZING}
    - staleness_seconds: {usage: GAUGE, description: data age}
    - seconds_since_last_refresh: {usage: GAUGE, description: since last refresh}
    - consecutive_errors: {usage: GAUGE, description: consecutive errors}
    - populated: {usage: GAUGE, description: populated}
pg_trickle_refreshes:
  query: |
    SELECT st.pgt_schema AS schema, st.pgt_name AS name, h.action, h.status, count(*) AS total,
           sum(h.rows_inserted) FILTER (WHERE h.status = 'COMPLETED') AS rows_inserted,
           sum(h.rows_deleted) FILTER (WHERE h.status = 'COMPLETED') AS rows_deleted
      FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables st USING (pgt_id)
     WHERE h.status IN ('COMPLETED', 'FAILED', 'SKIPPED')
     GROUP BY 1, 2, 3, 4
  metrics:
    - schema: {usage: LABEL, description: schema}
    - name: {usage: LABEL, description: name}
    - action: {usage: LABEL, description: action}
    - status: {usage: LABEL, description: status}
    - total: {usage: COUNTER, description: refreshes}
    - rows_inserted: {usage: COUNTER, description: rows inserted}
    - rows_deleted: {usage: COUNTER, description: rows deleted}
pg_trickle_duration:
  query: |
    SELECT st.pgt_schema AS schema, st.pgt_name AS name,
__BUCKETS__,
           count(*) FILTER (WHERE work) AS count, coalesce(sum(d) FILTER (WHERE work), 0) AS sum
      FROM (SELECT pgt_id, extract(epoch FROM end_time - start_time) AS d,
                   status = 'COMPLETED' AND action IN ('FULL', 'DIFFERENTIAL', 'REINITIALIZE') AS work
              FROM pgtrickle.pgt_refresh_history) h
      JOIN pgtrickle.pgt_stream_tables st USING (pgt_id)
     GROUP BY 1, 2
  metrics:
    - schema: {usage: LABEL, description: schema}
    - name: {usage: LABEL, description: name}
__BUCKET_METRICS__
    - count: {usage: COUNTER, description: count}
    - sum: {usage: COUNTER, description: sum}
pg_trickle_buffers:
  query: |
    SELECT split_part(stream_table, '.', 1) AS schema, split_part(stream_table, '.', 2) AS name,
           sum(pending_rows) AS pending_rows
      FROM pgtrickle.change_buffer_sizes() GROUP BY 1, 2
  metrics:
    - schema: {usage: LABEL, description: schema}
    - name: {usage: LABEL, description: name}
    - pending_rows: {usage: GAUGE, description: pending rows}
pg_trickle_health:
  query: "SELECT check_name, (severity <> 'OK')::int AS not_ok FROM pgtrickle.health_check()"
  metrics:
    - check_name: {usage: LABEL, description: check}
    - not_ok: {usage: GAUGE, description: severity not OK}
""".replace("__BUCKETS__", _BUCKETS).replace("__BUCKET_METRICS__", _BUCKET_METRICS)


def _populate(admin_url: str) -> float:
    """200 stream tables (the scenario's plus simple ones over one source) and 1,000,000 history rows."""
    started = time.perf_counter()
    with psycopg.connect(admin_url, autocommit=True) as conn:
        existing = conn.execute("SELECT count(*) FROM pgtrickle.pgt_stream_tables").fetchone()[0]
        conn.execute("CREATE TABLE bench_source (id int PRIMARY KEY, grp int NOT NULL, v int NOT NULL)")
        conn.execute("INSERT INTO bench_source SELECT g, g % 50, g FROM generate_series(1, 1000) g")
        for n in range(STREAM_TABLES - existing):
            conn.execute(
                "SELECT pgtrickle.create_stream_table(name => %s, query => %s, schedule => '1s')",
                (
                    f"bench_st_{n:03d}",
                    f"SELECT grp, sum(v) AS total FROM bench_source WHERE id % 97 <> {n % 97} GROUP BY grp",  # noqa: S608
                ),
            )
        # The history: 90 % NO_DATA, 10 % FULL refreshes of 1-200 ms, spread over the last 30 days.
        conn.execute(
            """INSERT INTO pgtrickle.pgt_refresh_history
                   (pgt_id, data_timestamp, start_time, end_time, action, rows_inserted, rows_deleted, status,
                    initiated_by)
               SELECT ids.pgt_id[1 + g %% array_length(ids.pgt_id, 1)],
                      t, t,
                      t + make_interval(secs => CASE WHEN g %% 10 = 0 THEN 0.001 + (g %% 200) / 1000.0 ELSE 0.0005 END),
                      CASE WHEN g %% 10 = 0 THEN 'FULL' ELSE 'NO_DATA' END,
                      CASE WHEN g %% 10 = 0 THEN g %% 7 ELSE 0 END, CASE WHEN g %% 10 = 0 THEN g %% 5 ELSE 0 END,
                      'COMPLETED', 'SCHEDULER'
                 FROM generate_series(1, %s) g
                 CROSS JOIN (SELECT array_agg(pgt_id ORDER BY pgt_id) AS pgt_id FROM pgtrickle.pgt_stream_tables) ids
                 CROSS JOIN LATERAL (SELECT now() - interval '30 days' + g * (interval '30 days' / %s) AS t) ts""",
            (HISTORY_ROWS, HISTORY_ROWS),
        )
        conn.execute("ANALYZE pgtrickle.pgt_refresh_history")
        conn.execute("ANALYZE pgtrickle.pgt_stream_tables")
        tables, history = conn.execute(
            "SELECT (SELECT count(*) FROM pgtrickle.pgt_stream_tables),"
            " (SELECT count(*) FROM pgtrickle.pgt_refresh_history)"
        ).fetchone()
    assert tables == STREAM_TABLES and history >= HISTORY_ROWS
    return time.perf_counter() - started


def _new_refreshes(admin_url: str) -> None:
    """One finished refresh per stream table, as a running scheduler would add between two scrapes."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO pgtrickle.pgt_refresh_history
                   (pgt_id, data_timestamp, start_time, end_time, action, status, initiated_by)
               SELECT pgt_id, now(), now(), now() + interval '2 ms', 'NO_DATA', 'COMPLETED', 'SCHEDULER'
                 FROM pgtrickle.pgt_stream_tables"""
        )


def _timed_scrapes(url: str, admin_url: str) -> list[float]:
    durations = []
    for _ in range(SCRAPES):
        _new_refreshes(admin_url)
        started = time.perf_counter()
        status, body = http_get(url, timeout=60)
        durations.append(time.perf_counter() - started)
        assert status == 200 and body
    return durations


def _summary(durations: list[float]) -> tuple[float, float]:
    ordered = sorted(durations)
    p50 = statistics.median(ordered)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]
    return p50 * 1000, p95 * 1000


@pytest.mark.bench
def test_bench_exporter_scrape_vs_postgres_exporter(demo_db):
    binary = shutil.which(POSTGRES_EXPORTER)
    if binary is None:
        pytest.skip(f"{POSTGRES_EXPORTER} not installed (apt-get install prometheus-postgres-exporter; bench only)")
    db = demo_db("ecommerce")
    setup_s = _populate(db.admin_url)

    with ExporterProcess(
        db.reader_url, env={"DEMO_SCENARIO": "ecommerce", "EXPORTER_ADVISOR_INTERVAL": "86400"}
    ) as exporter:
        exporter.wait_ready(60)

        def analyses_done():  # the background analyses' first read (or its 60 s timeout) must not overlap the timing
            text = exporter.metrics_text()
            return "pg_trickle_exporter_analyses_age_seconds" in text or 'stage="analyses"} 1.0' in text

        wait_for(analyses_done, 120, "the exporter's first analyses read did not finish", interval=1)
        assert "pg_trickle_up 1.0" in exporter.metrics_text()
        ours = _timed_scrapes(f"{exporter.url}/metrics", db.admin_url)
        series = sum(1 for line in exporter.metrics_text().splitlines() if line and not line.startswith("#"))
        exporter.stop()

    with psycopg.connect(db.reader_url) as conn:
        conn.execute("SET statement_timeout = '600s'")
        started = time.perf_counter()
        HistoryTracker().baseline(conn)  # the one-off pass over the history an exporter makes at start-up
        baseline_s = time.perf_counter() - started
        conn.commit()
    # The background analyses (refresh_efficiency() and recommend_refresh_mode() for every table).
    pool = make_pool(db.reader_url, application_name="bench-analyses", statement_timeout_ms=600_000, read_only=True)
    pool.open(wait=True, timeout=30)
    try:
        analyses = AnalysesReader(pool, 3600, threading.Event()).read_once()
    finally:
        pool.close()
    assert len(analyses.recommendations) == STREAM_TABLES

    params = conninfo_to_dict(db.reader_url)
    dsn = (
        f"postgresql://{params['user']}:{params['password']}@{params.get('host', '127.0.0.1')}:{params['port']}"
        f"/{params['dbname']}?sslmode=disable"
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        queries = Path(folder) / "queries.yaml"
        queries.write_text(CUSTOM_QUERIES)
        log = open(Path(folder) / "postgres_exporter.log", "w")  # noqa: SIM115
        proc = subprocess.Popen(
            [
                binary,
                f"--web.listen-address=127.0.0.1:{port}",
                f"--extend.query-path={queries}",
                "--disable-default-metrics",
                "--disable-settings-metrics",
                "--no-collector.database",
                "--no-collector.bgwriter",
            ],
            env={"DATA_SOURCE_NAME": dsn, "PATH": os.environ.get("PATH", "")},
            stdout=log,
            stderr=log,
        )
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            wait_for(lambda: http_get(url, timeout=60)[0] == 200, 60, "postgres_exporter did not answer")
            text = http_get(url, timeout=60)[1]
            assert "pg_trickle_refreshes_total" in text, (Path(folder) / "postgres_exporter.log").read_text()[-2000:]
            theirs = _timed_scrapes(url, db.admin_url)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
            log.close()

    ours_p50, ours_p95 = _summary(ours)
    theirs_p50, theirs_p95 = _summary(theirs)
    print(
        f"\nexporter benchmark: {STREAM_TABLES} stream tables, {HISTORY_ROWS:,} history rows "
        f"(+{STREAM_TABLES} per scrape), {SCRAPES} scrapes each; setup {setup_s:.1f} s\n"
        f"  services.exporter        p50 {ours_p50:7.1f} ms  p95 {ours_p95:7.1f} ms  (target p95 < 100 ms; "
        f"{series} samples; start-up pass over the history {baseline_s * 1000:.0f} ms)\n"
        f"  postgres_exporter 0.11   p50 {theirs_p50:7.1f} ms  p95 {theirs_p95:7.1f} ms  "
        "(custom queries, same figures)\n"
        f"  ratio postgres_exporter / ours: p50 {theirs_p50 / ours_p50:.1f}x  p95 {theirs_p95 / ours_p95:.1f}x\n"
        f"  engine analyses read in the background by our exporter (in neither timed scrape): "
        f"refresh_efficiency() + recommend_refresh_mode() for all tables {analyses.duration:.1f} s"
    )
