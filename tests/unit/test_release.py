"""One version (pyproject.toml, Chart.yaml version and appVersion, compose.yaml's images), CHANGELOG.md in the
Keep a Changelog format with a section for that version, and devenv/release.py, which the release workflow runs
on a tag (check-tag, notes)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from devenv import release
from tests.support import ROOT


def test_every_place_carries_the_same_version():
    found = release.versions()
    assert len(found) >= 7, found  # pyproject, Chart version + appVersion, the four service images in compose
    assert release.disagreements(found) == [], found
    assert {k for k in found if k.startswith("compose.yaml ")} >= {
        f"compose.yaml {s}" for s in ("bootstrap", "generator", "dashboard", "exporter")
    }


def test_a_disagreement_is_reported(tmp_path):
    for name in ("pyproject.toml", "compose.yaml"):
        shutil.copy(ROOT / name, tmp_path / name)
    chart = tmp_path / "helm" / "pg-trickle-demo"
    chart.mkdir(parents=True)
    version = release.versions()["pyproject.toml"]
    text = (ROOT / "helm" / "pg-trickle-demo" / "Chart.yaml").read_text()
    (chart / "Chart.yaml").write_text(text.replace(f'appVersion: "{version}"', 'appVersion: "9.9.9"'))
    problems = release.disagreements(release.versions(tmp_path))
    assert problems == [f"Chart.yaml appVersion has 9.9.9, pyproject.toml has {version}"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "devenv/release.py", *args], capture_output=True, text=True, cwd=ROOT, timeout=60
    )


def test_check_tag_accepts_only_v_version():
    version = release.versions()["pyproject.toml"]
    ok = _run("check-tag", f"v{version}")
    assert ok.returncode == 0 and ok.stdout.strip() == version, ok.stderr
    bad = _run("check-tag", "v99.0.0")
    assert bad.returncode == 1 and "tag v99.0.0 is not" in bad.stderr
    assert _run("check-tag").returncode == 2


def test_changelog_follows_keep_a_changelog_and_has_notes_for_the_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert text.startswith("# Changelog\n") and "keepachangelog.com" in text
    headings = re.findall(r"^## \[([^\]]+)\]", text, re.MULTILINE)
    assert headings[0] == "Unreleased"
    version = release.versions()["pyproject.toml"]
    assert version in headings
    notes = _run("notes", version)
    assert notes.returncode == 0, notes.stderr
    assert "### Added" in notes.stdout and "## [" not in notes.stdout
    assert not re.search(r"^\[[^\]]+\]: http", notes.stdout, re.MULTILINE), "link references are left out"
    for section in re.findall(r"^### (.+)$", text, re.MULTILINE):
        assert section in {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}, section


def test_notes_for_a_missing_or_empty_version_fail(tmp_path):
    changelog = tmp_path / "CHANGELOG.md"
    changelog.write_text("# Changelog\n\n## [Unreleased]\n\n## [1.0.0] - 2026-01-01\n\n[1.0.0]: https://x/1\n")
    with pytest.raises(LookupError, match="is empty"):
        release.notes("1.0.0", changelog)
    with pytest.raises(LookupError, match="no section"):
        release.notes("2.0.0", changelog)
    changelog.write_text("# Changelog\n\n## [1.0.0] - 2026-01-01\n\n### Fixed\n\n- a bug\n\n## [0.9.0]\n\n- old\n")
    assert release.notes("1.0.0", changelog) == "### Fixed\n\n- a bug\n"


def test_make_help_lists_every_target():
    result = subprocess.run(["make", "-s", "help"], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    makefile = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE).group(1).split())
    assert phony <= listed, f"targets without a ## description: {sorted(phony - listed)}"
