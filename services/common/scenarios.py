"""The scenario registry.

A scenario is a folder `sql/<name>/` (scenario.toml, schema.sql, seed.sql, stream_tables.sql) plus, in the
services that need scenario knowledge, a module named after it (e.g. services/generator/scenarios/<name>.py),
found by name. Registering a new scenario is one line: its name in SCENARIO_NAMES.
"""

from __future__ import annotations

import importlib
import os
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from services.common.settings import ConfigError, env_choice

# Registration: one name per scenario. The first one is the default.
SCENARIO_NAMES: tuple[str, ...] = ("ecommerce", "fraud", "finance")
DEFAULT_SCENARIO = "ecommerce"

_REPO_SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
SQL_FILES = ("schema.sql", "seed.sql", "stream_tables.sql")


def sql_root() -> Path:
    """Where the scenario folders live: DEMO_SQL_DIR, or sql/ of this checkout (or image)."""
    return Path(os.environ.get("DEMO_SQL_DIR") or _REPO_SQL_DIR)


@dataclass(frozen=True)
class StreamTableSpec:
    name: str
    layer: str
    refresh_mode: str
    schedule: str  # '1s', '5s' ... or 'calculated'


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    description: str
    base_tables: tuple[str, ...]
    stream_tables: tuple[StreamTableSpec, ...]  # in creation (topological) order
    folder: Path
    # Optional [generator] table: defaults for generator variables (e.g. GENERATOR_BURST_INTERVAL) that
    # apply when neither the flag nor the variable is set.
    generator_defaults: dict[str, str] = field(default_factory=dict)
    # [writer] table: the columns the generator writes, table -> columns; demo_writer gets exactly these
    # column privileges (INSERT on `inserts`, UPDATE on `updates`) and nothing else that changes data.
    writer_inserts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    writer_updates: dict[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return f"{self.name}_demo"

    @property
    def stream_table_names(self) -> tuple[str, ...]:
        return tuple(st.name for st in self.stream_tables)

    def sql_file(self, filename: str) -> Path:
        return self.folder / filename


def _load(name: str) -> Scenario:
    folder = sql_root() / name
    manifest = folder / "scenario.toml"
    try:
        data = tomllib.loads(manifest.read_text())
    except FileNotFoundError:
        raise ConfigError(f"scenario {name!r} has no manifest at {manifest}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{manifest} is not valid TOML: {exc}") from None
    try:
        return Scenario(
            name=name,
            title=data["title"],
            description=data["description"].strip(),
            base_tables=tuple(data["base_tables"]),
            stream_tables=tuple(
                StreamTableSpec(st["name"], st["layer"], st["refresh_mode"], st["schedule"])
                for st in data["stream_tables"]
            ),
            folder=folder,
            generator_defaults={str(k): str(v) for k, v in data.get("generator", {}).items()},
            writer_inserts={str(t): tuple(map(str, cols)) for t, cols in data["writer"]["insert"].items()},
            writer_updates={str(t): tuple(map(str, cols)) for t, cols in data["writer"]["update"].items()},
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{manifest} is missing or mistypes the key {exc}") from None


@cache
def get_scenario(name: str) -> Scenario:
    if name not in SCENARIO_NAMES:
        raise ConfigError(f"unknown scenario {name!r}; available scenarios: {', '.join(SCENARIO_NAMES)}")
    return _load(name)


def scenario_from_env(variable: str = "DEMO_SCENARIO") -> Scenario:
    return get_scenario(env_choice(variable, DEFAULT_SCENARIO, SCENARIO_NAMES))


def scenario_class(package: str, name: str, class_name: str, base: type) -> type:
    """The class `class_name` (a subclass of `base`) of scenario `name`'s module in `package` (e.g.
    services.generator.scenarios.fraud.Generator): how a service finds its per-scenario code by name."""
    if name not in SCENARIO_NAMES:
        raise ConfigError(f"unknown scenario {name!r}; available scenarios: {', '.join(SCENARIO_NAMES)}")
    module_name = f"{package}.{name}"
    path = module_name.replace(".", "/") + ".py"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name != module_name:
            raise
        raise ConfigError(f"scenario {name!r} has no module {path}") from None
    found = getattr(module, class_name, None)
    if not (isinstance(found, type) and issubclass(found, base)):
        raise ConfigError(f"{path} defines no {class_name}({base.__name__})")
    return found
