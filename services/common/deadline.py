"""Client-side deadlines for database work.

`statement_timeout` is enforced by the server: a frozen server (SIGSTOP, a hung storage, a network path that
drops packets without a reset) enforces nothing, and a psycopg call waits for it indefinitely. `run_within`
runs the work in a daemon thread and stops waiting when the deadline passes, so a scrape, a readiness probe or
a snapshot answers on time ("database unreachable") while the abandoned call finishes (or fails) on its own
when the server comes back. The thread is a daemon: it never delays the process's exit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """The work did not finish within its deadline (it may still be running in the background)."""


def run_within(seconds: float, work: Callable[[], T], *, name: str = "db-deadline") -> T:
    """work()'s result or exception, or DeadlineExceeded after `seconds`."""
    outcome: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["value"] = work()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    if not done.wait(max(0.0, seconds)):
        raise DeadlineExceeded(f"no answer from the database within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]  # type: ignore[return-value]
