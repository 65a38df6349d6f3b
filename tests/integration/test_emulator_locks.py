"""The emulator's scheduler and refresh locks can be taken by the owner only (issue 14, finding 7).

Before, they were advisory locks (keys 7461/1 for the scheduler, 7462/pgt_id per stream table), which any
role may take: demo_reader holding them stalled one table's refreshes, or all of them. Now they are row
locks on the pgtrickle catalog (locking a row needs UPDATE privilege, which readers do not have) and a
scheduler lease claimed under such a lock (sql/emulator/pgtrickle_emulator.sql, emulator_try_refresh_lock,
emulator_run).
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from psycopg import sql

from services.common import pgtrickle


def _ids(conn: psycopg.Connection) -> dict[str, int]:
    return {st.pgt_name: st.pgt_id for st in pgtrickle.stream_tables(conn)}


def test_a_reader_holding_every_old_lock_key_stalls_nothing(demo_db):
    db = demo_db("ecommerce")
    if db.engine != "emulator":
        pytest.skip("the emulator's locks")
    with psycopg.connect(db.owner_url, autocommit=True) as owner:
        ids = _ids(owner)
    with psycopg.connect(db.reader_url, autocommit=True) as reader:
        # Every advisory key the emulator (and pg_trickle's manual refresh) ever used, held for the test.
        reader.execute("SELECT pg_advisory_lock(7461, 1)")
        for pgt_id in ids.values():
            reader.execute("SELECT pg_advisory_lock(7462, %s)", (pgt_id,))
            reader.execute("SELECT pg_advisory_lock(%s::bigint)", (pgt_id,))
        with psycopg.connect(db.owner_url, autocommit=True) as owner:
            for name in ids:
                pgtrickle.refresh_stream_table(owner, name)  # not "already in progress"
            pgtrickle.emulator_run(owner, 10, 2)  # not "another emulator scheduler is running"
            assert (
                owner.execute(
                    "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE initiated_by = 'SCHEDULER'"
                    " AND status = 'SKIPPED'"
                ).fetchone()[0]
                == 0
            )


@pytest.mark.parametrize("clause", ["FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE"])
@pytest.mark.parametrize("table", ["pgtrickle.pgt_stream_tables", "pgtrickle.emulator_scheduler"])
def test_a_reader_cannot_lock_the_rows_the_emulator_locks(demo_db, clause, table):
    db = demo_db("ecommerce")
    if db.engine != "emulator":
        pytest.skip("the emulator's locks")
    with psycopg.connect(db.reader_url, autocommit=True) as reader:
        relation = sql.Identifier(*table.split("."))
        count = sql.SQL("SELECT count(*) FROM {}").format(relation)
        assert reader.execute(count).fetchone()[0] >= 1  # it may read them...
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # ...not lock them
            reader.execute(sql.SQL("SELECT 1 FROM {} {}").format(relation, sql.SQL(clause)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("UPDATE pgtrickle.emulator_scheduler SET pid = pg_backend_pid()")


def test_one_refresh_at_a_time_and_one_scheduler_with_row_locks(demo_db):
    db = demo_db("ecommerce")
    if db.engine != "emulator":
        pytest.skip("the emulator's locks")
    with psycopg.connect(db.owner_url) as holder, psycopg.connect(db.owner_url, autocommit=True) as other:
        pgt_id = _ids(other)["product_sales"]
        assert holder.execute("SELECT pgtrickle.emulator_try_refresh_lock(%s)", (pgt_id,)).fetchone()[0]
        # As pg_trickle's (src/api/refresh_ops.rs): a NOTICE and a normal return, nothing refreshed.
        notices: list[str] = []
        other.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        before = other.execute(
            "SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE pgt_id = %s", (pgt_id,)
        ).fetchone()[0]
        pgtrickle.refresh_stream_table(other, "product_sales")
        assert any("another refresh is already in progress" in n for n in notices), notices
        after = other.execute("SELECT count(*) FROM pgtrickle.pgt_refresh_history WHERE pgt_id = %s", (pgt_id,))
        assert after.fetchone()[0] == before
        pgtrickle.refresh_stream_table(other, "category_revenue")  # other tables are not held up
        holder.rollback()
        pgtrickle.refresh_stream_table(other, "product_sales")

    runner = psycopg.connect(db.owner_url, autocommit=True)
    thread = threading.Thread(target=lambda: pgtrickle.emulator_run(runner, 50, 80), daemon=True)
    thread.start()
    try:
        with psycopg.connect(db.reader_url, autocommit=True) as observer:
            deadline = time.monotonic() + 5
            while (
                time.monotonic() < deadline
                and not observer.execute("SELECT pgtrickle.emulator_scheduler_running()").fetchone()[0]
            ):
                time.sleep(0.05)
            assert {r.check_name: r.severity for r in pgtrickle.health_check(observer)}["scheduler_running"] == "OK"
        with psycopg.connect(db.owner_url, autocommit=True) as second:
            second.execute("SET pg_trickle.max_concurrent_refreshes = 1")  # one scheduler session per database
            with pytest.raises(psycopg.errors.LockNotAvailable, match="another emulator scheduler"):
                pgtrickle.emulator_run(second, 50, 1)
    finally:
        thread.join(15)
        runner.close()
    assert not thread.is_alive()
    with psycopg.connect(db.owner_url, autocommit=True) as owner:
        assert not owner.execute("SELECT pgtrickle.emulator_scheduler_running()").fetchone()[0]
        pgtrickle.emulator_run(owner, 10, 1)  # the lease of a finished scheduler is free again
