"""The dashboard's gunicorn worker: gthread that reads each request in the event loop, not in a thread.

gunicorn's gthread worker hands a connection to a thread as soon as its first byte arrives, and the thread then
blocks reading the request line and headers with no timeout: four half-sent requests occupy the four threads of
the preview's worker and the dashboard stops answering (issue 14, finding 4; gunicorn has no header-read timeout
for this worker). This subclass keeps gthread's thread pool for the application and its keep-alive handling,
and changes one thing: the worker's event loop (selectors, non-blocking reads) collects the request head and, when
it declares a Content-Length within the body limit, the body as well; only a complete request goes to a thread.

- A client that has not sent its whole head (and small body) within `read_timeout` seconds
  (DASHBOARD_READ_TIMEOUT, default 10) gets `408 Request Timeout` and is disconnected; it never held a thread.
- A thread reading what remains (a chunked or oversized body) reads with a socket timeout of `read_timeout`.
- At most `worker_connections` (gunicorn's setting, 1000) connections per worker are held; past that the worker
  stops accepting until some finish, as gthread does.

A production ingress (nginx, Envoy, a cloud load balancer) buffers requests in front of the dashboard too; this
worker is what keeps `make preview`, compose and kind available without one.
"""

from __future__ import annotations

import contextlib
import errno
import re
import selectors
import socket
import time
from functools import partial

from gunicorn.workers.gthread import TConn, ThreadWorker

from services.common.httpguard import MAX_BODY_BYTES

MAX_HEAD_BYTES = 64 * 1024  # gunicorn's own limits (request line 4094, 100 fields of 8190) fit in this
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d{1,12})[ \t]*\r\n", re.IGNORECASE)
_TIMEOUT_BODY = b'{"error": "Request Timeout", "detail": "the request was not sent in time"}'
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class BufferedSocket:
    """The client socket, with the bytes the event loop has already read served first."""

    def __init__(self, sock: socket.socket, read_timeout: float):
        self.raw, self.read_timeout, self._pending = sock, read_timeout, b""

    def push(self, data: bytes) -> None:
        self._pending += data

    def recv(self, size: int, *flags) -> bytes:
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        return self.raw.recv(size, *flags)

    def setblocking(self, flag: bool) -> None:
        # gthread makes the socket blocking when a thread takes it: blocking, but never forever.
        if flag:
            self.raw.settimeout(self.read_timeout)
        else:
            self.raw.setblocking(False)

    def __getattr__(self, name):
        return getattr(self.raw, name)


def request_complete(data: bytes) -> bool:
    """True when `data` holds a whole request head and, if it declares a Content-Length within the body limit,
    the whole body; a head with no length or a longer one is handed over as it is (the thread reads the rest
    with a timeout, and the application refuses a body over the limit with 413 before reading it)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return len(data) > MAX_HEAD_BYTES  # too long a head: gunicorn's parser answers it with an error
    match = _CONTENT_LENGTH.search(data, 0, end + 2)
    if match is None:
        return True
    length = int(match.group(1))
    return length > MAX_BODY_BYTES or len(data) - (end + 4) >= length


class HardenedThreadWorker(ThreadWorker):
    read_timeout = 10.0  # set from DASHBOARD_READ_TIMEOUT by gunicorn_conf.gunicorn_options

    def init_process(self):
        self._reading: dict[TConn, float] = {}  # connections whose request is being read -> deadline
        super().init_process()

    def accept(self, server, listener):
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        conn = TConn(self.cfg, sock, client, server)  # non-blocking
        conn.sock = BufferedSocket(sock, self.read_timeout)
        self.nr_conns += 1
        self._read_request(conn)

    def on_client_socket_readable(self, conn, client):
        # A kept-alive connection has a new request: read it in the loop as well.
        with self._lock:
            self.poller.unregister(client)
            try:
                self._keep.remove(conn)
            except ValueError:
                return  # race with murder_keepalived: it is being closed
        self._read_request(conn)
        self._on_request_bytes(conn, client)

    def _read_request(self, conn: TConn) -> None:
        conn.request_bytes = b""
        with self._lock:
            self._reading[conn] = time.monotonic() + self.read_timeout
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_request_bytes, conn))

    def _on_request_bytes(self, conn: TConn, _client) -> None:
        try:
            data = conn.sock.raw.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(conn)
            return
        conn.request_bytes += data
        if not request_complete(conn.request_bytes):
            return
        with self._lock:
            self._reading.pop(conn, None)
            self.poller.unregister(conn.sock)
        conn.sock.push(conn.request_bytes)
        conn.request_bytes = b""
        self.enqueue_req(conn)  # a thread parses and serves it

    def _drop(self, conn: TConn, answer: bytes | None = None) -> None:
        with self._lock:
            self._reading.pop(conn, None)
            with contextlib.suppress(KeyError, ValueError, OSError):
                self.poller.unregister(conn.sock)
        if answer is not None:
            with contextlib.suppress(OSError):
                conn.sock.raw.send(answer)  # non-blocking: best effort
        self.nr_conns -= 1
        conn.close()

    def murder_keepalived(self):
        super().murder_keepalived()
        now = time.monotonic()
        with self._lock:
            late = [conn for conn, deadline in self._reading.items() if deadline <= now]
        for conn in late:
            self._drop(conn, _TIMEOUT_RESPONSE)
