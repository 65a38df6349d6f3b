"""devenv.dotenv: `make up` writes random compose passwords once and keeps them."""

from __future__ import annotations

import stat

from devenv.dotenv import PASSWORD_KEYS, ensure_env_file, read_keys


def _values(path):
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line and not line.startswith("#"))


def test_writes_every_password_randomly_with_private_mode(tmp_path):
    first, second = tmp_path / "a.env", tmp_path / "b.env"
    assert ensure_env_file(first) == list(PASSWORD_KEYS)
    ensure_env_file(second)
    a, b = _values(first), _values(second)
    assert set(a) == set(PASSWORD_KEYS)
    assert all(len(v) >= 24 for v in a.values())
    assert len(set(a.values())) == len(PASSWORD_KEYS)
    assert not set(a.values()) & set(b.values())
    assert stat.S_IMODE(first.stat().st_mode) == 0o600


def test_keeps_existing_values_and_adds_only_missing_keys(tmp_path):
    path = tmp_path / ".env"
    path.write_text("# mine\nDEMO_SCENARIO=fraud\nPOSTGRES_PASSWORD=keep-me\n")
    added = ensure_env_file(path)
    assert "POSTGRES_PASSWORD" not in added and set(added) == set(PASSWORD_KEYS) - {"POSTGRES_PASSWORD"}
    values = _values(path)
    assert values["POSTGRES_PASSWORD"] == "keep-me" and values["DEMO_SCENARIO"] == "fraud"
    before = path.read_text()
    assert ensure_env_file(path) == []
    assert path.read_text() == before
    assert read_keys("export A=1\n# B=2\nC = 3\n") == {"A", "C"}
