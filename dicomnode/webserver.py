"""The production WSGI server of the web app (cheroot), with optional TLS.

Two changes to cheroot keep silent clients from holding up everyone else (the
same rule as on the DICOM port): a new connection waits in cheroot's selector
until it sends something, instead of taking a worker thread at once; and the
TLS handshake, which cheroot runs in its accept loop, is deferred to the
worker's first read.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from cheroot.ssl.builtin import BuiltinSSLAdapter
from cheroot.wsgi import Server

from dicomnode.config import Config
from dicomnode.tls import server_context

log = logging.getLogger(__name__)
HTTPS_ENVIRON = {"wsgi.url_scheme": "https", "HTTPS": "on"}


class DeferredHandshakeAdapter(BuiltinSSLAdapter):
    """BCP 195 context; the handshake happens when the worker first reads."""

    def __init__(self, config: Config) -> None:
        super().__init__(config.tls_certificate, config.tls_private_key)
        self.context = server_context(config, client_certificates=False)

    def wrap(self, sock: Any) -> tuple[Any, dict[str, str]]:
        wrapped = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return wrapped, dict(HTTPS_ENVIRON)

    def get_environ(self, sock: Any) -> dict[str, str]:
        return dict(HTTPS_ENVIRON)


class _Server(Server):
    def process_conn(self, conn: Any) -> None:
        if not getattr(conn, "node_has_spoken", False):
            conn.node_has_spoken = True
            self._connections.put(conn)  # back to the selector until readable
            return
        super().process_conn(conn)

    def error_log(self, msg: str = "", level: int = 20, traceback: bool = False) -> None:
        # One line, no traceback (cheroot prints them to stderr).
        log.log(max(level, logging.INFO), "web: %s", msg.splitlines()[0] if msg else "")


class WebServer:
    def __init__(self, app: Any, config: Config, threads: int = 8) -> None:
        self.scheme = "https" if config.http_tls else "http"
        self._server = _Server(
            (config.http_host, config.http_port),
            app,
            numthreads=threads,
            server_name="chd-node",
            timeout=config.network_timeout,
            request_queue_size=128,  # a burst of connections must not wait for SYN retries
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
