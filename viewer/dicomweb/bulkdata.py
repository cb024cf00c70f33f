"""WADO-RS bulk data: the values metadata leaves out, each at its BulkDataURI.

URI scheme (dcm4chee-arc's, with Orthanc's 1-based item numbers)::

    /dicom-web/studies/{s}/series/{se}/instances/{i}/bulkdata/{tag}[/{item}/{tag}...]

``tag`` is eight hexadecimal digits, ``item`` a sequence item numbered from 1.
The URI is under /dicom-web, so a DICOMweb client reaches it with the same
HTTP Basic credentials (or session) as the metadata that named it.

Pixel Data covers every frame: a native value is one part (the whole value),
encapsulated pixel data one part per frame as stored (PS3.18 §8.7.3.3), each
part naming its transfer syntax. Values are streamed from the stored file at
their offsets (native pixel data in chunks, encapsulated frames one at a time
from `viewer.framestore`'s layout), so no request holds the instance whole;
a value inside a sequence is read with its sequence. Deflated and big-endian
files have no usable offsets and are read whole, as the viewer does.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from flask import Response, abort, current_app, request
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian

from viewer import frames as viewer_frames
from viewer.address import trusted_networks
from viewer.dicomweb import bp
from viewer.dicomweb.common import one_instance, open_blob
from viewer.framestore import Layout
from viewer.readaudit import read

CHUNK_BYTES = 1 << 20
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel, Float, Double Float
MAX_NESTING = 16  # sequences inside sequences a path may name (DICOM uses a handful)
TAG = re.compile("[0-9A-Fa-f]{8}")  # ASCII only
ITEM = re.compile("[1-9][0-9]{0,8}")  # from 1, no sign or leading zero
PATH_WRONG = (
    "bulk data path: an attribute tag as 8 hexadecimal digits, then for each "
    "sequence an item number from 1 and a tag, separated by '/'"
)
OCTETS = "application/octet-stream"
DEFAULT_PORTS = {"http": "80", "https": "443"}
HOST = re.compile(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")
# Media types of encapsulated frames a client may name (PS3.18 Table 8.7.4-2).
FRAME_MEDIA = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/dicom-rle",
    "1.2.840.10008.1.2.4.100": "video/mpeg",
    "1.2.840.10008.1.2.4.101": "video/mpeg",
    "1.2.840.10008.1.2.4.102": "video/mp4",
    "1.2.840.10008.1.2.4.103": "video/mp4",
}
_ALIASES = {"image/x-dicom-rle": "image/dicom-rle", "image/x-jls": "image/jls"}


# ------------------------------------------------------------- URIs


def public_root() -> str:
    """The node's URL as its clients reach it. Behind one of
    `Config.trusted_proxies`: the scheme and host the proxy forwarded
    (X-Forwarded-Proto / -Host), else its Host; anyone else's X-Forwarded-*
    headers are ignored. A direct client whose Host header lacks the port it
    connected to (dicomweb-client drops it) gets the port added: the URIs
    must reach this server."""
    config = current_app.config["NODE_CONFIG"]
    trusted = trusted_networks(config.trusted_proxies)
    try:
        peer = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        peer = None
    if peer is not None and trusted and any(peer in network for network in trusted):
        scheme = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        host = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
        scheme = scheme if scheme in ("http", "https") else request.scheme
        host = host if HOST.fullmatch(host) else request.host
        return f"{scheme}://{host}{request.script_root}/"
    host, scheme = request.host, request.scheme
    port = str(request.environ.get("SERVER_PORT") or "")
    if not re.search(r":[0-9]+$", host) and port not in ("", DEFAULT_PORTS.get(scheme, "")):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{request.script_root}/"


def instance_root(root: str, study: str, series: str, instance: str) -> str:
    return f"{root}dicom-web/studies/{study}/series/{series}/instances/{instance}"


def bulk_uri(instance_url: str, path: Iterable[int]) -> str:
    """The BulkDataURI of the value at ``path`` (tags and 1-based item numbers)."""
    parts = (f"{p:08X}" if i % 2 == 0 else str(p) for i, p in enumerate(path))
    return f"{instance_url}/bulkdata/{'/'.join(parts)}"


# ------------------------------------------------------------- the path


def parse_path(text: str) -> list[int]:
    """``tag[/item/tag...]`` as numbers; 400 for anything else, counted
    before it is split (10,000 levels are refused, not built)."""
    if text.count("/") > 2 * MAX_NESTING:
        abort(400, description=f"bulk data path: at most {MAX_NESTING} nested sequences")
    given = text.split("/")
    if len(given) % 2 == 0:
        abort(400, description=PATH_WRONG)
    for i, part in enumerate(given):
        if not (TAG if i % 2 == 0 else ITEM).fullmatch(part):
            abort(400, description=PATH_WRONG)
    return [int(p, 16) if i % 2 == 0 else int(p) for i, p in enumerate(given)]


def vrs_of(element: Any, tag: int) -> list[str]:
    """The element's VR, or its dictionary VR(s) when the file gives none."""
    given = element.VR
    if not given:
        try:
            given = dictionary_VR(tag)
        except KeyError:  # private or unknown
            given = "UN"
    return str(given).split(" or ")


