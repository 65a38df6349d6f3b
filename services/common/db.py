"""Database connections: one psycopg_pool per service, with retry, backoff and per-service identity.

Every connection carries `application_name` (so pg_stat_activity shows who is who) and a
`statement_timeout` (so a slow query never wedges a request or a scrape).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from services.common.settings import describe_conninfo

log = logging.getLogger(__name__)


class Backoff:
    """Capped exponential backoff with full jitter: delays grow from `initial` to at most `maximum`."""

    def __init__(self, initial: float = 0.2, maximum: float = 5.0, factor: float = 2.0):
        self.initial, self.maximum, self.factor = initial, maximum, factor
        self._attempt = 0

    def next_delay(self) -> float:
        ceiling = min(self.maximum, self.initial * (self.factor**self._attempt))
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt


def with_identity(conninfo: str, application_name: str, statement_timeout_ms: int | None = None) -> str:
    """Adds application_name and statement_timeout (libpq `options`) to a connection string."""
    params = conninfo_to_dict(conninfo)
    params["application_name"] = application_name
    if statement_timeout_ms is not None:
        options = params.get("options", "")
        params["options"] = f"{options} -c statement_timeout={int(statement_timeout_ms)}".strip()
    params.setdefault("connect_timeout", "5")
    return make_conninfo("", **params)


def connect_with_retry(
    conninfo: str,
    *,
    application_name: str,
    statement_timeout_ms: int | None = None,
    autocommit: bool = False,
    give_up_after: float | None = 60.0,
    stop: threading.Event | None = None,
    backoff: Backoff | None = None,
) -> psycopg.Connection:
    """Connects, retrying with capped backoff until connected, `give_up_after` seconds pass, or `stop`.

    Raises psycopg.OperationalError from the last attempt when it gives up (or is stopped).
    """
    target = with_identity(conninfo, application_name, statement_timeout_ms)
    backoff = backoff or Backoff()
    deadline = None if give_up_after is None else time.monotonic() + give_up_after
    while True:
        try:
            return psycopg.connect(target, autocommit=autocommit)
        except psycopg.OperationalError as exc:
            delay = backoff.next_delay()
            out_of_time = deadline is not None and time.monotonic() + delay > deadline
            if out_of_time or (stop is not None and stop.is_set()):
                raise
            log.warning(
                "database not reachable, retrying",
                extra={
                    "fields": {
                        "target": describe_conninfo(conninfo),
                        "retry_in_s": round(delay, 2),
                        "attempt": backoff.attempts,
                        "error": first_line(exc),
                    }
                },
            )
            if stop is not None:
                if stop.wait(delay):
                    raise
            else:
                time.sleep(delay)


def make_pool(
    conninfo: str,
    *,
    application_name: str,
    statement_timeout_ms: int = 5000,
    min_size: int = 1,
    max_size: int = 4,
    read_only: bool = False,
    configure: Callable[[psycopg.Connection], None] | None = None,
) -> ConnectionPool:
    """A pool that opens lazily in the background and keeps retrying (psycopg_pool's own reconnect logic
    uses capped exponential backoff). Callers use `pool.connection(timeout=...)`; readiness probes should
    call `check_ready`.
    """

    def _configure(conn: psycopg.Connection) -> None:
        if read_only:
            conn.read_only = True
        if configure:
            configure(conn)

    return ConnectionPool(
        with_identity(conninfo, application_name, statement_timeout_ms),
        min_size=min_size,
        max_size=max_size,
        open=False,
        configure=_configure,
        check=ConnectionPool.check_connection,
        # After this many seconds of failed reconnects the pool gives the slot up; the next request grows
        # it again, so a database that comes back later is picked up without a restart.
        reconnect_timeout=30,
        max_idle=60,
        name=application_name,
    )


def first_line(exc: BaseException) -> str:
    """A database error's first line: safe to log, never a stack trace."""
    text = str(exc).strip() or exc.__class__.__name__
    return text.splitlines()[0]
