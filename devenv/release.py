"""The project's one version, and its release notes (standard library only, so a bare CI runner can run it).

  python devenv/release.py check            every place that carries the version agrees (exit 1 if not)
  python devenv/release.py check-tag v0.1.0 the tag is v<version> and every place agrees; prints the version
  python devenv/release.py notes 0.1.0      the version's section of CHANGELOG.md (exit 1 when missing or empty)

The version lives in pyproject.toml ([project] version), helm/pg-trickle-demo/Chart.yaml (version and appVersion)
and compose.yaml (the tag of every pg-trickle-demo/<service> image); .github/workflows/release.yml runs this on
a version tag. tests/unit/test_release.py checks that they agree today.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHART_YAML = ROOT / "helm" / "pg-trickle-demo" / "Chart.yaml"
COMPOSE = ROOT / "compose.yaml"
CHANGELOG = ROOT / "CHANGELOG.md"
SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$")


def versions(root: Path = ROOT) -> dict[str, str]:
    """{where: version} for every place that carries the project's version."""
    found = {"pyproject.toml": tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"]}
    chart = (root / CHART_YAML.relative_to(ROOT)).read_text()
    for key in ("version", "appVersion"):
        match = re.search(rf"^{key}:\s*\"?([^\"\s]+)\"?\s*$", chart, re.MULTILINE)
        found[f"Chart.yaml {key}"] = match.group(1) if match else "<missing>"
    compose = (root / COMPOSE.relative_to(ROOT)).read_text()
    images = re.findall(r"^\s*image:\s*pg-trickle-demo/([a-z-]+):(\S+)\s*$", compose, re.MULTILINE)
    if not images:
        found["compose.yaml"] = "<no pg-trickle-demo image>"
    for service, tag in images:
        found[f"compose.yaml {service}"] = tag
    return found


def disagreements(found: dict[str, str]) -> list[str]:
    reference = found["pyproject.toml"]
    problems = [f"{where} has {version}, pyproject.toml has {reference}" for where, version in found.items()
                if version != reference]  # fmt: skip
    if not SEMVER.match(reference):
        problems.append(f"pyproject.toml version {reference!r} is not semantic versioning (X.Y.Z)")
    return problems


def notes(version: str, changelog: Path = CHANGELOG) -> str:
    """The body of `## [<version>]` in a Keep a Changelog file, up to the next `## ` heading."""
    text = changelog.read_text()
    heading = re.compile(rf"^## \[{re.escape(version)}\][^\n]*\n", re.MULTILINE)
    match = heading.search(text)
    if not match:
        raise LookupError(f"CHANGELOG.md has no section '## [{version}]'")
    rest = text[match.end() :]
    following = re.search(r"^## ", rest, re.MULTILINE)
    body = (rest[: following.start()] if following else rest).strip()
    body = re.sub(r"^\[[^\]]+\]:\s*\S+\s*$", "", body, flags=re.MULTILINE).strip()  # link references
    if not body:
        raise LookupError(f"CHANGELOG.md section '## [{version}]' is empty")
    return body + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in {"check", "check-tag", "notes"} or (args[0] != "check" and len(args) != 2):
        print("usage: python devenv/release.py check | check-tag vX.Y.Z | notes X.Y.Z", file=sys.stderr)
        return 2
    command = args[0]
    if command == "notes":
        try:
            sys.stdout.write(notes(args[1]))
        except LookupError as exc:
            print(f"release: {exc}", file=sys.stderr)
            return 1
        return 0
    found = versions()
    problems = disagreements(found)
    if command == "check-tag" and args[1] != f"v{found['pyproject.toml']}":
        problems.insert(0, f"tag {args[1]} is not v{found['pyproject.toml']} (the version in pyproject.toml)")
    for problem in problems:
        print(f"release: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(found["pyproject.toml"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
