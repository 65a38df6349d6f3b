"""Background sampling: each worker computes a snapshot every `interval` seconds whether or not anyone
polls, so the five-minute history (services.dashboard.snapshot.History, a bounded deque) is recorded from
the worker's start: a page opened late shows the last five minutes at once, and a closed tab leaves no hole.

A sample is `SnapshotService.get()`, which computes at most once per `max_age` however many callers there
are; the sampler only makes sure somebody calls it. Failures are the snapshot's business (it caches them and
logs the outage once); the sampler never dies of one.
"""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Sampler:
    def __init__(self, service, interval: float):
        self.service, self.interval = service, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-sampler", daemon=True)

    def start(self) -> Sampler:
        if self.interval > 0:
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.service.get()
            except Exception:  # the next sample is another try
                log.exception("background sample failed")
            self._stop.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()
