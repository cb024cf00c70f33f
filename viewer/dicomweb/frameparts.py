"""Frames of pixel data as the parts of a multipart answer: which
representation an Accept header allows (PS3.18 Tables 8.7.3-4 and 8.7.3-5),
and the parts written one frame at a time.

The frames resource (`viewer.dicomweb.wado`) and the Pixel Data bulk data of
an encapsulated instance (`viewer.dicomweb.bulkdata`) are the same frames:
they are negotiated and sent here, so both answer one Accept header alike.
What is stored goes as it is when acceptable (read from the blob at the
offsets the viewer's layout found, with Content-Length); otherwise each
frame is decoded and encoded (`dicomnode.media.transcode`) when its part is sent,
so memory stays one frame whatever the instance.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from flask import Response, abort
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from werkzeug.exceptions import HTTPException

from dicomnode.media import transcode
from viewer.dicomweb.negotiate import AS_STORED, MediaRange
from viewer.framedecode import reference
from viewer.framestore import FrameError, Layout

log = logging.getLogger(__name__)
OCTETS = "application/octet-stream"
# PS3.18 Table 8.7.3-5 (and 8.7.3-4 for octet-stream): each bulk data media
# type, its default transfer syntax, then the others it may carry.
BULK_MEDIA: dict[str, tuple[str, ...]] = {
    OCTETS: (ExplicitVRLittleEndian,),
    "image/jpeg": (
        "1.2.840.10008.1.2.4.70",
        "1.2.840.10008.1.2.4.50",
        "1.2.840.10008.1.2.4.51",
        "1.2.840.10008.1.2.4.57",
    ),
    "image/dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/x-dicom-rle": ("1.2.840.10008.1.2.5",),
    "image/jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/x-jls": ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"),
    "image/jp2": ("1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"),
    "image/jpx": ("1.2.840.10008.1.2.4.92", "1.2.840.10008.1.2.4.93"),
    "image/jphc": ("1.2.840.10008.1.2.4.201", "1.2.840.10008.1.2.4.202", "1.2.840.10008.1.2.4.203"),
    "video/mpeg": ("1.2.840.10008.1.2.4.100", "1.2.840.10008.1.2.4.101"),
    "video/mp4": tuple(f"1.2.840.10008.1.2.4.{n}" for n in (102, 103, 104, 105, 106)),
    "video/h265": ("1.2.840.10008.1.2.4.107", "1.2.840.10008.1.2.4.108"),
}
# What a wildcard range gets, after the stored form: in this order.
FRAME_OFFERS = (OCTETS, "image/dicom-rle", "image/jp2", "image/jls", "image/jpeg")
# The frames of these stored syntaxes are the bytes Explicit VR Little Endian holds.
LITTLE_NATIVE = frozenset(
    {ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian}
)


def syntax_name(syntax: str) -> str:
    return f"{UID(syntax).name} ({syntax})" if UID(syntax).is_transfer_syntax else syntax


# --- negotiation -------------------------------------------------------------


def stored_media(stored: str) -> str:
    """The media type frames stored in ``stored`` are as they are."""
    if stored in LITTLE_NATIVE or not UID(stored).is_compressed:
        return OCTETS
    return next((m for m, syntaxes in BULK_MEDIA.items() if stored in syntaxes), OCTETS)


def pick_frames(stored: str, ranges: list[MediaRange]) -> tuple[str, str] | None:
    """(media type, transfer syntax) of the frames: the first acceptable one
    the node can send data stored as ``stored`` in. Data already in that
    syntax goes as stored; JPEG baseline is made only when asked by name."""
    own_media = stored_media(stored)
    own = ExplicitVRLittleEndian if stored in LITTLE_NATIVE else stored
    for r in ranges:
        if r.syntax == AS_STORED and (r.matches(own_media) or r.media == OCTETS):
            # transfer-syntax=*: any, so the stored one (OHIF asks it as octet-stream).
            named = r.media in BULK_MEDIA and r.media != OCTETS and own in BULK_MEDIA[r.media]
            return (r.media if named else own_media), own
        if r.media in BULK_MEDIA:
            candidates = [r.media]
        else:  # a wildcard: the stored form first, then what the node makes
            candidates = [m for m in dict.fromkeys((own_media, *FRAME_OFFERS)) if r.matches(m)]
        for media in candidates:
            choice = _frame_syntax(stored, own, BULK_MEDIA[media], r.syntax)
            if choice is not None:
                return media, choice
    return None


def _frame_syntax(stored: str, own: str, carried: tuple[str, ...], asked: str | None) -> str | None:
    if asked in (None, AS_STORED):
        if own in carried and (asked == AS_STORED or own == carried[0] or own in transcode.LOSSY):
            return own  # as stored: the default, or only lossy data (PS3.18 §8.7.3)
        target = carried[0]
    elif asked in carried:
        target = asked
    else:
        return None
    if target == own:
        return own
    if target in transcode.LOSSY and asked != target:
        return None  # lossy only when asked for by name
    return target if transcode.can_make(stored, target, frame=True) else None


def frames_offer(stored: str) -> str:
    """What frames stored in ``stored`` can be sent as (a 406's message)."""
    made = [f'type="{OCTETS}" (uncompressed)']
    targets = transcode.frame_targets()
    for media in ("image/dicom-rle", "image/jp2", "image/jls"):
        if BULK_MEDIA[media][0] in targets:
            made.append(f'type="{media}"')
    made.append('type="image/jpeg"; transfer-syntax=1.2.840.10008.1.2.4.50 (lossy, 8-bit)')
    return (
        f"frames stored as {syntax_name(stored)} can be sent as multipart/related with "
        f"{', '.join(made)}, or as stored with transfer-syntax=*"
    )


def choose_frames(stored: str, ranges: list[MediaRange]) -> tuple[str, str]:
    """`pick_frames`, or 406 saying what can be sent."""
    choice = pick_frames(stored, ranges)
    if choice is None:
        abort(406, description=frames_offer(stored))
    return choice


# --- writing -----------------------------------------------------------------


def multipart(
    heads: Sequence[str], bodies: Iterable[Iterable[bytes]], sizes: Sequence[int] | None = None
) -> Response:
    """``multipart/related`` of one part per head (its Content-Type), the
    bodies streamed in order. With ``sizes``, Content-Length is given. Bodies
    that end early end the answer without its closing boundary, so a client
    sees it cut short rather than complete."""
    boundary = secrets.token_hex(16)
    starts = [f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode() for media in heads]
    tail = f"--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        sent = 0
        for start, chunks in zip(starts, bodies, strict=False):
            yield start
            yield from chunks
            yield b"\r\n"
            sent += 1
        if sent == len(starts):
            yield tail

    first = heads[0].split(";")[0] if heads else OCTETS
    headers = {
        "Content-Type": f'multipart/related; type="{first}"; boundary={boundary}',
        "Vary": "Accept",
    }
    if sizes is not None:
        size = sum(len(s) + n + 2 for s, n in zip(starts, sizes, strict=True)) + len(tail)
        headers["Content-Length"] = str(size)
    return Response(body(), headers=headers, direct_passthrough=True)


def stored_bytes(found: Layout, index: int) -> int:
    """How many stored bytes frame ``index`` (0-based) has, from its layout."""
    if found.syntax.is_encapsulated:
        return sum(length for _, length in found.fragments[index])
    return found.frame_bytes


def frame_in(found: Layout, index: int, syntax: str, blob: Any = None) -> bytes:
    """Frame ``index`` decoded from its stored bytes and encoded in ``syntax``."""
    try:
        if blob is None:
            with found.open() as source:
                data = found.stored(index, source)
        else:
            data = found.stored(index, blob)
        array, described = transcode.decode_frame(found.header, data)
        return bytes(transcode.encode_frame(array, described, syntax))
    except FrameError as exc:
        abort(exc.status, description=str(exc))
    except transcode.CannotEncode as exc:
        abort(406, description=f"frame {index + 1}: {exc}")
    except transcode.TranscodeError as exc:
        log.warning("frame %d of %s not transcoded (%s)", index + 1, reference(found.uid), exc)
        abort(422, description=f"frame {index + 1}: {exc}")


def send_frames(found: Layout, indices: Sequence[int], media: str, syntax: str) -> Response:
    """The frames ``indices`` (0-based) as parts of ``media`` in ``syntax``:
    as stored when that is the stored syntax, else transcoded one at a time.
    The first transcoded frame is made before the answer starts, so one
    that cannot be made is a 4xx, not a broken body; a later failure is
    logged and cuts the body short."""
    stored = str(found.syntax)
    own = ExplicitVRLittleEndian if stored in LITTLE_NATIVE else stored
    heads = [f"{media}; transfer-syntax={syntax}"] * len(indices)
    if syntax == own:

        def as_stored() -> Iterator[list[bytes]]:
            with found.open() as blob:
                for index in indices:
                    yield [found.stored(index, blob)]

        return multipart(heads, as_stored(), [stored_bytes(found, i) for i in indices])
    pending = [frame_in(found, indices[0], syntax)]  # held until its part is sent

    def transcoded() -> Iterator[list[bytes]]:
        with found.open() as blob:
            for index in indices:
                try:
                    data = pending.pop() if pending else frame_in(found, index, syntax, blob)
                except HTTPException:  # logged; the body ends without its closing boundary
                    return
                yield [data]

    return multipart(heads, transcoded())
