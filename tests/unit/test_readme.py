"""The README is the front door and docs/ holds the reference: both must stay true to the code and to CI."""

from __future__ import annotations

import re

from tests.support import ROOT

README = (ROOT / "README.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()
# env_int("NAME", ...), env_str("NAME"), os.environ.get("NAME"), Option("NAME", "--flag", ...) ...
_READERS = re.compile(r"""(?:env_\w+|environ\.get|getenv|_var=|_password|Option)\(?\s*["']([A-Z][A-Z0-9_]+)["']""")
_NOT_CONFIGURATION = {"CI", "PATH", "HOME", "XDG_RUNTIME_DIR"}


def _variables_read_by_code() -> set[str]:
    names: set[str] = set()
    for folder in ("services", "devenv"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(_READERS.findall(path.read_text()))
    names.update(re.findall(r'"(DEMO_\w+_PASSWORD|DEMO_PASSWORD)"', (ROOT / "services/bootstrap/core.py").read_text()))
    return names - _NOT_CONFIGURATION


def test_every_environment_variable_is_documented():
    table = CONFIGURATION
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", table, flags=re.M))
    read = _variables_read_by_code()
    assert read, "the scan found no variables: the pattern is broken"
    libpq = {name for name in read if name.startswith("PG") and not name.startswith("PGTRICKLE")}
    for name in libpq:  # the libpq convention is documented once, in the prose above the table
        assert f"`{name}`" in CONFIGURATION, f"{name} is read but not mentioned"
    read -= libpq
    assert read - documented == set(), "read by the code but missing from the table in docs/configuration.md"


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in README
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert "export CI=true" in commands


def test_readme_links_to_existing_documents():
    """The front door links its reference documents; every relative link must resolve."""
    for document in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", document.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (document.parent / target).exists(), f"{document.relative_to(ROOT)} links to missing {target}"
