"""The production WSGI server of the web app (cheroot), with optional TLS,
kept usable while some clients are slow, silent, greedy or too large.

cheroot, as shipped, gives a connection a worker thread from its first byte
to its close and restarts its timeout with every byte, so a handful of
clients trickling headers (or a TLS handshake) hold every worker for as long
as they like. Here:

- a connection gets a worker only once its request headers are complete:
  until then it waits in cheroot's selector, and what it sends (the TLS
  handshake included) is read there without blocking. The headers must be
  complete within ``http_header_seconds`` of the connection's arrival (of
  the first byte of a later request on a kept-alive connection), however
  slowly the bytes trickle, and within HEADER_LIMIT bytes; a body that
  fits in those bytes with its headers (a login form, a plan's JSON) is
  gathered the same way before a worker is given;
- one client address may hold ``http_max_connections_per_address``
  connections (more are closed at once) and have at most a quarter of the workers
  busy (more requests wait their turn), so it cannot crowd out the others;
  0 switches both off (behind a reverse proxy every client has its address:
  the proxy's);
- a request may keep its worker waiting on the client (reading the body,
  writing the answer) for ``http_header_seconds`` (at most
  ``network_timeout``) seconds plus one second per
  `webguard.MIN_TRANSFER_RATE` bytes moved; then the connection is cut;
- request bodies: see `dicomnode.web.body`.
"""

from __future__ import annotations

import logging
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from enum import Enum
from typing import Any, Protocol

from cheroot.connections import ConnectionManager
from cheroot.makefile import MakeFile
from cheroot.server import HTTPConnection
from cheroot.ssl.builtin import BuiltinSSLAdapter
from cheroot.wsgi import Server

from dicomnode.config import Config
from dicomnode.net.connections import source_key
from dicomnode.net.tls import server_context
from dicomnode.web.body import Request
from dicomnode.web.guard import Gate, Meter, MeteredSocket, Notes, Watchdog

log = logging.getLogger(__name__)
HTTPS_ENVIRON = {"wsgi.url_scheme": "https", "HTTPS": "on"}
HEADER_LIMIT = 64 * 1024  # request line and headers, in bytes
HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Length: 0\r\nConnection: close\r\n\r\n"
)


class DeferredHandshakeAdapter(BuiltinSSLAdapter):
    """BCP 195 context; the handshake happens as the client's bytes arrive
    (in the selector, without blocking), not in cheroot's accept loop."""

    def __init__(self, config: Config) -> None:
        super().__init__(config.tls_certificate, config.tls_private_key)
        self.context = server_context(config, client_certificates=False)

    def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, dict(HTTPS_ENVIRON)

    # cheroot's stub gives the base Adapter.get_environ no socket; the
    # BuiltinSSLAdapter it is called on (and this override) takes one.
    def get_environ(self, sock: Any) -> dict[str, str]:  # type: ignore[override]
        return dict(HTTPS_ENVIRON)


class _Connection(HTTPConnection):
    """A connection whose reads and writes are metered, with its place in
    the per-address rules."""

    rbufsize = HEADER_LIMIT  # the headers are gathered in the reader's buffer
    RequestHandlerClass = Request

    def __init__(self, server: _Server, sock: Any, makefile: Any = MakeFile) -> None:
        self.meter = Meter()
        metered = MeteredSocket(sock, self.meter)
        super().__init__(server, sock, lambda _, mode, size: makefile(metered, mode, size))
        self.key: str | None = None  # the client key, once admitted
        self.counted = False  # holds a place in its address's connection count
        self.busy = False  # on a worker (or promised one)
        self.waiting = False  # in the selector for the server's own reasons
        self.deadline: float | None = None  # when its request headers are due
        self.seen = 0  # bytes of the coming request already looked at

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.server.forget(self)


class _Selector(Protocol):
    """cheroot's ``_ThreadsafeSelector`` as it is (its stub says
    ``connections`` is None)."""

    @property
    def connections(self) -> Iterator[tuple[int, Any]]: ...
    def register(self, fileobj: int, events: int, data: Any = None) -> Any: ...
    def unregister(self, fileobj: int) -> Any: ...


