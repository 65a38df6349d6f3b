"""`make test` checks its prerequisites first: the Debian packages the default suite needs beside the
Python ones (.ci/apt-packages). Missing ones are named in one message, with the command that installs them,
and `make test` stops (exit 2) instead of skipping a part of the suite you would not notice.

`make test SKIP_PREREQS=1` runs anyway: the tests that need a missing tool then skip, naming it (under
CI=true they fail instead).
"""

from __future__ import annotations

import os
import shutil
import sys

CHROMIUM = "/usr/bin/chromium"  # the browser the dashboard tests drive (tests/dashboard_support.py)
# (package, what needs it, how to tell it is there)
PREREQUISITES = (
    ("chromium", "the dashboard's browser tests", lambda: os.path.exists(CHROMIUM)),
    (
        "prometheus",
        "promtool and the Prometheus server of the monitoring tests",
        lambda: shutil.which("promtool") is not None and shutil.which("prometheus") is not None,
    ),
)


def missing() -> list[tuple[str, str]]:
    return [(package, purpose) for package, purpose, present in PREREQUISITES if not present()]


def message(absent: list[tuple[str, str]]) -> str:
    names = " ".join(package for package, _ in absent)
    what = "; ".join(f"{package} ({purpose})" for package, purpose in absent)
    return (
        f"make test: missing Debian packages: {what}. Install them with `sudo apt-get install {names}` "
        "(the full list is .ci/apt-packages), or run `make test SKIP_PREREQS=1` to let those tests skip."
    )


def main() -> int:
    absent = missing()
    if absent:
        print(message(absent), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
