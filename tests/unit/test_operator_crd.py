"""The StreamTable CRD is a valid, structural apiextensions/v1 object, agrees with the operator's own
validation, and every example resource validates against its schema."""

from __future__ import annotations

import copy
import re
from typing import Any

import celpy
import jsonschema
import kubernetes_validate
import pytest
import yaml
from celpy import celtypes

from services.operator import spec as st_spec
from tests.support import ROOT

CRD_PATH = ROOT / "helm" / "pg-trickle-demo" / "files" / "crds" / "streamtables.pgtrickle.io.yaml"
EXAMPLES = sorted((ROOT / "examples" / "streamtables").glob("*.yaml"))
CRD = yaml.safe_load(CRD_PATH.read_text())
[VERSION] = CRD["spec"]["versions"]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def to_json_schema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes dialect) -> JSON Schema: `nullable` becomes a null type; x-kubernetes-*
    extensions (CEL rules, list types) are dropped, they are checked separately."""
    if isinstance(node, list):
        return [to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: to_json_schema(v) for k, v in node.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if node.get("nullable") and "type" in node:
        out["type"] = [node["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


VALIDATOR = jsonschema.Draft7Validator(to_json_schema(SCHEMA), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


def structural_problems(node: dict, path: str = "") -> list[str]:
    """Kubernetes' structural-schema rules that matter here: every node has a type (unless it preserves
    unknown fields), and metadata only as a plain object."""
    problems = []
    if (
        "type" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
        and not node.get("x-kubernetes-int-or-string")
    ):
        problems.append(f"{path or '<root>'}: no type")
    for forbidden in ("$ref", "additionalItems", "patternProperties", "dependencies", "definitions"):
        if forbidden in node:
            problems.append(f"{path}: {forbidden} is not allowed in a structural schema")
    if "properties" in node and "additionalProperties" in node:
        problems.append(f"{path}: properties and additionalProperties are mutually exclusive")
    for name, child in node.get("properties", {}).items():
        problems.extend(structural_problems(child, f"{path}.{name}"))
    if "items" in node:
        problems.extend(structural_problems(node["items"], f"{path}[]"))
    return problems


def resource(spec: dict | None = None, **top) -> dict:
    body = {"apiVersion": "pgtrickle.io/v1alpha1", "kind": "StreamTable", "metadata": {"name": "x"}}
    if spec is not None:
        body["spec"] = spec
    body.update(top)
    return body


def test_crd_is_a_valid_apiextensions_object():
    for version in ("1.30", "1.33"):
        kubernetes_validate.validate(copy.deepcopy(CRD), version, strict=True)
    assert CRD["metadata"]["name"] == f"{st_spec.PLURAL}.{st_spec.GROUP}"
    assert CRD["spec"]["group"] == st_spec.GROUP
    assert CRD["spec"]["names"]["kind"] == st_spec.KIND
    assert CRD["spec"]["names"]["shortNames"] == ["st"]
    assert VERSION["name"] == st_spec.VERSION and VERSION["served"] and VERSION["storage"]
    assert VERSION["subresources"] == {"status": {}}


def test_schema_is_structural():
    assert structural_problems(SCHEMA) == []
    assert SCHEMA["properties"]["metadata"] == {"type": "object"}


def test_printer_columns_point_at_fields_the_schema_has():
    columns = {c["name"]: c["jsonPath"] for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Mode", "Schedule", "Status", "Ready", "Staleness", "Age"]
    status_fields = SCHEMA["properties"]["status"]["properties"]
    for name, path in columns.items():
        if path.startswith(".status."):
            field = re.match(r"\.status\.(\w+)", path)[1]
            assert field in status_fields, f"column {name} reads .status.{field}, which the schema lacks"
    assert columns["Age"] == ".metadata.creationTimestamp"


def test_schema_patterns_are_the_operators_own():
    spec_props = SCHEMA["properties"]["spec"]["properties"]
    assert spec_props["name"]["pattern"] == st_spec.NAME_PATTERN
    assert spec_props["schedule"]["pattern"] == st_spec.SCHEDULE_PATTERN
    assert spec_props["refreshMode"]["enum"] == list(st_spec.REFRESH_MODES)
    assert spec_props["deletionPolicy"]["enum"] == list(st_spec.DELETION_POLICIES)


def test_cel_rules_cover_immutability():
    rules = [r["rule"] for r in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]]
    assert any("self.name == oldSelf.name" in rule for rule in rules)
    assert any("self.database == oldSelf.database" in rule for rule in rules)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents, f"{path} holds no resource"
    for document in documents:
        errors = sorted(VALIDATOR.iter_errors(document), key=str)
        assert errors == [], f"{path}: {document['metadata']['name']}: {errors[0].message}"
        assert (document["apiVersion"], document["kind"]) == ("pgtrickle.io/v1alpha1", "StreamTable")
        st_spec.parse_spec(document["spec"], document["metadata"]["name"])  # the operator accepts it too


def test_one_example_per_scenario():
    from services.common.scenarios import SCENARIO_NAMES

    assert sorted(p.stem for p in EXAMPLES) == sorted(SCENARIO_NAMES)


@pytest.mark.parametrize(
    "schedule", ["1s", "5m", "1h30m", "2d", "30", "calculated", "CALCULATED", "@hourly", "*/5 * * * *", "0 0 * * * *"]
)
def test_schedules_pg_trickle_accepts_are_accepted(schedule):
    assert list(VALIDATOR.iter_errors(resource({"query": "SELECT 1", "schedule": schedule}))) == []
    assert st_spec.parse_spec({"query": "SELECT 1", "schedule": schedule}, "x").schedule == schedule


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({}, "query"),
        ({"query": ""}, "query"),
        ({"query": "SELECT 1", "schedule": "soon"}, "schedule"),
        ({"query": "SELECT 1", "schedule": "1.5s"}, "schedule"),
        ({"query": "SELECT 1", "schedule": "* * *"}, "schedule"),
        ({"query": "SELECT 1", "refreshMode": "INCREMENTALLY"}, "refreshMode"),
        ({"query": "SELECT 1", "deletionPolicy": "Orphan"}, "deletionPolicy"),
        ({"query": "SELECT 1", "name": "Bad-Name"}, "name"),
        ({"query": "SELECT 1", "name": "a.b.c"}, "name"),
        ({"query": "SELECT 1", "suspend": "yes"}, "suspend"),
    ],
)
def test_invalid_specs_are_rejected_by_schema_and_operator(spec, field):
    errors = list(VALIDATOR.iter_errors(resource(spec)))
    assert errors, f"schema accepted {spec}"
    assert any(field in "/".join(map(str, e.absolute_path)) or field in e.message for e in errors)
    if field != "suspend":  # the operator takes any truthy value; the schema is stricter
        with pytest.raises(st_spec.SpecError):
            st_spec.parse_spec(spec, "x")


def test_a_resource_without_spec_is_rejected():
    assert list(VALIDATOR.iter_errors(resource()))


# -- CEL rules, evaluated with cel-python (Kubernetes' string extensions lowerAscii/trim supplied here) ------


def cel_rule(rule: str):
    functions = {
        "lowerAscii": lambda s: celtypes.StringType(str(s).lower()),
        "trim": lambda s: celtypes.StringType(str(s).strip()),
    }
    env = celpy.Environment()
    program = env.program(env.compile(rule), functions=functions)

    def evaluate(new: dict, old: dict | None = None) -> bool:
        activation = {"self": celpy.json_to_cel(new)}
        if old is not None:
            activation["oldSelf"] = celpy.json_to_cel(old)
        return bool(program.evaluate(activation))

    return evaluate


SPEC_RULES = {r["message"]: r["rule"] for r in SCHEMA["properties"]["spec"]["x-kubernetes-validations"]}


def spec_rule(start: str):
    [rule] = [rule for message, rule in SPEC_RULES.items() if message.startswith(start)]
    return cel_rule(rule)


def test_cel_name_and_database_are_immutable():
    name = spec_rule("spec.name is immutable")
    assert name({"query": "q", "name": "a"}, {"query": "q", "name": "a"})
    assert name({"query": "q"}, {"query": "q"})
    assert not name({"query": "q", "name": "b"}, {"query": "q", "name": "a"})
    assert not name({"query": "q", "name": "b"}, {"query": "q"})
    assert not name({"query": "q"}, {"query": "q", "name": "a"})
    database = spec_rule("spec.database is immutable")
    assert database({"query": "q", "database": "x"}, {"query": "q", "database": "x"})
    assert not database({"query": "q", "database": "y"}, {"query": "q", "database": "x"})


def test_cel_immediate_takes_no_schedule():
    immediate = spec_rule("IMMEDIATE")
    assert immediate({"query": "q", "refreshMode": "IMMEDIATE", "schedule": "Calculated"})
    assert immediate({"query": "q", "refreshMode": "IMMEDIATE"})
    assert immediate({"query": "q", "refreshMode": "FULL", "schedule": "5s"})
    assert not immediate({"query": "q", "refreshMode": "IMMEDIATE", "schedule": "5s"})


def test_cel_query_must_not_be_blank():
    [rule] = SCHEMA["properties"]["spec"]["properties"]["query"]["x-kubernetes-validations"]
    blank = cel_rule(rule["rule"])
    assert blank("SELECT 1")
    assert not blank("  \n ")