# ------------------------------------------------------------- negotiation


@dataclass(frozen=True)
class Answer:
    multipart: bool
    part_type: str  # media type of each part (single part: of the body)


def negotiate(encapsulated: UID | None, parts: int) -> Answer:
    """What the Accept header allows for this value (PS3.18 §8.7.3.5): by
    default multipart/related; type="application/octet-stream"; a single
    part application/octet-stream when asked for and the value is one part;
    the compressed frames' own media type when asked for. 406 otherwise."""
    offered = accept_entries(request.headers.get("Accept", ""))
    if not offered:
        return Answer(True, OCTETS)
    stored_media = FRAME_MEDIA.get(str(encapsulated), "") if encapsulated else ""
    choices: list[tuple[float, int, Answer]] = []
    for order, (media, params, quality) in enumerate(offered):
        if quality <= 0:
            continue
        answer = _acceptable(media, params, encapsulated, stored_media, parts)
        if answer is not None:
            choices.append((-quality, order, answer))
    if not choices:
        abort(
            406,
            description=(
                'bulk data is sent as multipart/related; type="application/octet-stream"'
                + (f" (frames as stored, transfer syntax {encapsulated})" if encapsulated else "")
                + ", or as application/octet-stream when it is one part"
            ),
        )
    return min(choices, key=lambda c: (c[0], c[1]))[2]


ACCEPT_PART = re.compile(r'(?:[^,;"]|"[^"]*")+|[,;]')


def accept_entries(header: str) -> list[tuple[str, dict[str, str], float]]:
    """The Accept header as (media type, parameters, quality), in order.
    Parsed here rather than by werkzeug, which cuts an unquoted
    ``type=application/octet-stream`` (as OHIF sends it) at the slash."""
    entries: list[tuple[str, dict[str, str], float]] = []
    fields: list[str] = [""]
    for token in [*ACCEPT_PART.findall(header), ","]:
        if token == ";":
            fields.append("")
        elif token != ",":
            fields[-1] += token
            continue
        if token == "," and fields[0].strip():
            media = fields[0].strip().lower()
            params: dict[str, str] = {}
            for field in fields[1:]:
                name, _, text = field.partition("=")
                params[name.strip().lower()] = text.strip().strip('"').lower()
            try:
                quality = float(params.pop("q", "1"))
            except ValueError:
                quality = 0.0
            quality = quality if 0.0 <= quality <= 1.0 else 0.0  # "nan", "inf", -1
            entries.append((_ALIASES.get(media, media), params, quality))
        if token == ",":
            fields = [""]
    return entries


def _acceptable(
    media: str, params: dict[str, str], encapsulated: UID | None, stored_media: str, parts: int
) -> Answer | None:
    syntax = params.get("transfer-syntax", "*")
    if media in ("*/*", "multipart/*", "multipart/related"):
        inner = _ALIASES.get(params.get("type", "*/*"), params.get("type", "*/*"))
        if inner in ("*/*", "application/*", OCTETS):
            # Encapsulated frames go as stored, their part naming the syntax
            # (no transcoding here): a client naming another syntax gets 406.
            wanted = str(encapsulated) if encapsulated else ExplicitVRLittleEndian
            return Answer(True, OCTETS) if syntax in ("*", wanted) else None
        family = stored_media.split("/")[0] + "/*"
        if encapsulated and stored_media and inner in (stored_media, family):
            return Answer(True, stored_media) if syntax in ("*", str(encapsulated)) else None
        return None
    if media in (OCTETS, "application/*") and parts == 1 and encapsulated is None:
        return Answer(False, OCTETS) if syntax in ("*", ExplicitVRLittleEndian) else None
    return None


# ------------------------------------------------------------- reading


@dataclass
class Value:
    """Where a value's bytes are: a file offset (``source`` open) or memory."""

    source: BinaryIO | None
    offset: int
    length: int
    data: bytes | None = None

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.source is not None
        with self.source:
            self.source.seek(self.offset)
            left = self.length
            while left > 0:
                chunk = self.source.read(min(CHUNK_BYTES, left))
                if not chunk:
                    return  # the file is shorter than its header says: cut short
                left -= len(chunk)
                yield chunk


def _offsets_usable(ds: Dataset) -> bool:
    syntax = ds.file_meta.get("TransferSyntaxUID")
    return syntax is not None and not syntax.is_deflated and syntax.is_little_endian


