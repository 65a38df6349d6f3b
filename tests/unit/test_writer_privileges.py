"""demo_writer's column privileges (scenario.toml [writer]) are exactly what each generator writes."""

from __future__ import annotations

import importlib

import pytest

from services.common.scenarios import SCENARIO_NAMES, get_scenario
from services.generator.scenarios import InsertTarget, UpdateTarget, load_scenario


def _targets(name: str) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(insert columns, update columns) per table, from the scenario module's target constants."""
    module = type(load_scenario(name, 1)).__module__
    inserts: dict[str, set[str]] = {}
    updates: dict[str, set[str]] = {}
    for value in vars(importlib.import_module(module)).values():
        if isinstance(value, InsertTarget):
            inserts.setdefault(value.table, set()).update(value.columns + (value.event_id_columns or ()))
        elif isinstance(value, UpdateTarget):
            updates.setdefault(value.table, set()).update(value.set_columns + value.touch_columns)
    return inserts, updates


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_writer_columns_match_the_generators_targets(name):
    scenario = get_scenario(name)
    inserts, updates = _targets(name)
    assert inserts and updates
    assert {t: set(c) for t, c in scenario.writer_inserts.items()} == inserts
    assert {t: set(c) for t, c in scenario.writer_updates.items()} == updates
    # The generator loads its lookups from the base tables, and writes nothing else.
    assert set(inserts) | set(updates) <= set(scenario.base_tables)
