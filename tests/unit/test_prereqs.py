"""`make test` names its missing Debian prerequisites in one message and stops with exit code 2."""

from __future__ import annotations

import subprocess
import sys

from devenv import prereqs
from tests.support import ROOT


def test_missing_prerequisites_are_named_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setattr(prereqs, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no promtool, no prometheus
    assert [package for package, _ in prereqs.missing()] == ["chromium", "prometheus"]
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from devenv import prereqs; prereqs.CHROMIUM = sys.argv[1]; sys.exit(prereqs.main())",
            str(tmp_path / "no-chromium"),
        ],
        cwd=ROOT,
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "sudo apt-get install chromium prometheus" in lines[0], result.stderr
    assert "SKIP_PREREQS=1" in lines[0]


def test_the_makefile_checks_them_before_the_suite():
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.split("\ntest:", 1)[1].split("\n", 1)[0].split("##")[0].split() == ["test-suite", "test-images"]
    recipe = makefile.split("\ntest-suite:", 1)[1].split("\n\n", 1)[0]
    assert recipe.index("devenv.prereqs") < recipe.index("pytest")
