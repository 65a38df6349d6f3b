"""requirements/*.lock (make lock, devenv/lock.py) still match pyproject.toml, without the network: the same
top-level requirements, each pinned at a version its specifier allows, every entry with hashes, the operator's
additions disjoint from (and resolved together with) the shared lock, and the images install exactly them."""

from __future__ import annotations

import re
import tomllib

import pytest
from packaging.requirements import Requirement

from devenv.lock import OPERATOR_LOCK, SERVICES_LOCK, entries, normalise
from tests.support import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
VIA_PYPROJECT = "pg-trickle-demo (pyproject.toml)"


def pins(text: str) -> dict[str, tuple[str, list[str], str]]:
    """{name: (version, hashes, the entry's text)}."""
    out = {}
    for name, block in entries(text).items():
        version = re.match(r"^[^=]+==([^ ;\\]+)", block)[1]
        out[name] = (version, re.findall(r"--hash=sha256:([0-9a-f]{64})", block), block)
    return out


def top_level(block_pins: dict) -> set[str]:
    """The entries uv marks as required by pyproject.toml itself (`# via pg-trickle-demo (pyproject.toml)`)."""
    return {name for name, (_, _, block) in block_pins.items() if VIA_PYPROJECT in block}


SERVICES = pins(SERVICES_LOCK.read_text())
OPERATOR = pins(OPERATOR_LOCK.read_text())


def test_the_shared_lock_pins_exactly_the_declared_runtime_dependencies():
    declared = {normalise(Requirement(d).name): Requirement(d) for d in PYPROJECT["dependencies"]}
    assert top_level(SERVICES) == set(declared), "run make lock: pyproject.toml's dependencies changed"
    for name, requirement in declared.items():
        assert requirement.specifier.contains(SERVICES[name][0], prereleases=True), (name, SERVICES[name][0])
        for extra in requirement.extras:  # psycopg[binary] -> psycopg-binary is pinned too
            assert normalise(f"{name}-{extra}") in SERVICES, (name, extra)


def test_the_operator_lock_adds_the_operator_extra_only():
    declared = {normalise(Requirement(d).name): Requirement(d) for d in PYPROJECT["optional-dependencies"]["operator"]}
    assert top_level(OPERATOR) == set(declared), "run make lock: the operator extra changed"
    for name, requirement in declared.items():
        assert requirement.specifier.contains(OPERATOR[name][0], prereleases=True), (name, OPERATOR[name][0])
    assert not set(OPERATOR) & set(SERVICES), "the operator's lock repeats packages the shared venv already has"
    assert "kubernetes" not in OPERATOR and "kubernetes" not in SERVICES, "kopf logs in without the client"


@pytest.mark.parametrize("lock", [SERVICES, OPERATOR], ids=["services", "operator"])
def test_every_entry_is_pinned_with_hashes(lock):
    assert lock
    for name, (version, hashes, _) in lock.items():
        assert re.fullmatch(r"[0-9][0-9A-Za-z.+!-]*", version), (name, version)
        assert hashes, f"{name} has no --hash"


def test_the_images_install_the_locks_with_hashes_checked():
    dockerfile = (ROOT / "services" / "Dockerfile").read_text()
    assert "pip install --no-deps --require-hashes" in dockerfile
    assert "-r requirements/services.lock" in dockerfile and "-r requirements/operator.lock" in dockerfile
    assert "pyproject.toml" not in dockerfile.split("ARG BASE_IMAGE", 1)[1], "the images never resolve pyproject.toml"
