"""Request bodies bounded per route, refused before they are read.

Anyone can send a body to any URL, logged in or not, so the bound is checked
first, before login, CSRF (which reads forms) or the view: forms and JSON may
carry `http_max_form_kb`, a STOW-RS request `stow_max_mb`. A Content-Length
over the route's bound is answered 413 at once; a chunked body is counted as
it streams and cut off with 413 at the bound (`BoundedBody`). The server
(`dicomnode.web.server`) closes the connection after a 413 or a large unread
body instead of draining it.

A view that takes a large body (STOW-RS) reads ``request.stream`` in parts;
`limit` tells it the current request's bound.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, jsonify, request
from werkzeug.exceptions import BadRequest, RequestEntityTooLarge

from dicomnode.config import Config
from viewer import services

KiB = 1024
# Endpoints that take more than a form, and their bound in bytes.
LARGE_BODIES: dict[str, Callable[[Config], int]] = {
    "dicomweb.store": lambda config: config.stow_max_mb * KiB * KiB,
    "dicomweb.store_study": lambda config: config.stow_max_mb * KiB * KiB,
}
TOO_LARGE = "the request body is larger than {size} MiB, the most this URL accepts"
BROKEN = "the request body is malformed or ended early"


def limit() -> int:
    """Bytes of body the current request may carry."""
    config: Config = services.config()
    bound = LARGE_BODIES.get(request.endpoint or "")
    return bound(config) if bound else config.http_max_form_kb * KiB


def _message(size: int) -> str:
    return TOO_LARGE.format(size=f"{size / (KiB * KiB):g}")


class BoundedBody:
    """``wsgi.input`` counted as it is read: a byte past the limit is a 413
    (werkzeug's ``max_content_length`` ends a chunked body at the limit
    silently, so a form would be parsed cut short); broken chunking or a
    failed read is the client's error, a 400, not the view's 500."""

    def __init__(self, stream: Any, allowed: int) -> None:
        self._stream, self._left = stream, allowed

    def _most(self, size: int | None) -> int:
        most = self._left + 1  # one byte more tells a body over the limit
        return most if size is None or size < 0 else min(size, most)

    def _take(self, data: bytes) -> bytes:
        self._left -= len(data)
        if self._left < 0:
            raise RequestEntityTooLarge(description=_message(limit()))
        return data

    def read(self, size: int | None = -1) -> bytes:
        try:
            data = self._stream.read(self._most(size))
        except (ValueError, OSError):
            raise BadRequest(description=BROKEN) from None
        return self._take(data)

    def readline(self, size: int | None = -1) -> bytes:
        try:
            data = self._stream.readline(self._most(size))
        except (ValueError, OSError):
            raise BadRequest(description=BROKEN) from None
        return self._take(data)

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")

    def close(self) -> None:
        pass


def _check() -> None:
    allowed = limit()
    request.max_form_memory_size = allowed
    if (request.content_length or 0) > allowed:
        raise RequestEntityTooLarge(description=_message(allowed))
    request.environ["wsgi.input"] = BoundedBody(request.environ["wsgi.input"], allowed)


def _too_large(error: RequestEntityTooLarge) -> Any:
    """werkzeug's own 413s (a body past the limit) say which limit; a view's
    413 keeps its reason."""
    from viewer.i18n import translate

    given = error.description
    message = _message(limit()) if given == RequestEntityTooLarge.description else given
    return jsonify(error=error.name, message=translate(message or "")), 413


def install(app: Flask) -> None:
    """Registered before the login and CSRF checks, which read forms."""
    app.before_request(_check)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
