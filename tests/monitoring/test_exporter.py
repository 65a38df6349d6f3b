"""The exporter against real PostgreSQL 18 and the emulator: counters equal the refresh history and carry on
across exporter restarts, scrapes read only what is new, an unreachable database gives pg_trickle_up 0."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections import defaultdict
from datetime import UTC, datetime

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from devenv.postgres import free_port
from services.common import pgtrickle
from services.exporter.analyses import AnalysesReader, next_wait
from services.exporter.collector import (
    ACTIONS,
    JOB_STATUSES,
    MODES,
    REFRESH_STATUSES,
    SEVERITIES,
    STAGES,
    STATUSES,
    PgTrickleCollector,
    schedule_seconds,
    speedup_ratio,
)
from services.exporter.config import load_config
from services.exporter.history import HistoryTracker
from tests.monitoring.support import ExporterProcess, http_get, wait_for
from tests.support import ROOT, TEST_PASSWORDS, require_tool

ENUMERATIONS = {
    "status": set(STATUSES) | set(REFRESH_STATUSES) | set(JOB_STATUSES),
    "action": set(ACTIONS),
    "operation": {"inserted", "deleted"},
    "mode": set(MODES),
    "severity": set(SEVERITIES),
    "stage": set(STAGES),
}


def scenario_tables(admin_url: str) -> set[str]:
    """schema.table of every table of the scenario database's public schema."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute("SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'public'")
        return {row[0] for row in rows}


def samples(text: str) -> list:
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def refresh_round(admin_url: str, orders: int = 3) -> None:
    """Writes a few orders, makes every stream table due and runs one emulator tick."""
    with psycopg.connect(admin_url, autocommit=True) as conn:
        for _ in range(orders):
            conn.execute("INSERT INTO orders (customer_id, product_id, quantity, unit_price) VALUES (1, 1, 2, 9.99)")
        conn.execute("UPDATE pgtrickle.pgt_stream_tables SET last_refresh_at = now() - interval '1 hour'")
        pgtrickle.emulator_tick(conn)


def history_counts(admin_url: str) -> tuple[dict, dict, dict]:
    """From the database: refreshes by (name, action, status); rows by (name, operation); duration counts."""
    with psycopg.connect(admin_url) as conn:
        rows = conn.execute(
            """SELECT st.pgt_name, h.action, h.status, count(*), sum(h.rows_inserted), sum(h.rows_deleted),
                      count(*) FILTER (WHERE h.action IN ('FULL', 'DIFFERENTIAL', 'REINITIALIZE')
                                         AND h.status = 'COMPLETED')
                 FROM pgtrickle.pgt_refresh_history h JOIN pgtrickle.pgt_stream_tables st USING (pgt_id)
                WHERE h.status IN ('COMPLETED', 'FAILED', 'SKIPPED')
                GROUP BY 1, 2, 3"""
        ).fetchall()
    refreshes, changed, durations = {}, defaultdict(int), defaultdict(int)
    for name, action, status, count, inserted, deleted, work in rows:
        refreshes[(name, action, status)] = count
        if status == "COMPLETED":
            changed[(name, "inserted")] += inserted
            changed[(name, "deleted")] += deleted
        durations[name] += work
    return refreshes, dict(changed), dict(durations)


def exported_counts(text: str) -> tuple[dict, dict, dict]:
    refreshes, changed, durations = {}, {}, {}
    for s in samples(text):
        if s.name == "pg_trickle_refreshes_total" and s.value:
            refreshes[(s.labels["name"], s.labels["action"], s.labels["status"])] = int(s.value)
        elif s.name == "pg_trickle_rows_changed_total":
            changed[(s.labels["name"], s.labels["operation"])] = int(s.value)
        elif s.name == "pg_trickle_refresh_duration_seconds_count":
            durations[s.labels["name"]] = int(s.value)
    return refreshes, changed, durations


