"""Slow and idle HTTP clients (issue 14, finding 4), shared by the default-suite test and the benchmark.

A slow client sends a request head a few bytes at a time and never finishes it (slowloris); an idle client
connects and sends nothing. Meanwhile a probe asks GET /healthz every `probe_every` seconds on a fresh
connection and records how long each answer took (None: no answer within `probe_timeout`).
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class SlowClients:
    port: int
    slow: int
    idle: int = 0
    drip_every: float = 1.0
    sockets: list[socket.socket] = field(default_factory=list)
    closed_by_server: int = 0  # connections the server answered (408) or closed while we held them
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> SlowClients:
        for i in range(self.slow + self.idle):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            if i < self.slow:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # a head that never ends
            self.sockets.append(sock)
        self._thread = threading.Thread(target=self._drip, daemon=True)
        self._thread.start()
        return self

    def _drip(self) -> None:
        n = 0
        while not self._stop.wait(self.drip_every):
            n += 1
            for sock in self.sockets[: self.slow]:
                if sock.fileno() < 0:
                    continue
                try:
                    sock.sendall(b"X-Drip-%d: 1\r\n" % n)
                except OSError:
                    sock.close()
                    self.closed_by_server += 1

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def probe_health(port: int, duration: float, probe_every: float = 1.0, probe_timeout: float = 5.0):
    """[(seconds since start, latency or None)] of GET /healthz once per `probe_every` for `duration`."""
    results = []
    started = time.monotonic()
    while time.monotonic() - started < duration:
        sent = time.monotonic()
        latency = None
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=probe_timeout)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                latency = time.monotonic() - sent
            conn.close()
        except OSError:
            latency = None
        results.append((round(sent - started, 2), latency))
        time.sleep(max(0.0, probe_every - (time.monotonic() - sent)))
    return results
