"""What a generator scenario is, and how the engine finds one.

A scenario module `services/generator/scenarios/<name>.py` (name as registered in
services.common.scenarios.SCENARIO_NAMES) defines `Generator`, a subclass of `ScenarioGenerator`. It loads
its lookups from the database at start and then produces events as data, never touching the database
itself: the engine batches them, writes them in one transaction per batch (COPY for inserts, pipelined
UPDATEs), and tells the scenario what was committed.

Three streams of events, each from its own random generator seeded from GENERATOR_SEED:
  - regular(n):    the continuous stream, n events (GENERATOR_RATE per second)
  - burst():       one burst (about every GENERATOR_BURST_INTERVAL seconds, or on POST /control/burst)
  - slow_change(): one slowly-changing-lookup update (about every GENERATOR_SLOW_CHANGE_EVERY cycles)

A value in a row is an int, a str, a Decimal or None (written as SQL NULL).
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg

from services.common.scenarios import scenario_class


@dataclass(frozen=True)
class InsertTarget:
    """Rows appended to `table` with COPY. When `event_id_columns` is set, the engine appends two values
    to every row: the run id (uuid) and the row's sequence number within the run (1, 2, 3 ... per target),
    which makes every committed event identifiable (no loss, no duplicates)."""

    table: str
    columns: tuple[str, ...]
    event_id_columns: tuple[str, str] | None = None


@dataclass(frozen=True)
class UpdateTarget:
    """`UPDATE table SET <set_columns> = ..., <touch_columns> = now() WHERE <key_columns> = ...`.
    A row holds the set values followed by the key values."""

    table: str
    set_columns: tuple[str, ...]
    key_columns: tuple[str, ...]
    touch_columns: tuple[str, ...] = ()


@dataclass
class Rows:
    """Events of one kind for one target: one row = one event."""

    kind: str
    target: InsertTarget | UpdateTarget
    rows: list[tuple] = field(default_factory=list)
    # What a log line should say about these events (e.g. the flash sale's category), if anything.
    note: dict | None = None

    def __len__(self) -> int:
        return len(self.rows)


class ScenarioGenerator(ABC):
    """Base class of a scenario's event source. Subclasses set the class attributes and implement the
    abstract methods. `seed` makes every stream reproducible: with the same seed and the same lookups,
    the k-th regular event, the k-th burst and the k-th slow change are the same in every run, however
    the events are split into batches."""

    name: str
    regular_kind: str  # metric label of regular events
    burst_kind: str  # metric label of the events a burst produces
    slow_change_kind: str  # metric label of slow-change events
    burst_label: str = "burst"  # what this scenario calls a burst, for logs ("flash sale")
    slow_change_label: str = "slow change"

    def __init__(self, seed: int):
        self.seed = seed

    @property
    def event_kinds(self) -> tuple[str, ...]:
        return (self.regular_kind, self.burst_kind, self.slow_change_kind)

    def stream(self, purpose: str) -> random.Random:
        """An independent random generator for one purpose, derived from the seed."""
        return random.Random(f"{self.name}:{purpose}:{self.seed}")

    @abstractmethod
    def load(self, conn: psycopg.Connection) -> None:
        """Reads the lookups (ids, prices...) the events need. Raises LookupsNotReady when the scenario's
        tables are missing or empty (the bootstrap has not run yet)."""

    @abstractmethod
    def regular(self, n: int) -> list[Rows]:
        """The next n events of the continuous stream."""

    @abstractmethod
    def burst(self) -> list[Rows]:
        """One burst."""

    @abstractmethod
    def slow_change(self) -> list[Rows]:
        """One slowly-changing-lookup update."""

    def committed(self, parts: Sequence[Rows]) -> None:  # noqa: B027 - optional hook
        """Called after `parts` are known to be committed (e.g. to remember a new price)."""


class LookupsNotReady(RuntimeError):
    """The scenario's tables are missing or empty: the database is not bootstrapped (yet)."""


def load_scenario(name: str, seed: int) -> ScenarioGenerator:
    """The generator of scenario `name`, found by module name."""
    return scenario_class(__name__, name, "Generator", ScenarioGenerator)(seed)
