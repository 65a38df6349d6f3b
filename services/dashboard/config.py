"""The dashboard's settings, from environment variables (documented in docs/configuration.md).

A bad value raises ConfigError naming the variable (cli.run_main turns it into one line and exit code 2).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.common.logs import LEVELS
from services.common.scenarios import DEFAULT_SCENARIO, SCENARIO_NAMES, get_scenario
from services.common.settings import (
    ConfigError,
    env_bool,
    env_choice,
    env_float,
    env_host,
    env_int,
    env_str,
    service_conninfo,
)

APPLICATION_NAME = "demo-dashboard"
DEFAULT_USER = "demo_reader"  # read-only: stream tables and the pgtrickle catalog
PASSWORD_VAR = "DEMO_READER_PASSWORD"  # noqa: S105 - the name of a variable, not a password


@dataclass(frozen=True)
class DashboardConfig:
    scenario: str
    conninfo: str
    host: str
    port: int
    workers: int
    threads: int
    graceful_timeout: int
    read_timeout: float  # seconds a client has to send a request (head and small body); then 408
    generator_url: str | None  # None: the page hides its generator controls
    statement_timeout_ms: int
    log_level: str
    # Seconds between history samples taken by each worker in the background, whether or not anyone
    # watches (0: only when polled).
    sample_interval: float = 2.0
    access_log: bool = True  # gunicorn's access log on stderr (make preview turns it off unless asked)


def _generator_url(env: Mapping[str, str]) -> str | None:
    value = env_str("GENERATOR_URL", env=env)
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"GENERATOR_URL={value!r} is not valid; expected http(s)://host:port (no query)")
    return value.rstrip("/")


def load_config(env: Mapping[str, str] | None = None) -> DashboardConfig:
    env = os.environ if env is None else env
    scenario = env_choice("DEMO_SCENARIO", DEFAULT_SCENARIO, SCENARIO_NAMES, env=env)
    log_level = env_choice("LOG_LEVEL", "INFO", LEVELS + tuple(lv.lower() for lv in LEVELS), env=env).upper()
    conninfo = service_conninfo(
        default_user=DEFAULT_USER,
        default_dbname=get_scenario(scenario).database,
        password_var=PASSWORD_VAR,
        env=env,
        connect_timeout="3",
    )
    return DashboardConfig(
        scenario=scenario,
        conninfo=conninfo,
        host=env_host("DASHBOARD_HOST", "0.0.0.0", env=env),  # noqa: S104 - a container listens on all interfaces
        port=env_int("DASHBOARD_PORT", 8080, minimum=0, maximum=65535, env=env),
        workers=env_int("DASHBOARD_WORKERS", 2, minimum=1, maximum=64, env=env),
        threads=env_int("DASHBOARD_THREADS", 4, minimum=1, maximum=256, env=env),
        graceful_timeout=env_int("DASHBOARD_GRACEFUL_TIMEOUT", 10, minimum=1, maximum=600, env=env),
        read_timeout=env_float("DASHBOARD_READ_TIMEOUT", 10.0, minimum=0.5, maximum=300, env=env),
        generator_url=_generator_url(env),
        statement_timeout_ms=env_int("DASHBOARD_STATEMENT_TIMEOUT_MS", 2000, minimum=100, maximum=60000, env=env),
        log_level=log_level,
        sample_interval=env_float("DASHBOARD_SAMPLE_INTERVAL", 2.0, minimum=0.0, maximum=60.0, env=env),
        access_log=env_bool("DASHBOARD_ACCESS_LOG", True, env=env),
    )
