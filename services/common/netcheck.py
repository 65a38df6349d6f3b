"""One clear line, naming the variable to change, when a service cannot listen on its address or port.

`ensure_can_listen` binds (and releases) the address before a server starts, for servers that report a failure
their own way (gunicorn retries five times with its own text; kopf's aiohttp raises a long traceback).
`listen_error` turns the OSError of a server that failed to bind into the same ConfigError (exit code 2).
"""

from __future__ import annotations

import errno
import socket

from services.common.settings import ConfigError


def listen_error(exc: OSError, host: str, port: int, *, host_var: str, port_var: str) -> ConfigError:
    if isinstance(exc, socket.gaierror):
        return ConfigError(f"{host_var}={host!r} cannot be resolved to an address ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{port_var}={port}: port {port} is already in use on {host}; set {port_var} to a free port "
            "or stop what listens there"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return ConfigError(f"{host_var}={host!r} is not an address of this machine; use one of its addresses")
    if exc.errno == errno.EACCES:
        return ConfigError(f"{port_var}={port}: listening on port {port} is not permitted; use a port above 1023")
    return ConfigError(f"cannot listen on {host}:{port} ({host_var}, {port_var}): {exc.strerror or exc}")


def ensure_can_listen(host: str, port: int, *, host_var: str, port_var: str) -> None:
    """Raises ConfigError (see listen_error) unless host:port can be bound right now. Port 0 always can."""
    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
            probe.bind(address)
    except OSError as exc:
        raise listen_error(exc, host, port, host_var=host_var, port_var=port_var) from None
