"""WADO-RS: stored files, frames, rendered and thumbnail resources.

Stored files and frames are streamed, frames one at a time at the offsets
the viewer's layout found (`viewer.framestore`), so no request holds an
instance whole."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator

from flask import Response, abort, current_app
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit

from viewer import frames as viewer_frames
from viewer.dicomweb import bp
from viewer.dicomweb.common import instances_of, one_instance, open_blob, path_keys
from viewer.framestore import Layout
from viewer.readaudit import read

CHUNK_BYTES = 1 << 20  # a stored file is sent in pieces of this size
# Most frame numbers one WADO-RS frames request may list (as given, duplicates
# counted): the viewer's own /raw limit. The frames are streamed one at a time.
FRAME_LIST = viewer_frames.REQUEST_FRAMES
FRAME_NUMBER = re.compile("[1-9][0-9]{0,8}")  # ASCII only: int() takes "١", "+1", " 1", "1_0"
FRAMES_WRONG = "frame numbers: from 1, in digits 0-9 without leading zeros, separated by commas"


def _multipart(uids: list[str]) -> Response:
    """The stored files, one part each, streamed in chunks: memory stays a
    chunk per request however large the run (one object from an object store)."""
    boundary = secrets.token_hex(16)
    archive = current_app.extensions["archive"]  # the parts are sent after the request

    def parts() -> Iterator[bytes]:
        for uid in uids:
            try:
                source = open_blob(archive, uid)
            except FileNotFoundError:  # removed since the query: `dicomnode check` tells
                source = None
            if source is None:
                continue
            with source:
                yield (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
                while chunk := source.read(CHUNK_BYTES):
                    yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    mimetype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return Response(parts(), headers={"Content-Type": mimetype})


@bp.get("/studies/<study>")
def retrieve_study(study: str) -> Response:
    uids = instances_of(**path_keys(study=study))
    read(study, "DICOMweb retrieve study")
    return _multipart(uids)


@bp.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    uids = instances_of(**path_keys(study=study, series=series))
    read(study, "DICOMweb retrieve series")
    return _multipart(uids)


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    uid = one_instance(study, series, instance)
    read(study, "DICOMweb retrieve instance")
    return _multipart([uid])


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
def retrieve_frames(study: str, series: str, instance: str, frames: str) -> Response:
    """Frames as stored: JPEG fragments as they are, native frames as bytes.

    Each frame is read from the blob at the offset the viewer's layout
    (`viewer.framestore`) found, and sent before the next is read: memory
    stays one frame whatever the list, and the instance is never read whole.
    """
    wanted = _frame_list(frames)
    found = viewer_frames.layout_or_abort(one_instance(study, series, instance))
    if max(wanted) > found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    syntax = found.syntax
    if syntax.is_encapsulated:
        media = {JPEGBaseline8Bit: "image/jpeg"}.get(syntax, "application/octet-stream")
    else:  # a deflated file's frames are inflated in the layout
        media = "application/octet-stream"
        syntax = ExplicitVRLittleEndian if syntax == DeflatedExplicitVRLittleEndian else syntax
    boundary = secrets.token_hex(16)
    head = f"--{boundary}\r\nContent-Type: {media}; transfer-syntax={syntax}\r\n\r\n".encode()
    tail = f"--{boundary}--\r\n".encode()
    indices = [n - 1 for n in wanted]

    def parts() -> Iterator[bytes]:
        with found.open() as blob:
            for index in indices:
                yield head
                yield found.stored(index, blob)
                yield b"\r\n"
        yield tail

    size = sum(len(head) + _stored_bytes(found, i) + 2 for i in indices) + len(tail)
    read(study, "DICOMweb frames")
    content_type = f'multipart/related; type="{media}"; boundary={boundary}'
    return Response(
        parts(),
        headers={"Content-Type": content_type, "Content-Length": str(size)},
        direct_passthrough=True,
    )


def _frame_list(text: str) -> list[int]:
    """PS3.18 {frames}: frame numbers from 1 in ASCII digits (no sign, space
    or leading zero), comma-separated; at most ``FRAME_LIST`` of them,
    counted before anything is parsed (a list of 5,000 repetitions is
    refused, not built). A repeated number is sent once, in the order of its
    first appearance."""
    if text.count(",") >= FRAME_LIST:
        abort(400, description=f"frames: at most {FRAME_LIST} frame numbers per request")
    given = text.split(",")
    if not all(FRAME_NUMBER.fullmatch(n) for n in given):
        abort(400, description=FRAMES_WRONG)
    return list(dict.fromkeys(int(n) for n in given))


def _stored_bytes(found: Layout, index: int) -> int:
    """How many stored bytes frame ``index`` (0-based) has, from its layout."""
    if found.syntax.is_encapsulated:
        return sum(length for _, length in found.fragments[index])
    return found.frame_bytes


@bp.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<number>/rendered")
def rendered(study: str, series: str, instance: str, number: str = "1") -> Response:
    # A string, not <int:>: werkzeug's int converter takes "١" and "01".
    if not FRAME_NUMBER.fullmatch(number):
        abort(400, description=FRAMES_WRONG)
    answer = viewer_frames.frame(one_instance(study, series, instance), int(number))
    read(study, "DICOMweb rendered")
    return answer


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
def thumbnail(study: str, series: str, instance: str) -> Response:
    answer = viewer_frames.thumbnail(one_instance(study, series, instance))
    read(study, "DICOMweb thumbnail")
    return answer
