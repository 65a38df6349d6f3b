"""Entry-point wrapper: clear one-line errors and exit codes instead of tracebacks."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

from services.common.settings import ConfigError

EXIT_CONFIG = 2  # bad input or configuration
EXIT_FAILURE = 1  # the work itself failed (e.g. database unreachable past the retry budget)


class FatalError(RuntimeError):
    """A failure already explained in its message; printed without a traceback, exit code 1."""


def run_main(main: Callable[[], int | None], program: str) -> None:
    try:
        code = main()
    except ConfigError as exc:
        print(f"{program}: configuration error: {exc}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except FatalError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_FAILURE)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code or 0)


def stop_on_signals(stop: threading.Event, log: logging.Logger | None = None) -> None:
    """SIGTERM and SIGINT set `stop`; the service's loop checks it and shuts down cleanly."""

    def handler(signum, _frame):
        if log:
            log.info("stop requested", extra={"fields": {"signal": signal.Signals(signum).name}})
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
