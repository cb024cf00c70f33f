"""WADO-RS bulk data: the values metadata leaves out, each at its BulkDataURI.

URI scheme (dcm4chee-arc's, with Orthanc's 1-based item numbers)::

    /dicom-web/studies/{s}/series/{se}/instances/{i}/bulkdata/{tag}[/{item}/{tag}...]

``tag`` is eight hexadecimal digits, ``item`` a sequence item numbered from 1.
The URI is under /dicom-web, so a DICOMweb client reaches it with the same
HTTP Basic credentials (or session) as the metadata that named it.

Pixel Data covers every frame: a native value is one part (the whole value),
encapsulated pixel data one part per frame (PS3.18 §8.7.3.3), each part
naming its transfer syntax. Encapsulated frames are the frames resource's:
negotiated and sent by `viewer.dicomweb.frameparts`, so one Accept header
gets the same answer from both (as stored, or decoded / recompressed one
frame at a time, e.g. uncompressed for a client that asks Explicit VR Little
Endian). Other values are streamed from the stored file at their offsets in
chunks, so no request holds the instance whole; a value inside a sequence is
read with its sequence. Deflated and big-endian files have no usable offsets
and are read whole, as the viewer does.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from flask import Response, abort
from pydicom import dcmread
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.media.elements import kept_deferred
from viewer import frames as viewer_frames
from viewer.dicomweb import bp
from viewer.dicomweb.common import accept_ranges, one_instance, stored_or_404
from viewer.dicomweb.frameparts import OCTETS, choose_frames, multipart, send_frames
from viewer.dicomweb.negotiate import ANY, AS_STORED, MediaRange
from viewer.framestore import Layout
from viewer.readaudit import read

CHUNK_BYTES = 1 << 20
# Binary values above this size are bulk data in metadata: never read.
BULK_BYTES = 1024
BULK_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})  # Pixel, Float, Double Float
MAX_NESTING = 16  # sequences inside sequences a path may name (DICOM uses a handful)
TAG = re.compile("[0-9A-Fa-f]{8}")  # ASCII only
ITEM = re.compile("[1-9][0-9]{0,8}")  # from 1, no sign or leading zero
PATH_WRONG = (
    "bulk data path: an attribute tag as 8 hexadecimal digits, then for each "
    "sequence an item number from 1 and a tag, separated by '/'"
)


# ------------------------------------------------------------- URIs


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


def as_multipart(ranges: list[MediaRange]) -> bool:
    """How a value that is one part (all but encapsulated Pixel Data) is
    sent: True for multipart/related; type="application/octet-stream", False
    for a single application/octet-stream part, whichever acceptable range
    ranks first (PS3.18 §8.7.3.5; a bare ``*/*`` gets the multipart
    default). Its bytes are as stored, i.e. Explicit VR Little Endian's: a
    compressed syntax named for it is 406."""
    for r in ranges:
        if r.matches(OCTETS) and r.syntax in (None, AS_STORED, ExplicitVRLittleEndian):
            return r.multipart or r.media == ANY
    abort(
        406,
        description='bulk data is sent as multipart/related; type="application/octet-stream" '
        f"(transfer-syntax {ExplicitVRLittleEndian}), or as application/octet-stream",
    )


def frame_ranges(ranges: list[MediaRange]) -> list[MediaRange]:
    """The ranges encapsulated frames can answer: several parts need a
    multipart range (or ``*/*``); a bare single-part type cannot hold them."""
    return [r for r in ranges if r.multipart or r.media == ANY]


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
    source = stored_or_404(uid)
    try:
        ds = dcmread(source, stop_before_pixels=True, defer_size=BULK_BYTES)
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
        raw = kept_deferred(current, tag)
        if not BULK_VRS & set(vrs_of(raw, tag)):
            abort(404, description="this attribute is not bulk data")
        if isinstance(raw, RawDataElement) and raw.value is None and current is ds:
            return Value(source, int(raw.value_tell), int(raw.length))  # streamed: keeps the file
        value = current[tag].value
        data = bytes(value) if value is not None else b""
    except BaseException:
        source.close()
        raise
    source.close()
    return Value(None, 0, len(data), data)


def _pixel_value(uid: str, tag: int) -> tuple[Value | None, Layout | None]:
    """Top-level pixel data: a native value to stream, or the layout of
    encapsulated frames."""
    source = stored_or_404(uid)
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


@bp.get("/studies/<study>/series/<series>/instances/<instance>/bulkdata/<path:attribute>")
def bulkdata(study: str, series: str, instance: str, attribute: str) -> Response:
    """One bulk data value (see the module), 404 for an attribute the
    instance lacks, 400 for a path that is not one."""
    path = parse_path(attribute)
    ranges = accept_ranges()
    uid = one_instance(study, series, instance)
    if len(path) == 1 and path[0] in PIXEL_TAGS:
        value, found = _pixel_value(uid, path[0])
    else:
        value, found = _element_value(uid, path), None
    if found is not None:  # encapsulated: one part per frame, as /frames sends them
        media, syntax = choose_frames(str(found.syntax), frame_ranges(ranges))
        response = send_frames(found, range(found.frames), media, syntax)
        read(study, "DICOMweb bulk data")
        return response
    assert value is not None
    try:
        parts = as_multipart(ranges)
    except BaseException:
        if value.source is not None:
            value.source.close()
        raise
    read(study, "DICOMweb bulk data")
    if not parts:
        return Response(
            value.chunks(),
            headers={
                "Content-Type": OCTETS,
                "Content-Length": str(value.length),
                "Vary": "Accept",
            },
            direct_passthrough=True,
        )
    media = f"{OCTETS}; transfer-syntax={ExplicitVRLittleEndian}"
    return multipart([media], [value.chunks()], [value.length])
