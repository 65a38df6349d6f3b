"""make test-images builds its Debian base from the mirror this machine's apt uses, read at run time
(tests/images/docker_support.py, apt_mirror): deb822 .sources and one-line .list files."""

from __future__ import annotations

import pytest

from tests.images.docker_support import apt_mirror, os_codename


def test_deb822_sources(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "other.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/other\nSuites: nodistro\nComponents: main\n"
    )
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\n# a comment\nURIs: http://mirror.invalid/debian/\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://mirror.invalid/debian"
    assert apt_mirror("bookworm-security", tmp_path) == "http://mirror.invalid/debian-security"


def test_one_line_lists_and_disabled_stanzas(tmp_path):
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(
        "# deb http://commented.invalid/debian bookworm main\n"
        "deb-src http://src.invalid/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://list.invalid/debian bookworm main\n"
    )
    (tmp_path / "sources.list.d" / "off.sources").write_text(
        "Enabled: no\nTypes: deb\nURIs: http://off.invalid/debian\nSuites: trixie\n"
    )
    assert apt_mirror("bookworm", tmp_path) == "http://list.invalid/debian"
    with pytest.raises(LookupError, match="trixie"):
        apt_mirror("trixie", tmp_path)


def test_codename_from_os_release(tmp_path):
    (tmp_path / "os-release").write_text('NAME="Debian GNU/Linux"\nVERSION_CODENAME=bookworm\n')
    assert os_codename(tmp_path / "os-release") == "bookworm"
