"""gunicorn settings from the dashboard's environment variables (see config.py and the README).

`python -m services.dashboard` applies them; `gunicorn -c python:services.dashboard.gunicorn_conf
'services.dashboard.app:create_app()'` reads the same module-level names.
"""

from __future__ import annotations

import os

from services.dashboard.config import DashboardConfig, load_config
from services.dashboard.worker import HardenedThreadWorker


def gunicorn_options(config: DashboardConfig) -> dict:
    # Set before gunicorn forks its workers, which inherit it (gunicorn has no setting of its own for this).
    HardenedThreadWorker.read_timeout = config.read_timeout
    return {
        "bind": [f"{config.host}:{config.port}"],
        "workers": config.workers,
        "threads": config.threads,
        # gthread, but a request is read in the event loop and only a complete one takes a thread: slow or
        # idle clients cannot occupy the threads (services/dashboard/worker.py, issue 14).
        "worker_class": "services.dashboard.worker.HardenedThreadWorker",
        "graceful_timeout": config.graceful_timeout,  # SIGTERM: finish requests in flight, then exit
        "timeout": 30,
        "keepalive": 5,
        # The heartbeat file lives in memory (a read-only root filesystem has no writable /tmp otherwise).
        "worker_tmp_dir": "/dev/shm" if os.path.isdir("/dev/shm") else "/tmp",  # noqa: S108
        "accesslog": "-" if config.access_log else None,
        "errorlog": "-",
        "loglevel": config.log_level.lower(),
        "logger_class": "services.dashboard.gunicorn_logging.JsonLogger",
        "proc_name": "pg-trickle-dashboard",
        "worker_exit": worker_exit,
    }


def worker_exit(server, worker) -> None:
    """Closes the worker's database pool on the way out."""
    from services.dashboard.app import close_app

    app = getattr(worker, "wsgi", None)
    if app is not None and hasattr(app, "extensions"):
        close_app(app)


# Module-level settings for `gunicorn -c python:services.dashboard.gunicorn_conf` (a bad variable raises
# ConfigError here; `python -m services.dashboard` reports it as one line and exit code 2).
globals().update(gunicorn_options(load_config()))
