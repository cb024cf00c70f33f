"""A multipart/related body (RFC 2046) read as a stream, one part at a time.

STOW-RS bodies can be gigabytes: each part's bytes go to a sink as they
arrive (memory, then the encrypted spool), so neither the body nor a part is
ever held whole, and a part is handed over as soon as its closing delimiter
is seen. Bounds: the part count, and each part's header block.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import IO, Protocol, TypeVar

CHUNK = 1 << 20
MAX_PART_HEADERS = 16 << 10
# RFC 2046 caps a boundary at 70 characters, but Orthanc's DICOMweb client
# sends 73: a longer one is read whole (cut short, it would never match).
_BOUNDARY = re.compile(r'boundary="?([^";]{1,200})"?', re.IGNORECASE)


class MultipartError(ValueError):
    """The body is not the multipart/related it claims to be; says why."""


class Sink(Protocol):
    def write(self, data: bytes) -> object: ...


S = TypeVar("S", bound=Sink)


def boundary_of(content_type: str) -> bytes | None:
    """The boundary of a multipart/related Content-Type, else None."""
    media = content_type.split(";", 1)[0].strip().lower()
    match = _BOUNDARY.search(content_type)
    if media != "multipart/related" or not match:
        return None
    return match.group(1).strip().encode("ascii", "replace")


def _headers(block: bytes) -> dict[str, str]:
    out = {}
    for line in block.decode("latin-1").split("\r\n"):
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def parts(
    stream: IO[bytes],
    boundary: bytes,
    open_sink: Callable[[dict[str, str]], S],
    max_parts: int,
) -> Iterator[S]:
    """Each part's sink, filled with its payload, once the part is complete.

    ``open_sink`` gets the part's headers (names lower-cased). Raises
    MultipartError for a body without a closing delimiter, a header block
    over 16 KiB, or more than ``max_parts`` parts."""
    delimiter = b"\r\n--" + boundary
    keep = len(delimiter) + 1
    buffer = bytearray(b"\r\n")  # the first delimiter's line break
    state, count = "preamble", 0
    sink: S | None = None
    while True:
        chunk = stream.read(CHUNK)
        buffer += chunk
        while True:
            if state in ("preamble", "body"):
                at = buffer.find(delimiter)
                if at < 0:
                    if sink is not None and len(buffer) > keep:
                        sink.write(bytes(buffer[:-keep]))
                        del buffer[:-keep]
                    elif sink is None:
                        del buffer[: max(0, len(buffer) - keep)]
                    break
                if sink is not None:
                    sink.write(bytes(buffer[:at]))
                    yield sink
                    sink = None
                del buffer[: at + len(delimiter)]
                state = "delimiter"
            if state == "delimiter":
                end = buffer.find(b"\r\n")
                if buffer.startswith(b"--"):
                    return  # the closing delimiter; the epilogue is ignored
                if end < 0:
                    if len(buffer) > MAX_PART_HEADERS:
                        raise MultipartError("a boundary line is too long")
                    break
                del buffer[: end + 2]  # transport padding and the line break
                state = "headers"
            if state == "headers":
                if buffer.startswith(b"\r\n"):
                    block, rest = b"", 2
                else:
                    end = buffer.find(b"\r\n\r\n")
                    if end < 0:
                        if len(buffer) > MAX_PART_HEADERS:
                            raise MultipartError("a part's headers are longer than 16 KiB")
                        break
                    block, rest = bytes(buffer[:end]), end + 4
                if len(block) > MAX_PART_HEADERS:
                    raise MultipartError("a part's headers are longer than 16 KiB")
                count += 1
                if count > max_parts:
                    raise MultipartError(f"more than {max_parts} parts in one request")
                del buffer[:rest]
                sink = open_sink(_headers(block))
                state = "body"
        if not chunk:
            raise MultipartError("the body ends before its closing boundary")
