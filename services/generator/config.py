"""The generator's settings: environment variables, each overridable by a command-line flag.

Precedence: flag > environment variable > default. A bad value raises ConfigError naming the flag or the
variable it came from (cli.run_main turns that into one line on stderr and exit code 2).
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from services.common.logs import LEVELS
from services.common.scenarios import DEFAULT_SCENARIO, SCENARIO_NAMES, get_scenario
from services.common.settings import ConfigError, check_host, parse_number, service_conninfo

APPLICATION_NAME = "demo-generator"
DEFAULT_USER = "demo_writer"  # the role the generator is meant to run as (INSERT/UPDATE on base tables)
PASSWORD_VAR = "DEMO_WRITER_PASSWORD"  # noqa: S105 - the name of a variable, not a password
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Option:
    env: str
    flag: str
    default: str | None
    help: str


OPTIONS: tuple[Option, ...] = (
    Option("DEMO_SCENARIO", "--scenario", DEFAULT_SCENARIO, f"scenario: {', '.join(SCENARIO_NAMES)}"),
    Option(
        "DATABASE_URL",
        "--database-url",
        None,
        "libpq URL or key=value string (else PG* variables); database defaults to <scenario>_demo, "
        f"user to {DEFAULT_USER}, password to DEMO_WRITER_PASSWORD",
    ),
    Option("GENERATOR_RATE", "--rate", "1", "regular events per second (> 0, <= max rate)"),
    Option(
        "GENERATOR_BURST_INTERVAL",
        "--burst-interval",
        "45",
        "seconds between automatic bursts (x uniform 0.8-1.2 jitter); 0 = no automatic bursts",
    ),
    Option(
        "GENERATOR_SLOW_CHANGE_EVERY",
        "--slow-change-every",
        "30",
        "cycles (1 cycle = 1 s of unpaused run time) between slow changes (x 0.8-1.2 jitter); 0 = never",
    ),
    Option("GENERATOR_SEED", "--seed", None, "random seed for reproducible events (default: a random one, logged)"),
    Option("GENERATOR_DURATION", "--duration", None, "stop after this many seconds (default: run until stopped)"),
    Option("GENERATOR_HTTP_HOST", "--http-host", "0.0.0.0", "address of the HTTP server"),  # noqa: S104
    Option("GENERATOR_HTTP_PORT", "--http-port", "8000", "port of the HTTP server (0 = any free port)"),
    Option("GENERATOR_MAX_RATE", "--max-rate", "100000", "upper bound for the rate (also for POST /control/rate)"),
    Option("LOG_LEVEL", "--log-level", "INFO", f"log level: {', '.join(LEVELS)}"),
)


@dataclass(frozen=True)
class GeneratorConfig:
    scenario: str
    conninfo: str
    rate: float
    burst_interval: float  # seconds; 0 = no automatic bursts
    slow_change_every: int  # cycles; 0 = no slow changes
    seed: int
    seed_given: bool
    duration: float | None  # seconds; None = until stopped
    http_host: str
    http_port: int
    max_rate: float
    log_level: str


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one ConfigError line (exit code 2 via cli.run_main)."""

    def error(self, message: str):
        raise ConfigError(f"{message} (see --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m services.generator",
        description="Writes the scenario's event stream into its database: a continuous stream, bursts "
        "and slowly-changing lookups. Every option also reads an environment variable (shown in "
        "brackets); the flag wins.",
    )
    for option in OPTIONS:
        default = "" if option.default is None else f"; default {option.default}"
        parser.add_argument(
            option.flag,
            dest=option.env,
            metavar="VALUE",
            default=None,
            help=f"{option.help} [{option.env}{default}]",
        )
    return parser


def _positive(name: str, value: str, *, maximum: float | None = None) -> float:
    number = parse_number(name, value, float, maximum=maximum)
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"{name}={value!r} must be a number > 0")
    return number


def parse_config(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> GeneratorConfig:
    env = dict(os.environ if env is None else env)
    args = vars(build_parser().parse_args(argv))

    def raw(option: Option) -> tuple[str, str | None]:
        """(name to report, value): the flag's value if given, else the variable's, else the default."""
        flag_value = args[option.env]
        if flag_value is not None:
            return option.flag, flag_value.strip()
        env_value = env.get(option.env, "").strip()
        if env_value:
            return option.env, env_value
        return option.env, scenario_defaults.get(option.env, option.default)

    by_env = {option.env: option for option in OPTIONS}
    scenario_defaults: dict[str, str] = {}

    name, scenario = raw(by_env["DEMO_SCENARIO"])
    if scenario not in SCENARIO_NAMES:
        raise ConfigError(f"{name}={scenario!r} is not valid; allowed values: {', '.join(SCENARIO_NAMES)}")
    # A scenario may set its own defaults (finance: a price tick every cycle, bursts every 60 s).
    scenario_defaults = get_scenario(scenario).generator_defaults

    name, max_rate_text = raw(by_env["GENERATOR_MAX_RATE"])
    max_rate = _positive(name, max_rate_text)
    name, rate_text = raw(by_env["GENERATOR_RATE"])
    rate = _positive(name, rate_text)
    if rate > max_rate:
        raise ConfigError(f"{name}={rate_text!r} is above the maximum rate {max_rate:g} (GENERATOR_MAX_RATE)")

    name, value = raw(by_env["GENERATOR_BURST_INTERVAL"])
    burst_interval = parse_number(name, value, float, minimum=0)
    if not math.isfinite(burst_interval):
        raise ConfigError(f"{name}={value!r} must be a finite number of seconds")

    name, value = raw(by_env["GENERATOR_SLOW_CHANGE_EVERY"])
    slow_change_every = parse_number(name, value, int, minimum=0)

    name, value = raw(by_env["GENERATOR_SEED"])
    seed_given = value is not None
    seed = parse_number(name, value, int, minimum=0, maximum=MAX_SEED) if seed_given else secrets.randbits(63)

    name, value = raw(by_env["GENERATOR_DURATION"])
    duration = _positive(name, value) if value is not None else None

    name, http_host = raw(by_env["GENERATOR_HTTP_HOST"])
    http_host = check_host(name, http_host)
    name, value = raw(by_env["GENERATOR_HTTP_PORT"])
    http_port = parse_number(name, value, int, minimum=0, maximum=65535)

    name, log_level = raw(by_env["LOG_LEVEL"])
    if log_level.upper() not in LEVELS:
        raise ConfigError(f"{name}={log_level!r} is not valid; allowed values: {', '.join(LEVELS)}")

    name, url = raw(by_env["DATABASE_URL"])
    if url is not None:
        env["DATABASE_URL"] = url
    try:
        conninfo = service_conninfo(
            default_user=DEFAULT_USER,
            default_dbname=get_scenario(scenario).database,
            password_var=PASSWORD_VAR,
            env=env,
            connect_timeout="3",  # a hung connect must not outlast the 5 s stop budget
        )
    except ConfigError as exc:
        raise ConfigError(" ".join(str(exc).split()).replace("DATABASE_URL", name, 1)) from None

    return GeneratorConfig(
        scenario=scenario,
        conninfo=conninfo,
        rate=rate,
        burst_interval=burst_interval,
        slow_change_every=slow_change_every,
        seed=seed,
        seed_given=seed_given,
        duration=duration,
        http_host=http_host,
        http_port=http_port,
        max_rate=max_rate,
        log_level=log_level.upper(),
    )
