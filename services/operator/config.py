"""The operator's settings, from environment variables (see docs/configuration.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from psycopg.conninfo import conninfo_to_dict, make_conninfo

from services.common.logs import LEVELS
from services.common.scenarios import DEFAULT_SCENARIO, SCENARIO_NAMES, get_scenario
from services.common.settings import (
    ConfigError,
    env_choice,
    env_float,
    env_host,
    env_int,
    env_str,
    service_conninfo,
)

APPLICATION_NAME = "demo-operator"
DEFAULT_USER = "demo"  # the owner role: it creates, alters and drops stream tables
PASSWORD_VAR = "DEMO_PASSWORD"  # noqa: S105 - the name of a variable, not a password
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_NAMESPACE_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"


@dataclass(frozen=True)
class OperatorConfig:
    scenario: str
    namespace: str
    health_host: str
    health_port: int
    sync_interval: float
    delete_timeout: float  # seconds a deletion waits for an unreachable server before releasing; 0 = forever
    conninfo: str  # database defaults to <scenario>_demo; a StreamTable's spec.database overrides it
    default_database: str
    log_level: str

    def conninfo_for(self, database: str | None) -> str:
        if not database or database == self.default_database:
            return self.conninfo
        return make_conninfo(self.conninfo, dbname=database)


def resolve_namespace(env: Mapping[str, str], service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE) -> str:
    namespace = env_str("OPERATOR_NAMESPACE", None, env=env)
    source = "OPERATOR_NAMESPACE"
    if namespace is None:
        source = str(service_account_file)
        try:
            namespace = service_account_file.read_text().strip()
        except OSError:
            raise ConfigError(
                f"OPERATOR_NAMESPACE is not set and {service_account_file} cannot be read "
                "(not running in a pod): set OPERATOR_NAMESPACE to the namespace to watch"
            ) from None
    if not re.fullmatch(_NAMESPACE_PATTERN, namespace) or len(namespace) > 63:
        raise ConfigError(f"{source}={namespace!r} is not a valid namespace name")
    return namespace


def load_config(
    env: Mapping[str, str] | None = None, service_account_file: Path = SERVICE_ACCOUNT_NAMESPACE
) -> OperatorConfig:
    env = dict(os.environ if env is None else env)
    scenario = env_choice("DEMO_SCENARIO", DEFAULT_SCENARIO, SCENARIO_NAMES, env=env)
    log_level = env_choice("LOG_LEVEL", "INFO", LEVELS + tuple(level.lower() for level in LEVELS), env=env).upper()
    health_host = env_host("OPERATOR_HEALTH_HOST", "0.0.0.0", env=env)  # noqa: S104 - a pod's probe port
    health_port = env_int("OPERATOR_HEALTH_PORT", 8081, minimum=0, maximum=65535, env=env)
    sync_interval = env_float("OPERATOR_SYNC_INTERVAL", 10.0, minimum=1.0, maximum=3600.0, env=env)
    delete_timeout = env_float("OPERATOR_DELETE_TIMEOUT", 600.0, minimum=0.0, maximum=30 * 86400.0, env=env)
    namespace = resolve_namespace(env, service_account_file)
    conninfo = service_conninfo(
        default_user=DEFAULT_USER, default_dbname=get_scenario(scenario).database, password_var=PASSWORD_VAR, env=env
    )
    return OperatorConfig(
        scenario=scenario,
        namespace=namespace,
        health_host=health_host,
        health_port=health_port,
        sync_interval=sync_interval,
        delete_timeout=delete_timeout,
        conninfo=conninfo,
        default_database=conninfo_to_dict(conninfo)["dbname"],
        log_level=log_level,
    )