def test_counters_equal_the_history_and_continue_across_restarts(demo_db):
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    env = {"DEMO_SCENARIO": "ecommerce", "EXPORTER_ADVISOR_INTERVAL": "1"}
    with ExporterProcess(db.reader_url, env=env) as exporter:
        exporter.wait_ready()
        first = exporter.metrics_text()
        assert exported_counts(first) == history_counts(db.admin_url)
        refresh_round(db.admin_url)
        second = exporter.metrics_text()
        assert exported_counts(second) == history_counts(db.admin_url)
        assert exported_counts(second)[0] != exported_counts(first)[0], "a refresh round must move the counters"
        assert exporter.stop() == 0
    before_restart = exported_counts(second)

    refresh_round(db.admin_url)  # refreshes while no exporter runs
    with ExporterProcess(db.reader_url, env=env) as exporter:
        exporter.wait_ready()
        after = exporter.metrics_text()
    now = exported_counts(after)
    assert now == history_counts(db.admin_url)
    for old, new in zip(before_restart, now, strict=True):
        for key, value in old.items():
            assert new[key] >= value, f"{key} went backwards across the restart: {value} -> {new[key]}"
    assert sum(now[0].values()) > sum(before_restart[0].values())

    # Bounded cardinality: labels come from stream-table names and fixed enumerations only.
    names = {"product_sales", "customer_stats", "category_revenue", "country_revenue", "catalog_price_impact",
             "top_10_customers"}  # fmt: skip
    tables = scenario_tables(db.admin_url)
    for s in samples(after):
        for label, value in s.labels.items():
            if label == "name":
                assert value in names, s
            elif label == "schema":
                assert value == "public", s
            elif label in ENUMERATIONS:
                assert value in ENUMERATIONS[label], s
            elif label == "source_table":  # a table of the scenario (one series per CDC source)
                assert value in tables, s
            elif label == "cdc_mode":
                assert value in {"trigger", "wal", "transitioning", "other"}, s
            else:
                assert label in {"le", "check", "version", "engine", "scenario"}, s
    promtool = require_tool("promtool", "Debian package prometheus")
    lint = subprocess.run([promtool, "check", "metrics"], input=after, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and lint.stdout + lint.stderr == "", lint.stdout + lint.stderr
    up = [s.value for s in samples(after) if s.name == "pg_trickle_up"]
    assert up == [1.0]
    info = [s.labels for s in samples(after) if s.name == "pg_trickle_info"]
    assert info and info[0]["engine"] == "emulator" and info[0]["scenario"] == "ecommerce"


def test_a_scrape_reads_only_new_history_and_counts_refreshes_that_finish_later(demo_db):
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    tracker = HistoryTracker()
    with psycopg.connect(db.reader_url) as reader, psycopg.connect(db.admin_url, autocommit=True) as admin:
        with reader.transaction():
            tracker.baseline(reader)
        baseline = {k: dict(v.refreshes) for k, v in tracker.totals.items()}
        assert tracker.advance(reader, datetime.now(UTC)) == 0, "nothing new: nothing read"
        reader.commit()

        # A refresh still RUNNING, then a later one that finished: the later one is counted now, the first
        # when it finishes, each exactly once.
        pgt_id = admin.execute(
            "SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'product_sales'"
        ).fetchone()[0]
        running_id = admin.execute(
            """INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, action, status)
               VALUES (%s, now(), now(), 'FULL', 'RUNNING') RETURNING refresh_id""",
            (pgt_id,),
        ).fetchone()[0]
        admin.execute(
            """INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, end_time, action, status)
               VALUES (%s, now(), now(), now(), 'NO_DATA', 'COMPLETED')""",
            (pgt_id,),
        )
        assert tracker.advance(reader, datetime.now(UTC)) == 2
        reader.commit()
        totals = tracker.totals[pgt_id].refreshes
        assert totals[("NO_DATA", "COMPLETED")] == baseline[pgt_id].get(("NO_DATA", "COMPLETED"), 0) + 1
        assert totals[("FULL", "COMPLETED")] == baseline[pgt_id][("FULL", "COMPLETED")]
        assert tracker.advance(reader, datetime.now(UTC)) == 1, "only the running refresh is looked at again"
        reader.commit()

        admin.execute(
            "UPDATE pgtrickle.pgt_refresh_history SET status = 'COMPLETED', end_time = start_time + interval '2 s',"
            " rows_inserted = 5 WHERE refresh_id = %s",
            (running_id,),
        )
        tracker.advance(reader, datetime.now(UTC))
        reader.commit()
        assert tracker.totals[pgt_id].refreshes[("FULL", "COMPLETED")] == baseline[pgt_id][("FULL", "COMPLETED")] + 1
        assert tracker.running == {}
        assert tracker.advance(reader, datetime.now(UTC)) == 0
        cumulative = tracker.totals[pgt_id].cumulative_buckets()
        assert cumulative[-1] == tracker.totals[pgt_id].duration_count  # the 2 s refresh fits the 60 s bucket


def test_unreachable_database_gives_up_zero_and_not_ready():
    url = f"postgresql://demo_reader:x@127.0.0.1:{free_port()}/ecommerce_demo"
    with ExporterProcess(url, env={"EXPORTER_SCRAPE_TIMEOUT": "1"}) as exporter:
        wait_for(lambda: http_get(f"{exporter.url}/healthz")[0] == 200, 15, exporter.log_text())
        text = exporter.metrics_text()
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(text)}
        assert values[("pg_trickle_up", ())] == 0
        assert values[("pg_trickle_exporter_scrape_errors_total", (("stage", "connect"),))] >= 1
        assert not any(name.startswith("pg_trickle_stream_table") for name, _ in values)
        status, body = http_get(f"{exporter.url}/readyz", timeout=10)
        assert status == 503 and "not readable" in body
        assert exporter.stop() == 0
        assert "Traceback" not in exporter.log_text()