def _element_value(uid: str, path: list[int]) -> Value:
    """An attribute's value other than top-level pixel data (404 if absent
    or not binary)."""
    source = _open(uid)
    try:
        ds = dcmread(source, stop_before_pixels=True, defer_size=1024)
        if not _offsets_usable(ds):
            source.seek(0)
            ds = dcmread(source)  # deflated or big endian: read whole
        current: Dataset = ds
        for i in range(0, len(path) - 1, 2):
            tag, item = path[i], path[i + 1]
            if tag not in current or "SQ" not in vrs_of(current.get_item(tag), tag):
                abort(404, description="no such sequence in this instance")
            items = current[tag].value
            if item > len(items):
                abort(404, description="no such sequence item in this instance")
            current = items[item - 1]
        tag = path[-1]
        if tag not in current:
            abort(404, description="no such attribute in this instance")
        raw = current.get_item(tag, keep_deferred=True)
        if not BULK_VRS & set(vrs_of(raw, tag)):
            abort(404, description="this attribute is not bulk data")
        if raw.value is None and current is ds and getattr(raw, "value_tell", None) is not None:
            return Value(source, int(raw.value_tell), int(raw.length))  # streamed: keeps the file
        value = current[tag].value
        data = bytes(value) if value is not None else b""
    except BaseException:
        source.close()
        raise
    source.close()
    return Value(None, 0, len(data), data)


def _open(uid: str) -> BinaryIO:
    try:
        source = open_blob(current_app.extensions["archive"], uid)
    except FileNotFoundError:
        source = None
    if source is None:
        abort(404, description="the instance's file is missing")
    return source


def _pixel_value(uid: str, tag: int) -> tuple[Value | None, Layout | None]:
    """Top-level pixel data: a native value to stream, or the layout of
    encapsulated frames."""
    source = _open(uid)
    try:
        ds = dcmread(source, stop_before_pixels=True)
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_encapsulated and tag == 0x7FE00010:
            source.close()
            return None, viewer_frames.layout_or_abort(uid)
        if _offsets_usable(ds):
            head = source.read(8)
            if len(head) == 8 and struct.unpack("<HH", head[:4]) == (tag >> 16, tag & 0xFFFF):
                if syntax.is_implicit_VR:
                    length = struct.unpack("<L", head[4:])[0]
                    offset = source.tell()
                elif head[4:6] in (b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN"):
                    length = struct.unpack("<L", source.read(4))[0]
                    offset = source.tell()
                else:
                    length, offset = struct.unpack("<H", head[6:8])[0], source.tell()
                if length != 0xFFFFFFFF:
                    return Value(source, offset, length), None
            source.close()
            abort(404, description="this instance has no such pixel data")
        source.seek(0)
        whole = dcmread(source)  # deflated or big endian: read whole, as the viewer does
        source.close()
        if tag not in whole:
            abort(404, description="this instance has no such pixel data")
        data = bytes(whole[tag].value or b"")
        return Value(None, 0, len(data), data), None
    except BaseException:
        source.close()
        raise


# ------------------------------------------------------------- the resource


def _multipart(heads: list[tuple[str, int]], bodies: Iterator[Iterable[bytes]]) -> Response:
    """Parts of the given media types and sizes, their bodies streamed in
    order; Content-Length from the sizes."""
    boundary = secrets.token_hex(16)
    starts = [f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode() for media, _ in heads]
    tail = f"--{boundary}--\r\n".encode()
    size = sum(len(h) + n + 2 for h, (_, n) in zip(starts, heads, strict=True)) + len(tail)

    def body() -> Iterator[bytes]:
        for head, chunks in zip(starts, bodies, strict=False):
            yield head
            yield from chunks
            yield b"\r\n"
        yield tail

    first = heads[0][0].split(";")[0] if heads else OCTETS
    return Response(
        body(),
        headers={
            "Content-Type": f'multipart/related; type="{first}"; boundary={boundary}',
            "Content-Length": str(size),
        },
        direct_passthrough=True,
    )


def _frames(found: Layout) -> Iterator[list[bytes]]:
    """Each stored frame in turn, read when its part is sent."""
    with found.open() as blob:
        for index in range(found.frames):
            yield [found.stored(index, blob)]


def _frame_bytes(found: Layout, index: int) -> int:
    return sum(length for _, length in found.fragments[index])


@bp.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<path:attribute>")
def bulkdata(study: str, series: str, instance: str, attribute: str) -> Response:
    """One bulk data value (see the module), 404 for an attribute the
    instance lacks, 400 for a path that is not one."""
    path = parse_path(attribute)
    uid = one_instance(study, series, instance)
    if len(path) == 1 and path[0] in PIXEL_TAGS:
        value, found = _pixel_value(uid, path[0])
    else:
        value, found = _element_value(uid, path), None
    if found is not None:  # encapsulated: one part per frame, as stored
        answer = negotiate(found.syntax, found.frames)
        media = f"{answer.part_type}; transfer-syntax={found.syntax}"
        heads = [(media, _frame_bytes(found, i)) for i in range(found.frames)]
        read(study, "DICOMweb bulk data")
        return _multipart(heads, _frames(found))
    assert value is not None
    try:
        answer = negotiate(None, 1)
    except BaseException:
        if value.source is not None:
            value.source.close()
        raise
    read(study, "DICOMweb bulk data")
    if not answer.multipart:
        return Response(
            value.chunks(),
            headers={"Content-Type": OCTETS, "Content-Length": str(value.length)},
            direct_passthrough=True,
        )
    media = f"{OCTETS}; transfer-syntax={ExplicitVRLittleEndian}"
    return _multipart([(media, value.length)], iter([value.chunks()]))
