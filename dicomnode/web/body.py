"""Request bodies as cheroot reads them, made safe for a port anyone can reach.

cheroot, as shipped, has three habits a hostile or careless client can use:

- after the answer it drains a body the app did not read with one ``read``
  of its whole length, so 600 MB sent to ``/healthz`` are 600 MB (twice)
  in memory: here up to DRAIN_LIMIT is skipped to keep the connection, a
  larger rest closes it (as does any 413);
- it reads each declared chunk of a chunked body whole (one "600 MB" chunk
  is 600 MB of memory): here a read returns at most what was asked for,
  and the app's limit (`viewer.bodylimit`) cuts the stream;
- it answers ``Expect: 100-continue`` as soon as the headers arrive: here
  when the app first reads the body (PEP 3333's second way), so a request
  the app refuses (413, 401, 403) is answered before the body is sent.

A Content-Length that is not a plain decimal number is refused with 400 (a
negative one would make cheroot read to the end of the stream).
"""

from __future__ import annotations

from typing import Any

from cheroot.server import HTTPRequest, KnownLengthRFile

DRAIN_LIMIT = 64 * 1024  # unread body bytes skipped to keep a connection alive
MAX_CHUNK_LINE = 4096  # a chunk-size line, with its extensions
MAX_TRAILERS = 16 * 1024
_HEX = frozenset(b"0123456789abcdefABCDEF")


class ChunkedBody:
    """``wsgi.input`` of a chunked body, read as it arrives: never more than
    asked for, whatever size the sender declares for a chunk."""

    def __init__(self, rfile: Any) -> None:
        self._rfile = rfile
        self._left = 0  # bytes of the current chunk not yet read
        self.done = False

    def _line(self, what: str) -> bytes:
        line = self._rfile.readline(MAX_CHUNK_LINE + 1)
        if not line.endswith(b"\r\n"):
            raise ValueError(f"chunked body: {what} cut short or too long")
        return line

    def _next_chunk(self) -> None:
        size = self._line("chunk size").split(b";", 1)[0].strip()
        if not size or not set(size) <= _HEX or len(size) > 16:
            raise ValueError("chunked body: bad chunk size")
        self._left = int(size, 16)
        if self._left:
            return
        trailers = 0
        while (line := self._line("trailer")) != b"\r\n":
            trailers += len(line)
            if trailers > MAX_TRAILERS:
                raise ValueError("chunked body: trailers too long")
        self.done = True

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return b"".join(iter(lambda: self.read(1 << 16), b""))
        out = bytearray()
        while len(out) < size and not self.done:
            if not self._left:
                self._next_chunk()
                continue
            piece = self._rfile.read(min(size - len(out), self._left))
            if not piece:
                raise ValueError("chunked body: cut short")
            out += piece
            self._left -= len(piece)
            if not self._left and self._rfile.read(2) != b"\r\n":
                raise ValueError("chunked body: chunk not followed by CRLF")
        return bytes(out)

    def readline(self, size: int | None = -1) -> bytes:
        out = bytearray()
        while (size is None or size < 0 or len(out) < size) and not out.endswith(b"\n"):
            byte = self.read(1)
            if not byte:
                break
            out += byte
        return bytes(out)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return list(self)

    def __iter__(self) -> Any:
        return iter(self.readline, b"")

    def close(self) -> None:
        pass


class _Continue:
    """The connection's reader, answering "100 Continue" before the first read."""

    def __init__(self, request: Request) -> None:
        self._request, self._rfile = request, request.conn.rfile
        self.sent = False

    def _go(self) -> None:
        if not self.sent:
            self.sent = True
            if not self._request.sent_headers:
                protocol = self._request.server.protocol.encode("ascii")
                self._request.conn.wfile.write(protocol + b" 100 Continue\r\n\r\n")

    def read(self, size: int | None = -1) -> bytes:
        self._go()
        return self._rfile.read(size)

    def readline(self, size: int | None = -1) -> bytes:
        self._go()
        return self._rfile.readline(size)


class Request(HTTPRequest):
    """cheroot's request with the body handling above."""

    expects_continue = False
    _continue: _Continue | None = None

    def read_request_headers(self) -> bool:
        read = self.header_reader

        def holding_expect(rfile: Any, headers: dict[bytes, bytes] | None = None) -> Any:
            found = read(rfile, headers)
            expect = found.pop(b"Expect", b"")
            self.expects_continue = expect.strip().lower() == b"100-continue"
            length = found.get(b"Content-Length")
            if length is not None and not length.strip().isdigit():
                raise ValueError("Content-Length is not a number of bytes")
            return found

        self.header_reader = holding_expect
        return bool(super().read_request_headers())

    def respond(self) -> None:
        """cheroot's, with the body readers above (and no 413 of its own: the
        app answers that, in JSON, per route)."""
        source: Any = self.conn.rfile
        length = int(self.inheaders.get(b"Content-Length", 0))
        if self.expects_continue and (self.chunked_read or length):
            source = self._continue = _Continue(self)
        self.rfile = ChunkedBody(source) if self.chunked_read else KnownLengthRFile(source, length)
        self.server.gateway(self).respond()
        if self.ready:
            self.ensure_headers_sent()
        if self.chunked_write:
            self.conn.wfile.write(b"0\r\n\r\n")

    def send_headers(self) -> None:
        if self._body_left_unread():
            self.close_connection = True  # not drained: closed
        super().send_headers()

    def _body_left_unread(self) -> bool:
        """Whether the app left more of the body than is worth skipping."""
        if self._continue is not None and not self._continue.sent:
            return True  # the client may send the body now, or never
        if isinstance(self.rfile, ChunkedBody):
            return not self.rfile.done
        return int(getattr(self.rfile, "remaining", 0)) > DRAIN_LIMIT
