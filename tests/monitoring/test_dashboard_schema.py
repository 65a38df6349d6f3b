"""The dashboards as Grafana would load them: valid against the JSON schema of Grafana's dashboard model, derived
from the types Grafana publishes in npm @grafana/schema for the version compose and the chart run
(monitoring/grafana/schema/dashboard.schema.json; `make grafana-schema` regenerates it)."""

from __future__ import annotations

import copy
import json
import re

import jsonschema
import pytest
import yaml

from tests.monitoring.support import dashboards
from tests.support import ROOT

SCHEMA_FILE = ROOT / "monitoring/grafana/schema/dashboard.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors_of(validator, document) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_the_schema_is_grafanas_for_the_version_we_run():
    schema = json.loads(SCHEMA_FILE.read_text())
    version = re.search(r"@grafana/schema@(\d+\.\d+\.\d+)", schema["$comment"]).group(1)
    grafana_image = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]["grafana"]["image"]
    assert grafana_image.endswith(f":{version}"), (grafana_image, version)
    assert schema["$ref"] == "#/definitions/Dashboard"
    assert {"Panel", "RowPanel", "VariableModel", "DataSourceRef"} <= set(schema["definitions"])


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_dashboard_validates(validator, name):
    assert errors_of(validator, dashboards()[name]) == []


def test_the_schema_catches_what_grafana_would_not_load(validator):
    """So that the test above can fail: a misspelt panel field, a wrong type, a variable of an unknown kind."""
    board = next(iter(dashboards().values()))
    broken = copy.deepcopy(board)
    broken["panels"][0]["gridpos"] = broken["panels"][0].pop("gridPos")
    assert errors_of(validator, broken)
    broken = copy.deepcopy(board)
    broken["refresh"] = 5
    assert errors_of(validator, broken)
    broken = copy.deepcopy(board)
    broken["templating"]["list"][0]["type"] = "dropdown"
    assert errors_of(validator, broken)
