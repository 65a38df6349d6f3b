"""Refresh counters and the duration histogram, derived from pgtrickle.pgt_refresh_history.

The database holds the truth: at start-up one grouped pass over the history gives every total up to a
watermark (the highest refresh_id); from then on each scrape reads only rows above it (a primary-key range
scan), plus the few refreshes that were still RUNNING when last seen (primary-key lookups). So the counters
carry on where the previous exporter process left off, and a scrape costs what is new, not what is old.

Rows the engine prunes (pg_trickle keeps 90 days) leave the totals of a running exporter untouched; an
exporter started after pruning counts from the rows that remain, which Prometheus sees as a counter reset
(rate() and increase() handle it).
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import psycopg

from services.common import pgtrickle

log = logging.getLogger(__name__)

# Refresh durations in seconds: from a few milliseconds (a small differential refresh) to a minute.
DURATION_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
FINISHED = ("COMPLETED", "FAILED", "SKIPPED")
PAGE = 5000  # rows per incremental read; a scrape reads pages until it has caught up (at most MAX_PAGES)
MAX_PAGES = 20
# A refresh seen RUNNING for longer than this is given up on (a crashed worker never finishes its row).
ABANDON_RUNNING_AFTER = timedelta(hours=1)
# An id skipped by the sequence may belong to a transaction that commits later (parallel refresh workers):
# skipped ids are looked up again for this long (a rolled-back insert leaves a gap for ever), at most
# MAX_GAPS of them.
GAP_PATIENCE = timedelta(minutes=5)
MAX_GAPS = 10000
# The start-up baseline looks for such ids among the newest ones below its watermark too: a refresh whose
# id is below the highest one but whose row is not committed yet would otherwise never be counted.
BASELINE_GAP_WINDOW = 1000


@dataclass
class TableTotals:
    refreshes: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (action, status)
    rows_inserted: int = 0
    rows_deleted: int = 0
    buckets: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))  # non-cumulative
    duration_count: int = 0
    duration_sum: float = 0.0

    def cumulative_buckets(self) -> list[int]:
        total, out = 0, []
        for count in self.buckets:
            total += count
            out.append(total)
        return out


class HistoryTracker:
    """Per-stream-table totals (keyed by pgt_id). Not thread-safe: the collector serialises scrapes."""

    def __init__(self) -> None:
        self.totals: dict[int, TableTotals] = defaultdict(TableTotals)
        self.watermark: int | None = None  # None until the start-up baseline has been read
        self.running: dict[int, datetime | None] = {}  # refresh_id -> start_time (None: from the baseline)
        self.gaps: dict[int, datetime] = {}  # refresh_id not seen yet -> when it was first missed

    @property
    def initialised(self) -> bool:
        return self.watermark is not None

    def baseline(self, conn: psycopg.Connection, now: datetime | None = None) -> None:
        """Totals of everything finished up to the current highest refresh_id (one pass, start-up only).
        Runs in one REPEATABLE READ snapshot so the reads agree. Ids below the watermark that this snapshot
        cannot see (a transaction still in flight, or rolled back) are looked up again for GAP_PATIENCE."""
        top, running = pgtrickle.history_watermark(conn)
        if now is None:
            now = pgtrickle.database_now(conn)
        low = max(0, top - BASELINE_GAP_WINDOW)
        visible = set(pgtrickle.refresh_ids_between(conn, low, top))
        gaps = {refresh_id: now for refresh_id in range(low + 1, top + 1) if refresh_id not in visible}
        totals: dict[int, TableTotals] = defaultdict(TableTotals)
        for row in pgtrickle.refresh_totals(conn, top):
            table = totals[row.pgt_id]
            table.refreshes[(row.action, row.status)] += row.refreshes
            if row.status == "COMPLETED":
                table.rows_inserted += row.rows_inserted
                table.rows_deleted += row.rows_deleted
        for row in pgtrickle.refresh_duration_buckets(conn, top, DURATION_BUCKETS):
            table = totals[row.pgt_id]
            previous = 0
            for index, cumulative in enumerate(row.cumulative):
                table.buckets[index] = cumulative - previous
                previous = cumulative
            # refreshes longer than the last bound only count in +Inf (count minus the last cumulative)
            table.duration_count = row.count
            table.duration_sum = row.sum_seconds
        self.totals, self.watermark = totals, top
        self.running = dict.fromkeys(running)
        self.gaps = gaps
        log.info(
            "refresh history baseline read",
            extra={
                "fields": {"watermark": top, "stream_tables": len(totals), "running": len(running), "gaps": len(gaps)}
            },
        )

    def advance(self, conn: psycopg.Connection, now: datetime) -> int:
        """Reads what finished since the last call; returns the number of rows read."""
        assert self.watermark is not None
        read = 0
        if self.running or self.gaps:
            rows = pgtrickle.refreshes_by_id(conn, sorted({*self.running, *self.gaps}))
            present = {row.refresh_id for row in rows}
            for gone in set(self.running) - present:  # deleted (stream table dropped, or pruned)
                del self.running[gone]
            for missing in set(self.gaps) - present:
                if now - self.gaps[missing] > GAP_PATIENCE:
                    del self.gaps[missing]
            for row in rows:
                read += 1
                self.gaps.pop(row.refresh_id, None)
                if row.status in FINISHED:
                    self.running.pop(row.refresh_id, None)
                    self._count(row)
                elif now - row.start_time > ABANDON_RUNNING_AFTER:
                    log.warning(
                        "refresh RUNNING for over an hour; no longer tracked",
                        extra={"fields": {"refresh_id": row.refresh_id, "pgt_id": row.pgt_id}},
                    )
                    self.running.pop(row.refresh_id, None)
                else:
                    self.running[row.refresh_id] = row.start_time
        for _ in range(MAX_PAGES):
            rows = pgtrickle.refreshes_after(conn, self.watermark, PAGE, finished_only=False)
            for row in rows:
                read += 1
                for skipped in range(self.watermark + 1, min(row.refresh_id, self.watermark + 1 + MAX_GAPS)):
                    if len(self.gaps) < MAX_GAPS:
                        self.gaps[skipped] = now
                if row.status in FINISHED:
                    self._count(row)
                else:
                    self.running[row.refresh_id] = row.start_time
                self.watermark = row.refresh_id
            if len(rows) < PAGE:
                break
        return read

    def _count(self, row: pgtrickle.RefreshEvent) -> None:
        table = self.totals[row.pgt_id]
        table.refreshes[(row.action, row.status)] += 1
        if row.status != "COMPLETED":
            return
        table.rows_inserted += row.rows_inserted
        table.rows_deleted += row.rows_deleted
        duration = row.duration_seconds
        if row.action in pgtrickle.WORK_ACTIONS and duration is not None:
            index = bisect.bisect_left(DURATION_BUCKETS, duration)  # first bound >= duration ("le")
            if index < len(DURATION_BUCKETS):
                table.buckets[index] += 1
            table.duration_count += 1
            table.duration_sum += duration
