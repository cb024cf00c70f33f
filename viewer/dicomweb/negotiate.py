"""The Accept header of a DICOMweb request, read the way PS3.18 §8.7 means it.

A request may list several media ranges with q-values; a
``multipart/related`` range names the part's media type in ``type`` and
may name a ``transfer-syntax`` (a UID, or ``*`` for "any": the node then
sends what it stores). Clients differ in small ways that must all work:
OHIF writes ``type=application/octet-stream`` without quotes (werkzeug's
parser cuts that at the slash, so this one is used by every DICOMweb
resource), dicomweb-client quotes it, scripts send a bare
``application/dicom`` or nothing.

Parsing is bounded before any work (``MAX_CHARS``, ``MAX_RANGES``): a header
of ten thousand ranges is refused, not read. Anything that cannot be read is
``NotAcceptable`` (406 with what the resource can send), never a 500.

This module only reads; which representation a resource makes of what it
stores is decided by its view from the ranges in preference order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_CHARS = 4096  # longest Accept header read
MAX_RANGES = 32  # most media ranges read from it
MAX_PARAMS = 8  # most parameters of one range
ANY = "*/*"
AS_STORED = "*"  # transfer-syntax=*: any transfer syntax, so the stored one

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
# A media range, then its parameters. A parameter value is a token or a
# quoted string; '/' is allowed unquoted because OHIF sends
# ``type=application/octet-stream`` that way.
_RANGE = re.compile(rf"\s*({_TOKEN})/({_TOKEN})\s*")
_PARAM = re.compile(rf';\s*({_TOKEN})\s*=\s*("(?:[^"\\]|\\.){{0,256}}"|[^;,"\s]{{1,256}})\s*')
_SEPARATOR = re.compile(r",\s*")
_Q = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")
_UID = re.compile(r"[0-9]+(?:\.[0-9]+){0,31}")


class NotAcceptable(Exception):
    """The header cannot be read, or asks for nothing the node can send;
    ``status`` is 400 for a header beyond the bounds, else 406."""

    def __init__(self, message: str, status: int = 406) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class MediaRange:
    """One media range: ``media`` is the representation itself (for a
    multipart range, its ``type`` parameter; ``*/*`` when none is given)."""

    media: str
    syntax: str | None  # transfer-syntax: a UID, "*", or None (the media type's default)
    q: float
    multipart: bool
    order: int

    def matches(self, media: str) -> bool:
        """Whether ``media`` (a concrete type/subtype) is in this range."""
        if self.media == ANY or self.media == media:
            return True
        return self.media.endswith("/*") and media.startswith(self.media[:-1])

    @property
    def wildcard(self) -> bool:
        return self.media.endswith("/*")


def parse(header: str | None) -> list[MediaRange]:
    """The acceptable media ranges, best first (q, then the order given);
    ranges with q=0 left out. No header (or an empty one): one ``*/*``
    range, which leaves the choice to the resource's defaults."""
    if header is None or not header.strip():
        return [MediaRange(ANY, None, 1.0, False, 0)]
    if len(header) > MAX_CHARS:
        raise NotAcceptable(f"Accept: at most {MAX_CHARS} characters are read", 400)
    if header.count(",") >= MAX_RANGES:
        raise NotAcceptable(f"Accept: at most {MAX_RANGES} media ranges are read", 400)
    ranges: list[MediaRange] = []
    position = 0
    while position < len(header):
        found, position = _one(header, position, len(ranges))
        if found.q > 0:
            ranges.append(found)
        if position < len(header):
            separator = _SEPARATOR.match(header, position)
            if separator is None:
                raise NotAcceptable("Accept: media ranges are separated by commas")
            position = separator.end()
    if not ranges:
        raise NotAcceptable("Accept: every media range has q=0")
    return sorted(ranges, key=lambda r: (-r.q, r.order))


def _one(header: str, position: int, order: int) -> tuple[MediaRange, int]:
    head = _RANGE.match(header, position)
    if head is None:
        raise NotAcceptable("Accept: a media range is not type/subtype")
    media = f"{head.group(1)}/{head.group(2)}".lower()
    if head.group(1) == "*" and head.group(2) != "*":
        raise NotAcceptable("Accept: */subtype is not a media range")
    position = head.end()
    params: dict[str, str] = {}
    while (param := _PARAM.match(header, position)) is not None:
        if len(params) >= MAX_PARAMS:
            raise NotAcceptable(f"Accept: at most {MAX_PARAMS} parameters per media range")
        value = param.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params.setdefault(param.group(1).lower(), value.strip())
        position = param.end()
    q = params.get("q", "1")
    if not _Q.fullmatch(q):
        raise NotAcceptable("Accept: q is a number from 0 to 1 with at most three decimals")
    multipart = media in ("multipart/related", "multipart/*")  # multipart/*: any multipart
    if multipart:
        part = params.get("type", ANY).lower()
        if not _RANGE.fullmatch(part):
            raise NotAcceptable("Accept: the type parameter of multipart/related is a media type")
        media = part
    syntax = params.get("transfer-syntax")
    if syntax is not None and syntax != AS_STORED and not _UID.fullmatch(syntax):
        raise NotAcceptable("Accept: transfer-syntax is a UID or *")
    return MediaRange(media, syntax, float(q), multipart, order), position
