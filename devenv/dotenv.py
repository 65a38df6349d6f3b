"""Writes the compose .env with random passwords: `make up` runs `python -m devenv.dotenv .env` first.

Keys already in the file keep their values (the database volume was initialised with them); missing password
keys get a fresh random value. compose.yaml has no default for any password, so compose refuses to start
without this file (or the variables in the environment).
"""

from __future__ import annotations

import os
import secrets
import sys
from pathlib import Path

PASSWORD_KEYS = (
    "POSTGRES_PASSWORD",
    "DEMO_PASSWORD",
    "DEMO_WRITER_PASSWORD",
    "DEMO_READER_PASSWORD",
    "GRAFANA_ADMIN_PASSWORD",
)


def read_keys(text: str) -> set[str]:
    keys = set()
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            keys.add(line.split("=", 1)[0].strip().removeprefix("export ").strip())
    return keys


def ensure_env_file(path: Path) -> list[str]:
    """Adds a random password for every missing key; returns the keys it added. The file is 0600."""
    header = "# Written by `make up` (devenv/dotenv.py): random passwords for compose.yaml.\n"
    text = path.read_text() if path.exists() else header
    missing = [key for key in PASSWORD_KEYS if key not in read_keys(text)]
    if missing or not path.exists():
        if text and not text.endswith("\n"):
            text += "\n"
        text += "".join(f"{key}={secrets.token_urlsafe(24)}\n" for key in missing)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
    os.chmod(path, 0o600)
    return missing


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0] if args else ".env")
    added = ensure_env_file(path)
    print(f"{path}: {'added ' + ', '.join(added) if added else 'all passwords present'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
