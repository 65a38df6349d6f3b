"""The exporter's settings, from environment variables (documented in docs/configuration.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from services.common.scenarios import DEFAULT_SCENARIO, SCENARIO_NAMES, get_scenario
from services.common.settings import env_choice, env_float, env_host, env_int, service_conninfo

APPLICATION_NAME = "demo-exporter"
DEFAULT_USER = "demo_reader"  # read-only: SELECT on the catalog and the stream tables, nothing else
PASSWORD_VAR = "DEMO_READER_PASSWORD"  # noqa: S105 - the name of a variable, not a password


@dataclass(frozen=True)
class ExporterConfig:
    scenario: str
    conninfo: str
    host: str
    port: int
    scrape_timeout: float  # seconds: the whole catalog read of one scrape
    advisor_interval: float  # seconds between reads of refresh_efficiency() and recommend_refresh_mode()


def load_config(env: Mapping[str, str] | None = None) -> ExporterConfig:
    scenario = env_choice("DEMO_SCENARIO", DEFAULT_SCENARIO, SCENARIO_NAMES, env=env)
    host = env_host("EXPORTER_HOST", "0.0.0.0", env=env)  # noqa: S104 - a container listens on all interfaces
    port = env_int("EXPORTER_PORT", 9188, minimum=0, maximum=65535, env=env)
    scrape_timeout = env_float("EXPORTER_SCRAPE_TIMEOUT", 5.0, minimum=0.1, maximum=300, env=env)
    advisor_interval = env_float("EXPORTER_ADVISOR_INTERVAL", 30.0, minimum=1, maximum=86400, env=env)
    conninfo = service_conninfo(
        default_user=DEFAULT_USER, default_dbname=get_scenario(scenario).database, password_var=PASSWORD_VAR, env=env
    )
    return ExporterConfig(
        scenario=scenario,
        conninfo=conninfo,
        host=host,
        port=port,
        scrape_timeout=scrape_timeout,
        advisor_interval=advisor_interval,
    )
