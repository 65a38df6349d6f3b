"""Generator settings: environment variables, flags, defaults and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from psycopg.conninfo import conninfo_to_dict

from services.common.settings import ConfigError
from services.generator.config import OPTIONS, parse_config
from tests.support import ROOT

CLEAN_ENV = {"PATH": os.environ.get("PATH", "")}


def run_generator(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "services.generator", *args],
        cwd=ROOT,
        env={**CLEAN_ENV, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_negative_rate_flag_exits_2_with_one_line_naming_the_flag():
    result = run_generator("--rate", "-1")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "--rate" in lines[0] and "-1" in lines[0]
    assert "Traceback" not in result.stderr


def test_bad_environment_variable_exits_2_naming_the_variable():
    result = run_generator(env={"GENERATOR_BURST_INTERVAL": "soon"})
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1
    assert "GENERATOR_BURST_INTERVAL" in result.stderr and "soon" in result.stderr


def test_unknown_flag_and_unknown_scenario_exit_2():
    unknown_flag = run_generator("--speed", "3")
    assert unknown_flag.returncode == 2 and "--speed" in unknown_flag.stderr
    assert unknown_flag.stderr.count("\n") == 1
    unknown_scenario = run_generator(env={"DEMO_SCENARIO": "casino"})
    assert unknown_scenario.returncode == 2 and "DEMO_SCENARIO" in unknown_scenario.stderr


def test_help_lists_every_variable():
    result = run_generator("--help")
    assert result.returncode == 0
    for option in OPTIONS:
        assert option.flag in result.stdout and option.env in result.stdout


def test_defaults():
    config = parse_config([], env={"DEMO_WRITER_PASSWORD": "pw"})
    assert config.scenario == "ecommerce"
    assert config.rate == 1.0
    assert config.burst_interval == 45.0
    assert config.slow_change_every == 30
    assert config.duration is None
    assert (config.http_host, config.http_port) == ("0.0.0.0", 8000)  # noqa: S104
    assert config.max_rate == 100_000
    assert config.log_level == "INFO"
    assert not config.seed_given and 0 <= config.seed < 2**63
    params = conninfo_to_dict(config.conninfo)
    assert params["dbname"] == "ecommerce_demo"
    assert params["user"] == "demo_writer"
    assert params["password"] == "pw"


def test_every_setting_from_environment_and_flags_win():
    env = {
        "DEMO_SCENARIO": "ecommerce",
        "GENERATOR_RATE": "50",
        "GENERATOR_BURST_INTERVAL": "10",
        "GENERATOR_SLOW_CHANGE_EVERY": "5",
        "GENERATOR_SEED": "42",
        "GENERATOR_DURATION": "30",
        "GENERATOR_HTTP_HOST": "127.0.0.1",
        "GENERATOR_HTTP_PORT": "9000",
        "GENERATOR_MAX_RATE": "500",
        "LOG_LEVEL": "debug",
        "DATABASE_URL": "postgresql://alice:secret@db.example:6543/shop",
    }
    config = parse_config([], env=env)
    assert (config.rate, config.burst_interval, config.slow_change_every) == (50, 10, 5)
    assert (config.seed, config.seed_given, config.duration) == (42, True, 30)
    assert (config.http_host, config.http_port, config.max_rate, config.log_level) == ("127.0.0.1", 9000, 500, "DEBUG")
    params = conninfo_to_dict(config.conninfo)
    assert (params["user"], params["host"], params["port"], params["dbname"]) == ("alice", "db.example", "6543", "shop")

    flags = [
        "--rate",
        "7",
        "--burst-interval",
        "0",
        "--slow-change-every",
        "0",
        "--seed",
        "1",
        "--duration",
        "2.5",
        "--http-port",
        "0",
        "--max-rate",
        "10",
        "--log-level",
        "WARNING",
        "--database-url",
        "postgresql://bob@other/x",
    ]
    config = parse_config(flags, env=env)
    assert (config.rate, config.burst_interval, config.slow_change_every, config.seed) == (7, 0, 0, 1)
    assert (config.duration, config.http_port, config.max_rate, config.log_level) == (2.5, 0, 10, "WARNING")
    assert conninfo_to_dict(config.conninfo)["user"] == "bob"


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--rate", "0"], {}, "--rate"),
        (["--rate", "nan"], {}, "--rate"),
        ([], {"GENERATOR_RATE": "fast"}, "GENERATOR_RATE"),
        (["--rate", "200001"], {"GENERATOR_MAX_RATE": "200000"}, "--rate"),
        (["--max-rate", "-5"], {}, "--max-rate"),
        (["--burst-interval", "-1"], {}, "--burst-interval"),
        (["--burst-interval", "inf"], {}, "--burst-interval"),
        (["--slow-change-every", "1.5"], {}, "--slow-change-every"),
        ([], {"GENERATOR_SEED": "-3"}, "GENERATOR_SEED"),
        (["--duration", "0"], {}, "--duration"),
        (["--http-port", "70000"], {}, "--http-port"),
        (["--log-level", "chatty"], {}, "--log-level"),
        (["--scenario", "casino"], {}, "--scenario"),
        (["--database-url", "host=x port=1 nonsense"], {}, "--database-url"),
        (["--rate"], {}, "--rate"),
    ],
)
def test_invalid_values_name_their_source(argv, env, named):
    with pytest.raises(ConfigError) as excinfo:
        parse_config(argv, env=env)
    message = str(excinfo.value)
    assert named in message and "\n" not in message
