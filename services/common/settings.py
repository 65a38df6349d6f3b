"""Typed settings from environment variables.

Every reader validates its value and, when it is wrong, raises ConfigError naming the variable, the bad
value and what is allowed. Entry points wrap their main in `cli.run_main`, which turns ConfigError into a
one-line message and exit code 2 (no traceback).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

from psycopg.conninfo import conninfo_to_dict, make_conninfo


class ConfigError(ValueError):
    """A setting has a value we cannot use. The message is meant for the person who set it."""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str, env: Mapping[str, str] | None) -> str | None:
    value = (os.environ if env is None else env).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, env: Mapping[str, str] | None = None) -> str | None:
    value = _raw(name, env)
    return default if value is None else value


def env_choice(name: str, default: str, choices: Iterable[str], *, env: Mapping[str, str] | None = None) -> str:
    allowed = tuple(choices)
    value = _raw(name, env)
    if value is None:
        return default
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not valid; allowed values: {', '.join(allowed)}")
    return value


def _number(name, value, kind, minimum, maximum):
    try:
        number = kind(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a valid {kind.__name__}") from None
    if kind is float and (number != number or number in (float("inf"), float("-inf"))):  # NaN, inf
        raise ConfigError(f"{name}={value!r} is not a valid number (it must be finite)")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{name}={value!r} is too small; it must be >= {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}={value!r} is too large; it must be <= {maximum}")
    return number


def env_int(name, default, *, minimum=None, maximum=None, env=None) -> int | None:
    value = _raw(name, env)
    return default if value is None else _number(name, value, int, minimum, maximum)


def env_float(name, default, *, minimum=None, maximum=None, env=None) -> float | None:
    value = _raw(name, env)
    return default if value is None else _number(name, value, float, minimum, maximum)


def env_bool(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    value = _raw(name, env)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean; use one of: true, false, 1, 0, yes, no")


_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def check_host(name: str, value: str) -> str:
    """An address to listen on or connect to: an IPv4/IPv6 literal or a DNS name (RFC 1123). Dotted digits
    that are no IPv4 address (999.999.999.999) are refused here, not by a traceback from the socket layer."""
    text = value.strip()
    try:
        ipaddress.ip_address(text.strip("[]"))
        return text.strip("[]")
    except ValueError:
        pass
    labels = text.rstrip(".").split(".")
    numeric = all(label.isdigit() for label in labels)
    if not text or len(text) > 253 or numeric or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise ConfigError(f"{name}={value!r} is not a valid IP address or host name")
    return text


def env_host(name: str, default: str, *, env: Mapping[str, str] | None = None) -> str:
    value = _raw(name, env)
    return default if value is None else check_host(name, value)


def env_password(name: str, *, env: Mapping[str, str] | None = None) -> str | None:
    """A password, exactly as given. Leading or trailing white space is refused rather than silently
    dropped or kept (it is almost always a copy-and-paste accident, and either choice would surprise)."""
    value = (os.environ if env is None else env).get(name)
    if value is None or value == "":
        return None
    if value != value.strip():
        raise ConfigError(f"{name} has leading or trailing white space; remove it (passwords are used exactly)")
    return value


def parse_number(name: str, value: str, kind=float, *, minimum=None, maximum=None):
    """Validates a command-line value with the same messages as the environment readers."""
    return _number(name, value, kind, minimum, maximum)


# -- database ------------------------------------------------------------------------------------------

_PG_VARS = {
    "PGHOST": "host",
    "PGPORT": "port",
    "PGUSER": "user",
    "PGPASSWORD": "password",
    "PGDATABASE": "dbname",
    "PGSSLMODE": "sslmode",
    "PGCONNECT_TIMEOUT": "connect_timeout",
}


def database_conninfo(
    *,
    dbname: str | None = None,
    user_var: str | None = None,
    password_var: str | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """The connection string a service uses, following libpq conventions.

    DATABASE_URL wins when set; otherwise the standard PG* variables (libpq also reads them itself, we
    resolve them here so errors and log lines can name the target). `dbname` overrides the database
    (scenario databases are `<scenario>_demo`). `user_var`/`password_var` name service-specific variables
    (e.g. DEMO_WRITER_PASSWORD) that fill the credentials when DATABASE_URL carries none.
    """
    url = _raw("DATABASE_URL", env)
    try:
        params = conninfo_to_dict(url) if url else {}
    except Exception as exc:  # psycopg raises ProgrammingError with a libpq message
        detail = " ".join(str(exc).split())  # libpq's message ends with a newline
        raise ConfigError(f"DATABASE_URL is not a valid connection string: {detail}") from None
    source = {key: "DATABASE_URL" for key in params}
    if not url:
        for var, key in _PG_VARS.items():
            value = env_password(var, env=env) if key == "password" else _raw(var, env)
            if value is not None:
                params[key], source[key] = value, var
    if user_var and "user" not in params and _raw(user_var, env):
        params["user"] = _raw(user_var, env)
    if password_var and "password" not in params and env_password(password_var, env=env):
        params["password"] = env_password(password_var, env=env)
    _check_ports(params, source)
    _check_timeout(params, source)
    if dbname:
        params["dbname"] = dbname
    return make_conninfo("", **params)


def _check_ports(params: dict, source: dict) -> None:
    """libpq takes a port list (one per host); each must be a TCP port. libpq itself would only fail at
    connect time, after the retry budget, with a message that does not name the variable."""
    port = params.get("port")
    if port is None or str(port).strip() == "":
        return
    for part in str(port).split(","):
        part = part.strip()
        if part and not (part.isdigit() and 1 <= int(part) <= 65535):
            raise ConfigError(f"{source.get('port', 'DATABASE_URL')}: port {part!r} is not valid; use 1-65535")


def _check_timeout(params: dict, source: dict) -> None:
    timeout = params.get("connect_timeout")
    if timeout is None:
        return
    if not str(timeout).strip().isdigit() or int(str(timeout).strip()) > 3600:
        name = source.get("connect_timeout", "DATABASE_URL")
        raise ConfigError(f"{name}: connect_timeout {timeout!r} is not valid; use whole seconds 0-3600")


def service_conninfo(
    *,
    default_user: str,
    default_dbname: str,
    password_var: str,
    env: Mapping[str, str] | None = None,
    **defaults: str,
) -> str:
    """A service's connection string: DATABASE_URL or the PG* variables, with the service's own role and
    the scenario database filling what they leave unset, its password variable (e.g. DEMO_READER_PASSWORD)
    filling a missing password, and `defaults` any other missing libpq parameter (e.g. connect_timeout)."""
    params = conninfo_to_dict(database_conninfo(password_var=password_var, env=env))
    params.setdefault("dbname", default_dbname)
    params.setdefault("user", default_user)
    for key, value in defaults.items():
        params.setdefault(key, value)
    return make_conninfo("", **params)


def describe_conninfo(conninfo: str) -> str:
    """host:port/dbname as user, never the password: safe for logs and error messages."""
    params = conninfo_to_dict(conninfo)
    host = params.get("host") or os.environ.get("PGHOST") or "local socket"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    user = params.get("user") or os.environ.get("PGUSER") or "(default user)"
    dbname = params.get("dbname") or os.environ.get("PGDATABASE") or "(default database)"
    return f"{user}@{host}:{port}/{dbname}"


def url_for(host: str, port: int, dbname: str, user: str, password: str | None = None) -> str:
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "")
    return f"postgresql://{auth}@{host}:{port}/{quote(dbname, safe='')}"