class _Connections(ConnectionManager):
    """cheroot's selector loop, which also closes the connections whose
    request headers are overdue."""

    # cheroot's attributes its stub leaves out.
    _selector: _Selector
    server: _Server

    def _expire(self, threshold: float) -> None:
        super()._expire(threshold)  # type: ignore[misc]  # not in cheroot's stub
        now = time.monotonic()
        late = [
            (fd, conn)
            for fd, conn in self._selector.connections
            if conn is not self.server and conn.deadline is not None and now > conn.deadline
        ]
        for fd, conn in late:
            self._selector.unregister(fd)
            self.server.note("request headers not complete in time", conn.remote_addr)
            conn.close()

    @property
    def _num_connections(self) -> int:
        """Kept-alive connections only (cheroot counts every one in the
        selector): clients still sending headers do not take keep-alive
        from the others."""
        return sum(
            1
            for _, conn in self._selector.connections
            if conn is not self.server and conn.deadline is None
        )

    def wait(self, conn: _Connection) -> None:
        """Back to the selector until the client sends more (or closes)."""
        conn.last_used = time.time()
        conn.waiting = True
        self._selector.register(conn.socket.fileno(), selectors.EVENT_READ, data=conn)


class _Headers(Enum):
    WAIT = "wait"
    COMPLETE = "complete"
    CLOSE = "close"


def _complete(data: bytes) -> bool:
    body = data.lstrip(b"\r\n")  # one empty line before a request is allowed
    return b"\r\n\r\n" in body or b"\n\n" in body  # (bare LF: cheroot answers 400)


