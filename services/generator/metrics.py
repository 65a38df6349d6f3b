"""The generator's Prometheus metrics (served on /metrics). Counters move only after a known commit.

Every metric carries the label `scenario`.
  demo_generator_events_total{scenario,kind}            counter  events committed, by kind
  demo_generator_bursts_total{scenario}                 counter  bursts committed (automatic + requested)
  demo_generator_batches_total{scenario}                counter  batches (transactions) committed
  demo_generator_db_errors_total{scenario}              counter  failed database operations (any error)
  demo_generator_reconnects_total{scenario}             counter  connections re-established after a loss
  demo_generator_rate{scenario}                         gauge    target rate of regular events (events/s)
  demo_generator_paused{scenario}                       gauge    1 while paused, else 0
  demo_generator_last_commit_timestamp_seconds{scenario} gauge   Unix time of the last commit (0 = none)
  demo_generator_batch_duration_seconds{scenario}       histogram time to write and commit one batch
  demo_generator_info{scenario,run_id,seed}             gauge    always 1; identifies the run
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class GeneratorMetrics:
    def __init__(
        self, scenario: str, kinds: Iterable[str], run_id: str, seed: int, registry: CollectorRegistry | None = None
    ):
        self.registry = registry or CollectorRegistry()
        r, s = self.registry, ("scenario",)
        self.events = Counter("demo_generator_events", "Events committed, by kind.", ("scenario", "kind"), registry=r)
        self.bursts = Counter(
            "demo_generator_bursts", "Bursts committed (automatic and requested).", s, registry=r
        ).labels(scenario)
        self.batches = Counter(
            "demo_generator_batches", "Batches (one transaction each) committed.", s, registry=r
        ).labels(scenario)
        self.db_errors = Counter("demo_generator_db_errors", "Failed database operations.", s, registry=r).labels(
            scenario
        )
        self.reconnects = Counter(
            "demo_generator_reconnects", "Database connections re-established after a loss.", s, registry=r
        ).labels(scenario)
        self.rate = Gauge("demo_generator_rate", "Target rate of regular events (events/s).", s, registry=r).labels(
            scenario
        )
        self.paused = Gauge("demo_generator_paused", "1 while the generator is paused.", s, registry=r).labels(scenario)
        self.last_commit = Gauge(
            "demo_generator_last_commit_timestamp_seconds",
            "Unix time of the last committed batch (0 before the first).",
            s,
            registry=r,
        ).labels(scenario)
        self.batch_duration = Histogram(
            "demo_generator_batch_duration_seconds",
            "Time to write and commit one batch.",
            s,
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=r,
        ).labels(scenario)
        Gauge("demo_generator_info", "The generator run: always 1.", ("scenario", "run_id", "seed"), registry=r).labels(
            scenario, run_id, str(seed)
        ).set(1)
        self._scenario = scenario
        self._events = {kind: self.events.labels(scenario, kind) for kind in kinds}

    def count_events(self, kind: str, n: int) -> None:
        child = self._events.get(kind)
        if child is None:
            child = self._events[kind] = self.events.labels(self._scenario, kind)
        child.inc(n)