def test_a_database_without_the_engine_gives_up_zero(new_database):
    url = new_database("noengine")  # an empty database: no pgtrickle schema
    with ExporterProcess(url, env={"EXPORTER_SCRAPE_TIMEOUT": "2"}) as exporter:
        wait_for(lambda: http_get(f"{exporter.url}/healthz")[0] == 200, 15, exporter.log_text())
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(exporter.metrics_text())}
        assert values[("pg_trickle_up", ())] == 0
        assert values[("pg_trickle_exporter_scrape_errors_total", (("stage", "catalog"),))] >= 1
        assert http_get(f"{exporter.url}/readyz")[0] == 503
        assert exporter.stop() == 0


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("EXPORTER_PORT", "abc", "EXPORTER_PORT='abc' is not a valid int"),
        ("EXPORTER_SCRAPE_TIMEOUT", "0", "EXPORTER_SCRAPE_TIMEOUT='0' is too small"),
        ("DEMO_SCENARIO", "nope", "DEMO_SCENARIO='nope' is not valid"),
    ],
)
def test_bad_configuration_is_one_line_and_exit_2(variable, value, message):
    result = subprocess.run(
        [sys.executable, "-m", "services.exporter"],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", variable: value},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("exporter: configuration error: ") and message in lines[0]


def test_schedule_and_speedup_parsing():
    assert schedule_seconds("1s") == 1 and schedule_seconds("5m") == 300 and schedule_seconds("1h30m") == 5400
    assert schedule_seconds("90") == 90 and schedule_seconds("2w") == 14 * 86400 and schedule_seconds("1d12h") == 129600
    assert schedule_seconds(None) is None and schedule_seconds("*/5 * * * *") is None
    assert schedule_seconds("calculated") is None
    assert speedup_ratio("12.5x") == 12.5 and speedup_ratio(None) is None and speedup_ratio("n/a") is None


def test_libpq_variables_and_the_reader_password(demo_db, pg_server):
    """As the chart and compose start it: PG* variables, PGUSER demo_reader, DEMO_READER_PASSWORD."""
    db = demo_db("ecommerce")
    env = {
        "PGHOST": pg_server.host,
        "PGPORT": str(pg_server.port),
        "PGDATABASE": db.database,
        "PGUSER": "demo_reader",
        "DEMO_READER_PASSWORD": TEST_PASSWORDS["DEMO_READER_PASSWORD"],
        "DEMO_SCENARIO": "ecommerce",
    }
    with ExporterProcess("", env=env) as exporter:
        exporter.wait_ready()
        assert "pg_trickle_up 1.0" in exporter.metrics_text()
        assert exporter.stop() == 0


def test_configuration_defaults():
    config = load_config({"DEMO_SCENARIO": "fraud", "DEMO_READER_PASSWORD": "pw", "PGHOST": "db.example"})
    params = conninfo_to_dict(config.conninfo)
    assert (params["dbname"], params["user"], params["password"], params["host"]) == (
        "fraud_demo",
        "demo_reader",
        "pw",
        "db.example",
    )
    assert (config.host, config.port, config.scrape_timeout, config.advisor_interval) == ("0.0.0.0", 9188, 5.0, 30.0)  # noqa: S104
    url = load_config({"DATABASE_URL": "postgresql://someone:secret@h/other", "DEMO_READER_PASSWORD": "pw"})
    assert conninfo_to_dict(url.conninfo)["dbname"] == "other"
    assert conninfo_to_dict(url.conninfo)["password"] == "secret"


def test_a_refresh_committed_after_the_baseline_below_its_watermark_is_counted(demo_db):
    """A parallel worker took a refresh_id, a later refresh committed first, then the exporter started:
    the first row is below the watermark but invisible to the baseline; it is counted when it commits."""
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    insert = """INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, end_time, action, status)
                VALUES (%s, now(), now(), now(), 'NO_DATA', 'COMPLETED') RETURNING refresh_id"""
    with (
        psycopg.connect(db.admin_url) as late,
        psycopg.connect(db.admin_url, autocommit=True) as admin,
        psycopg.connect(db.reader_url) as reader,
    ):
        pgt_id = admin.execute(
            "SELECT pgt_id FROM pgtrickle.pgt_stream_tables WHERE pgt_name = 'product_sales'"
        ).fetchone()[0]
        late_id = late.execute(insert, (pgt_id,)).fetchone()[0]  # in flight: not committed yet
        early_id = admin.execute(insert, (pgt_id,)).fetchone()[0]
        assert early_id > late_id

        tracker = HistoryTracker()
        with reader.transaction():
            reader.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            tracker.baseline(reader)
        assert tracker.watermark == early_id and late_id in tracker.gaps
        counted = tracker.totals[pgt_id].refreshes[("NO_DATA", "COMPLETED")]
        assert counted == history_counts(db.admin_url)[0][("product_sales", "NO_DATA", "COMPLETED")]

        late.commit()
        tracker.advance(reader, datetime.now(UTC))
        reader.commit()
        assert tracker.totals[pgt_id].refreshes[("NO_DATA", "COMPLETED")] == counted + 1
        assert late_id not in tracker.gaps
        tracker.advance(reader, datetime.now(UTC))
        assert tracker.totals[pgt_id].refreshes[("NO_DATA", "COMPLETED")] == counted + 1, "counted once"


def test_the_analyses_are_read_separately_and_their_interval_follows_their_cost(demo_db):
    """recommend_refresh_mode() not granted to the reader: refresh_efficiency() still feeds the change
    ratio, and the failure counts once. A read that took D seconds delays the next by 10 x D."""
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        admin.execute("REVOKE EXECUTE ON FUNCTION pgtrickle.recommend_refresh_mode(text) FROM PUBLIC, demo_reader")
    stop = threading.Event()
    with ConnectionPool(db.reader_url, min_size=1, max_size=1, open=True) as pool:
        reader = AnalysesReader(pool, 30, stop)
        latest = reader.read_once()
    assert ("public", "product_sales") in latest.efficiency
    assert latest.recommendations == {}
    assert reader.errors == 1

    assert next_wait(30, 0.2, 0) == 30
    assert next_wait(30, 4.5, 0) == 45, "a 4.5 s read (1M history rows) waits 45 s, not 30"
    assert next_wait(30, 4.5, 1) == 90 and next_wait(30, 4.5, 10) == 600
    assert next_wait(900, 1, 3) == 900, "an interval beyond the back-off cap stays the interval"


def test_ready_means_the_scenarios_stream_tables_are_present(demo_db):
    db = demo_db("ecommerce")
    with ConnectionPool(db.reader_url, min_size=1, max_size=1, open=True) as pool:
        collector = PgTrickleCollector(pool, "ecommerce", 5.0)
        assert collector.ready() == (True, "catalog readable, scenario stream tables present")
        with psycopg.connect(db.admin_url, autocommit=True) as admin:
            pgtrickle.drop_stream_table(admin, "public.top_10_customers")
        ready, detail = collector.ready()
        assert not ready and "top_10_customers" in detail and "missing" in detail
        assert not PgTrickleCollector(pool, "fraud", 5.0).ready()[0], "another scenario's tables are not there"


def _readme_metrics() -> dict[str, tuple[str, set[str]]]:
    """The metrics table of docs/monitoring.md: name -> (type, labels)."""
    section = (ROOT / "docs" / "monitoring.md").read_text()
    out = {}
    table = section.split("| Metric | Type | Labels | Unit | Meaning |", 1)[1].split("\n\n", 1)[0]
    for line in table.splitlines()[2:]:
        name, kind, labels = (cell.strip() for cell in line.split("|")[1:4])
        name = name.strip("`")
        out[name] = (kind.split()[0], {label.strip() for label in re.sub(r"\(.*?\)", "", labels).split(",")} - {""})
    return out


def test_the_readme_metrics_table_matches_the_exposition(demo_db):
    """Every family the exporter serves is in the docs/monitoring.md table with its type and labels, and the table
    names nothing else."""
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    with ConnectionPool(db.reader_url, min_size=1, max_size=2, open=True) as pool:
        analyses = AnalysesReader(pool, 30, threading.Event())
        analyses.read_once()
        families = list(PgTrickleCollector(pool, "ecommerce", 5.0, analyses).collect())
    exposed = {}
    for family in families:
        name = family.name + ("_total" if family.type == "counter" else "")
        labels = {key for sample in family.samples for key in sample.labels} - {"le"}
        exposed[name] = (family.type, labels or set(family._labelnames))
    assert exposed["pg_trickle_up"] == ("gauge", set())
    assert _readme_metrics() == exposed


class _RecordingCursor(psycopg.Cursor):
    """Remembers every statement run through it (the exporter's pool uses it in the plan test)."""

    statements: list = []

    def execute(self, query, params=None, **kwargs):
        _RecordingCursor.statements.append((query, params))
        return super().execute(query, params, **kwargs)


def _seq_scans(plan: dict) -> list[str]:
    found = [plan["Relation Name"]] if plan.get("Node Type") == "Seq Scan" else []
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


def test_a_scrape_never_scans_the_refresh_history(demo_db):
    """With 200,000 history rows: after the start-up baseline, every statement a scrape runs (new rows,
    refreshes still RUNNING, ids skipped by the sequence) is planned without a sequential scan of
    pgt_refresh_history."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        admin.execute(
            """INSERT INTO pgtrickle.pgt_refresh_history
                      (pgt_id, data_timestamp, start_time, end_time, action, status, rows_inserted)
               SELECT st.pgt_id, now(), now() - make_interval(secs => g), now() - make_interval(secs => g) + '5 ms',
                      CASE WHEN g % 7 = 0 THEN 'FULL' ELSE 'NO_DATA' END, 'COMPLETED', g % 3
                 FROM generate_series(1, 33334) g CROSS JOIN pgtrickle.pgt_stream_tables st"""
        )
        admin.execute("ANALYZE pgtrickle.pgt_refresh_history")
        assert admin.execute("SELECT count(*) FROM pgtrickle.pgt_refresh_history").fetchone()[0] > 200_000
    with ConnectionPool(
        db.reader_url, min_size=1, max_size=1, open=True, kwargs={"cursor_factory": _RecordingCursor}
    ) as pool:
        collector = PgTrickleCollector(pool, "ecommerce", 30.0)
        list(collector.collect())  # the baseline (a one-off full pass at start-up)
        assert collector.history.initialised
        with psycopg.connect(db.admin_url) as late, psycopg.connect(db.admin_url, autocommit=True) as admin:
            late.execute(  # a refresh in flight: its id is skipped until it commits
                "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, action, status)"
                " SELECT min(pgt_id), now(), now(), 'FULL', 'RUNNING' FROM pgtrickle.pgt_stream_tables"
            )
            refresh_round(db.admin_url)
            admin.execute(  # and one a visible RUNNING row stands for
                "INSERT INTO pgtrickle.pgt_refresh_history (pgt_id, data_timestamp, start_time, action, status)"
                " SELECT max(pgt_id), now(), now(), 'FULL', 'RUNNING' FROM pgtrickle.pgt_stream_tables"
            )
            _RecordingCursor.statements.clear()
            list(collector.collect())
            assert collector.history.gaps and collector.history.running, "looked up again at the next scrape"
            list(collector.collect())
            late.rollback()
        statements = list(_RecordingCursor.statements)
    assert collector.errors == dict.fromkeys(collector.errors, 0)
    explained = 0
    with psycopg.connect(db.reader_url) as conn:
        for query, params in statements:
            text = query.as_string(conn) if isinstance(query, sql.Composable) else query
            if not text.lstrip().upper().startswith("SELECT"):
                continue
            plan = conn.execute(f"EXPLAIN (FORMAT JSON) {text}", params).fetchone()[0][0]["Plan"]
            assert "pgt_refresh_history" not in _seq_scans(plan), text
            explained += "pgt_refresh_history" in text
    assert explained >= 3, "the history reads (new rows, RUNNING and skipped ids) were explained"


def test_health_check_labels_stay_bounded(demo_db):
    """An engine whose health_check() returns odd names, repeats and hundreds of rows: the exporter keeps
    names that look like check names, once each (the first row wins), at most 32 of them, and severities
    from the enumeration; the scheduler_running row counts wherever it comes."""
    db = demo_db("ecommerce")
    with psycopg.connect(db.admin_url, autocommit=True) as admin:
        admin.execute(
            """CREATE OR REPLACE FUNCTION pgtrickle.health_check()
               RETURNS TABLE (check_name text, severity text, detail text) LANGUAGE sql STABLE AS $$
                   SELECT 'buffer_growth', 'OK', ''
                   UNION ALL SELECT 'buffer_growth', 'ERROR', 'a repeat'
                   UNION ALL SELECT 'Table "public.x" is odd', 'WARN', ''
                   UNION ALL SELECT 'slot_lag', 'CRITICAL', ''
                   UNION ALL SELECT 'check_' || g, 'WARNING', '' FROM generate_series(1, 300) g
                   UNION ALL SELECT 'scheduler_running', 'OK', ''
               $$"""
        )
    with ConnectionPool(db.reader_url, min_size=1, max_size=1, open=True) as pool:
        (family,) = [
            f for f in PgTrickleCollector(pool, "ecommerce", 5.0).collect() if f.name == "pg_trickle_health_check"
        ]
        (running,) = [
            f for f in PgTrickleCollector(pool, "ecommerce", 5.0).collect() if f.name == "pg_trickle_scheduler_running"
        ]
    checks = {s.labels["check"] for s in family.samples}
    assert len(checks) == 32 and {"buffer_growth", "slot_lag", "check_1"} <= checks
    assert "scheduler_running" not in checks, "beyond the first 32 names"
    assert len(family.samples) == 32 * len(SEVERITIES), "one sample per check and severity: no duplicates"
    assert {s.labels["severity"] for s in family.samples} == set(SEVERITIES)
    assert [s.value for s in family.samples if s.labels["check"] == "buffer_growth"] == [1, 0, 0], "first row wins"
    assert [s.value for s in family.samples if s.labels == {"check": "check_1", "severity": "WARN"}] == [1]
    assert [s.value for s in family.samples if s.labels["check"] == "slot_lag"] == [0, 0, 0], "CRITICAL: none"
    assert running.samples[0].value == 1, "the scheduler_running row counts wherever it comes"


def test_pruning_leaves_a_running_exporters_counters_alone(demo_db):
    """pg_trickle deletes history beyond its retention: the totals of a running exporter do not go back."""
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    refresh_round(db.admin_url)
    with psycopg.connect(db.reader_url) as reader, psycopg.connect(db.admin_url, autocommit=True) as admin:
        tracker = HistoryTracker()
        with reader.transaction():
            tracker.baseline(reader)
        before = {pgt_id: dict(t.refreshes) for pgt_id, t in tracker.totals.items()}
        pruned = admin.execute(
            "DELETE FROM pgtrickle.pgt_refresh_history"
            " WHERE refresh_id <= (SELECT max(refresh_id) / 2 FROM pgtrickle.pgt_refresh_history)"
        ).rowcount
        assert pruned > 0
        refresh_round(db.admin_url)
        tracker.advance(reader, datetime.now(UTC))
        reader.commit()
        for pgt_id, counts in before.items():
            for key, value in counts.items():
                assert tracker.totals[pgt_id].refreshes[key] >= value, (pgt_id, key)
        assert sum(sum(t.refreshes.values()) for t in tracker.totals.values()) > sum(
            sum(c.values()) for c in before.values()
        )


def test_engine_capacity_metrics_and_their_stage_failing_alone(demo_db):
    """slot_health(), worker_pool_status() and parallel_job_status() become series, read as demo_reader; when one
    of them cannot be read, that stage alone fails: pg_trickle_up stays 1 and every other family is served."""
    db = demo_db("ecommerce")
    refresh_round(db.admin_url)
    with ExporterProcess(db.reader_url, env={"DEMO_SCENARIO": "ecommerce"}) as exporter:
        exporter.wait_ready()
        values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(exporter.metrics_text())}
        slots = {dict(labels)["source_table"]: value for (name, labels), value in values.items()
                 if name == "pg_trickle_slot_retained_wal_bytes"}  # fmt: skip
        assert slots and set(slots) <= scenario_tables(db.admin_url)
        with psycopg.connect(db.admin_url) as conn:
            engine = {
                row[0]: row[1]
                for row in conn.execute(
                    """SELECT format('%I.%I', n.nspname, c.relname), h.retained_wal_bytes
                         FROM pgtrickle.slot_health() h JOIN pg_class c ON c.oid = h.source_relid::oid
                         JOIN pg_namespace n ON n.oid = c.relnamespace"""
                )
            }
            pool = conn.execute("SELECT active_workers, max_workers FROM pgtrickle.worker_pool_status()").fetchone()
        assert slots == engine
        assert values[("pg_trickle_worker_pool_active_workers", ())] == pool[0]
        assert values[("pg_trickle_worker_pool_max_workers", ())] == pool[1]
        for status in JOB_STATUSES:
            assert ("pg_trickle_refresh_jobs", (("status", status),)) in values

        with psycopg.connect(db.admin_url, autocommit=True) as conn:
            conn.execute("REVOKE EXECUTE ON FUNCTION pgtrickle.worker_pool_status() FROM PUBLIC")
        try:
            text = exporter.metrics_text()
        finally:
            with psycopg.connect(db.admin_url, autocommit=True) as conn:
                conn.execute("GRANT EXECUTE ON FUNCTION pgtrickle.worker_pool_status() TO PUBLIC")
        after = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples(text)}
        assert after[("pg_trickle_up", ())] == 1
        assert after[("pg_trickle_exporter_scrape_errors_total", (("stage", "engine_capacity"),))] >= 1
        assert not any(name == "pg_trickle_worker_pool_active_workers" for name, _ in after)
        assert any(name == "pg_trickle_change_buffer_pending_rows" for name, _ in after)
        assert "permission denied" in exporter.log_text()