def _arrived(data: bytes) -> bool:
    """Whether the request's headers, and a small body the headers announce,
    are all buffered: a worker is given only then, so neither slow headers
    nor a slow small body can hold one. A body that would not fit in the
    buffer with its headers, a chunked one, or one the client sends only
    after ``100 Continue`` is read by the worker (under the rate floor)."""
    if not _complete(data):
        return False
    start = len(data) - len(data.lstrip(b"\r\n"))
    end = data.find(b"\r\n\r\n", start)
    if end < 0:
        return True  # bare LF: cheroot answers 400
    length = 0
    for line in data[start:end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name in (b"transfer-encoding", b"expect"):
            return True
        if name == b"content-length":
            if not value.isdigit():
                return True  # the worker answers 400
            length = int(value)
    total = end + 4 + length
    return total > HEADER_LIMIT or len(data) >= total


class _Server(Server):
    ConnectionClass = _Connection
    max_request_header_size = HEADER_LIMIT
    _connections: _Connections  # cheroot's, made in prepare (not in its stub)

    def guard(self, header_seconds: float, cap: int, share: int) -> None:
        self.header_seconds = header_seconds
        self.gate = Gate(cap, share)
        # The rate floor's grace: no longer than the headers get, so a body
        # too large to gather before a worker (over 64 KiB) cannot be
        # trickled to hold one for network_timeout.
        self.watchdog = Watchdog(min(float(self.timeout), header_seconds), self._cut)
        self.note = Notes()

    def prepare(self) -> None:
        super().prepare()
        # The same manager, with the expiry above (cheroot builds it in prepare).
        self._connections.__class__ = _Connections
        self.watchdog.start()

    def process_conn(self, conn: _Connection) -> None:
        """Called for a new connection, for one the selector found readable,
        and for a kept-alive one with its next request already buffered:
        to a worker once the request headers are complete."""
        if conn.key is None:
            conn.key = source_key(conn.remote_addr or "")
            if not self.gate.admit(conn.key):
                self.note("connections over the per-address cap closed", conn.remote_addr)
                conn.close()
                return
            conn.counted = True
        readable, conn.waiting = conn.waiting, False
        if conn.deadline is None:
            conn.deadline = time.monotonic() + self.header_seconds
        state = self._read_headers(conn, readable)
        if state is _Headers.WAIT:
            self._connections.wait(conn)
        elif state is _Headers.CLOSE:
            conn.close()
        else:
            conn.deadline, conn.seen = None, 0
            conn.meter.reset()
            if self.gate.start(conn):
                self._work(conn)

    def _read_headers(self, conn: _Connection, readable: bool) -> _Headers:
        """What has arrived, read without blocking into the connection's
        buffer (where the worker's parser finds it); a TLS handshake
        advances the same way."""
        rfile, grew = conn.rfile, False
        try:
            conn.socket.settimeout(0)
            try:
                while (size := len(rfile.peek(HEADER_LIMIT))) > conn.seen:
                    conn.seen, grew = size, True
                    if size >= HEADER_LIMIT or _arrived(rfile.peek(0)):
                        break
            finally:
                conn.socket.settimeout(self.timeout)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass  # more of the handshake, or of a record, to come
        except OSError:  # reset, a TLS alert, plain HTTP on the TLS port
            return _Headers.CLOSE
        else:
            if readable and not grew:
                return _Headers.CLOSE  # the client closed
        data = rfile.peek(0) if rfile.has_data() else b""  # what is buffered, not reading
        if _arrived(data):
            return _Headers.COMPLETE
        if len(data) >= HEADER_LIMIT:
            with suppress(OSError):
                conn.socket.settimeout(0)
                conn.socket.send(HEADERS_TOO_LARGE)
            return _Headers.CLOSE
        return _Headers.WAIT

    def _work(self, conn: _Connection) -> None:
        self.watchdog.track(conn)
        self.requests.put(conn)

    def _cut(self, conn: _Connection) -> None:
        """The watchdog's verdict: shut the socket down under the blocked
        worker (the base method, so TLS state is left to the worker)."""
        self.note("transfers too slow for too long cut off", conn.remote_addr)
        with suppress(OSError):
            socket.socket.shutdown(conn.socket, socket.SHUT_RDWR)

    def _finished(self, conn: _Connection) -> None:
        if conn.busy:
            self.watchdog.untrack(conn)
        following = self.gate.finish(conn)
        if following is not None:
            following.meter.reset()
            self._work(following)

    def put_conn(self, conn: _Connection) -> None:
        """A worker is done with a kept-alive connection."""
        self._finished(conn)
        if not self.ready:
            conn.close()
        elif conn.rfile.has_data():
            self.process_conn(conn)  # its next request is already buffered
        else:
            self._connections.wait(conn)

    def forget(self, conn: _Connection) -> None:
        """A connection closed, whatever closed it."""
        self._finished(conn)
        if conn.counted:
            conn.counted = False
            self.gate.leave(conn)

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        # One line, no traceback (cheroot prints them to stderr).
        log.log(max(level, logging.INFO), "web: %s", msg.splitlines()[0] if msg else "")

    def stop(self) -> None:
        super().stop()
        self.watchdog.stop()
        for conn in self.gate.drain():
            conn.close()


class WebServer:
    def __init__(self, app: Any, config: Config, threads: int | None = None) -> None:
        self.scheme = "https" if config.http_tls else "http"
        self.threads = threads or config.http_threads
        self._server = _Server(
            (config.http_host, config.http_port),
            app,
            numthreads=self.threads,
            server_name="chd-node",
            timeout=config.network_timeout,
            request_queue_size=128,  # a burst of connections must not wait for SYN retries
        )
        cap = config.http_max_connections_per_address
        self._server.guard(
            config.http_header_seconds, cap, max(1, self.threads // 4) if cap else self.threads
        )
        if config.http_tls:
            self._server.ssl_adapter = DeferredHandshakeAdapter(config)
        self._server.prepare()  # binds now, so the port is known
        self._thread = threading.Thread(target=self._server.serve, daemon=True, name="web")

    @property
    def port(self) -> int:
        return int(self._server.bind_addr[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.stop()
