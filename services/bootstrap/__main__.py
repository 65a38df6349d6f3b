"""python -m services.bootstrap --scenario ecommerce --engine extension|emulator

Applies a scenario to a PostgreSQL 18 server (see core.py). Exit 0 on success, 2 on bad input or
configuration, 1 when the server refuses (unreachable, no pg_trickle, SQL error), always with a message.
"""

from __future__ import annotations

import argparse

from services.bootstrap.core import ENGINES, RolePasswords, bootstrap
from services.common.cli import run_main
from services.common.logs import LEVELS
from services.common.scenarios import DEFAULT_SCENARIO, SCENARIO_NAMES, get_scenario
from services.common.settings import ConfigError, database_conninfo, env_bool, env_choice, env_float, env_str


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code 2 is right; keep its one-line message
        raise ConfigError(message)


def parse_args(argv=None) -> argparse.Namespace:
    parser = _Parser(prog="python -m services.bootstrap", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--scenario", help=f"one of {', '.join(SCENARIO_NAMES)} (env DEMO_SCENARIO, default {DEFAULT_SCENARIO})"
    )
    parser.add_argument(
        "--engine",
        help="extension (real pg_trickle, the default) or emulator "
        "(stock PostgreSQL: tests and preview only) (env DEMO_ENGINE)",
    )
    parser.add_argument("--database", help="database name (env DEMO_DATABASE, default <scenario>_demo)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    scenario_name = args.scenario or env_choice("DEMO_SCENARIO", DEFAULT_SCENARIO, SCENARIO_NAMES)
    if scenario_name not in SCENARIO_NAMES:
        raise ConfigError(f"--scenario {scenario_name!r} is not valid; allowed values: {', '.join(SCENARIO_NAMES)}")
    engine = args.engine or env_choice("DEMO_ENGINE", "extension", ENGINES)
    if engine not in ENGINES:
        raise ConfigError(f"--engine {engine!r} is not valid; allowed values: {', '.join(ENGINES)}")
    # The bootstrap prints plain lines, but LOG_LEVEL is shared with the services: a bad value is refused here too.
    env_choice("LOG_LEVEL", "INFO", LEVELS + tuple(level.lower() for level in LEVELS))
    connect_timeout = env_float("BOOTSTRAP_CONNECT_TIMEOUT", 60.0, minimum=0.0, maximum=3600.0)
    scenario = get_scenario(scenario_name)
    bootstrap(
        database_conninfo(),
        scenario,
        engine,
        RolePasswords.from_env(),
        database=args.database or env_str("DEMO_DATABASE"),
        connect_timeout=connect_timeout,
        # true on a server that is the demo's own (the chart's StatefulSet, compose, make preview): CONNECT on
        # postgres and template1 is revoked from PUBLIC, so the service roles reach their database only.
        private_maintenance_databases=env_bool("BOOTSTRAP_PRIVATE_MAINTENANCE_DATABASES", False),
        report=lambda line: print(line, flush=True),
    )
    return 0


if __name__ == "__main__":
    run_main(main, "bootstrap")
