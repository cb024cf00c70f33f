"""Frames for the browser (routes): pixels kept as stored.

How an instance's frames travel is decided once per instance
(``framestore.Layout``) and told in /meta (``delivery``):

- ``raw``: /raw/A-B sends frames A to B in one response, each in the layout
  /meta describes (``raw``): the stored bytes where they already are that
  layout, else decoded per frame (``framedecode``). The browser masks,
  sign-extends, rescales, windows and inverts (static/clip.js), so grey XA
  keeps its depth for window/level.
- ``jpeg``: JPEG baseline frames go as stored to an <img> (/frames/N), so
  the browser's decoder converts YBR to RGB once.
- ``image``: what ``raw`` cannot carry (more than 16 bits) goes as PNG.

/frames/N is one frame as a browser image (``framedisplay``) for print,
thumbnails and DICOMweb /rendered.

A SOP instance can be replaced (duplicates = "replace") with other pixels,
so ETags name the stored content (``Layout.version``: the blob's SHA-256 and
its file), never the URL alone. URLs the page builds from /meta carry that
version (``?v=``) and are cached for good; an old version is answered 409 (an
open page must not mix another instance's frames into what it measures).
URLs without it (thumbnails, print) are revalidated on every use.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from viewer.ecg import NoEcg
from viewer.ecg import read as read_ecg
from viewer.framedecode import raw_frame, reference
from viewer.framedisplay import (  # noqa: F401 (frame_times_ms: tests import it from here)
    browser_image,
    frame_times_ms,
    grey_frame,
    rescale,
    thumbnail_jpeg,
    timing,
    window,
)
from viewer.framestore import FrameError, Layout, layout
from viewer.presentation import patient_fields
from viewer.readaudit import viewer_read

bp = Blueprint("frames", __name__, url_prefix="/api/instances")
log = logging.getLogger(__name__)
REQUEST_BYTES = 24 << 20  # most bytes one /raw request sends
# Most frames one /raw request sends: a request of tiny frames must not hold
# a worker for seconds (the browser asks again, in playing order).
REQUEST_FRAMES = 256
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
NUMBER = re.compile("[0-9]{1,12}")  # ASCII only: int() would take "١" or "１"


def _guarded(work: Callable[[], Any], uid: str = "") -> Any:
    """``work``'s result, or its FrameError as an HTTP error that says why;
    anything else damaged data provokes is a 422 too, never a 500 (logged by
    type only: exception texts may quote the data set)."""
    try:
        return work()
    except FrameError as exc:
        abort(exc.status, description=str(exc))
    except Exception as exc:
        log.warning("frames of %s not shown (%s)", reference(uid), type(exc).__name__)
        abort(422, description="the stored pixel data cannot be shown")


def shown_grey(uid: str, index: int) -> Any:
    """Frame ``index`` (0-based) in grey as shown, or the 4xx that says why not."""
    found = layout_or_abort(uid)
    if not 0 <= index < found.frames:
        abort(400, description="no such frame")
    return _guarded(lambda: grey_frame(found, index), uid)


def layout_or_abort(uid: str) -> Layout:
    """The instance's frame layout, or the 4xx its FrameError names."""
    try:
        return layout(uid)
    except FrameError as exc:
        abort(exc.status, description=str(exc))


def _viewed(found: Layout, kind: str) -> None:
    """This read of the instance's study in the audit trail, coalesced per
    session and study (`viewer.readaudit`: a clip is many requests). DICOMweb
    /rendered and /thumbnail call these views and record their own read."""
    if request.blueprint == bp.name:
        viewer_read(str(found.header.get("StudyInstanceUID", "")), f"viewer {kind}")


def per_request(found: Layout) -> int:
    """How many frames one /raw request may ask for: bounded in bytes and in
    frames."""
    return max(1, min(REQUEST_FRAMES, REQUEST_BYTES // max(found.raw.get("bytes", 1), 1)))


def _number(text: str | int, wrong: str) -> int:
    """A frame number as a path gives it: ASCII digits only, else 400 ``wrong``."""
    if isinstance(text, int):  # called from DICOMweb /rendered
        return text
    if not NUMBER.fullmatch(text):
        abort(400, description=wrong)
    return int(text)


def _versioned(found: Layout, *parts: object) -> tuple[str, Response | None]:
    """The ETag of this content, and the answer already due: 304 when the
    browser holds it, 409 when the page asks for a version replaced since."""
    etag = '"' + "-".join(str(p) for p in (found.version, *parts)) + '"'
    asked = request.args.get("v")
    if asked is not None and asked != found.version:
        abort(409, description="this image was replaced after the page opened it: open it again")
    if request.headers.get("If-None-Match") == etag:
        return etag, _cached(Response(status=304), etag)
    return etag, None


def _cached(response: Response, etag: str) -> Response:
    """Kept for good under a versioned URL, else revalidated each time."""
    response.headers["ETag"] = etag
    response.headers["Cache-Control"] = IMMUTABLE if "v" in request.args else REVALIDATE
    return response


@bp.get("/<uid>/meta")
def meta(uid: str) -> Any:
    found = layout_or_abort(uid)
    _viewed(found, "meta")
    ds = found.header
    times = timing(ds, found.frames)
    return jsonify(
        uid=uid,
        version=found.version,
        frames=found.frames,
        **times,
        fps=round(1000.0 / times["frame_time_ms"], 2),
        rows=int(ds.get("Rows", 0)),
        columns=int(ds.get("Columns", 0)),
        photometric=str(ds.get("PhotometricInterpretation", "")),
        grey=str(ds.get("PhotometricInterpretation", "")).startswith("MONOCHROME"),
        modality=str(ds.get("Modality", "")),
        **patient_fields(ds),
        view=str(ds.get("SeriesDescription", "")),
        delivery=found.delivery,
        raw=found.raw or None,
        per_request=per_request(found),
        rescale=rescale(ds),
        window=window(ds),
        voi_function=str(ds.get("VOILUTFunction") or "LINEAR").upper(),
        ecg="WaveformSequence" in ds,
    )


@bp.get("/<uid>/ecg")
def ecg(uid: str) -> Any:
    """The ECG the instance carries, for the strip under its cine: one lead
    (`viewer.ecg`), its R-waves and rate; 404 with the reason when none."""
    found = layout_or_abort(uid)
    try:
        return jsonify(read_ecg(found.header).as_json())
    except NoEcg as exc:
        abort(404, description=str(exc))


@bp.get("/<uid>/thumbnail")
def thumbnail(uid: str) -> Response:
    """The first frame, small: decoding one frame (not kept), never the clip."""
    found = layout_or_abort(uid)
    _viewed(found, "thumbnail")
    etag, due = _versioned(found, "thumbnail")
    if due:
        return due
    data = _guarded(lambda: thumbnail_jpeg(found), uid)
    return _cached(Response(data, mimetype="image/jpeg"), etag)


@bp.get("/<uid>/frames/<number>")
def frame(uid: str, number: str | int) -> Response:
    wanted = _number(number, "frames/N: N is a frame number in digits 0-9")
    if wanted < 1:
        abort(400, description="frames are numbered from 1")
    found = layout_or_abort(uid)
    if wanted > found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    _viewed(found, "frame")
    etag, due = _versioned(found, wanted)
    if due:
        return due
    data, mime = _guarded(lambda: browser_image(found, wanted - 1), uid)
    return _cached(Response(data, mimetype=mime), etag)


@bp.get("/<uid>/raw/<first>-<last>")
def raw(uid: str, first: str, last: str) -> Response:
    """Frames ``first`` to ``last`` (from 1) in the layout /meta gives under
    ``raw``, one after another; at most ``per_request`` frames at once."""
    wrong = "raw/A-B: A and B are frame numbers in digits 0-9"
    start, end = _number(first, wrong), _number(last, wrong)
    if not 1 <= start <= end:
        abort(400, description="raw/A-B: frames from A to B, 1 <= A <= B")
    found = layout_or_abort(uid)
    if found.delivery == "image" or not found.raw:
        abort(415, description="this image is sent as PNG frames (/frames/N), not raw")
    if end > found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    if end - start + 1 > per_request(found):
        abort(400, description=f"ask for at most {per_request(found)} frames at once")
    _viewed(found, "raw")
    etag, due = _versioned(found, "raw", start, end)
    if due:
        return due
    indices = range(start - 1, end)
    if found.passthrough:
        body: Iterator[bytes] | list[bytes] = _stream(found, indices)
    else:  # decoded before answering, so a frame that fails is a clear error
        body = [_guarded(partial(raw_frame, found, i), uid) for i in indices]
    response = Response(body, mimetype="application/octet-stream", direct_passthrough=True)
    response.headers["Content-Length"] = str(len(indices) * found.raw["bytes"])
    return _cached(response, etag)


def _stream(found: Layout, indices: range) -> Iterator[bytes]:
    """Stored frames read one at a time: memory stays one frame per request."""
    with found.open() as blob:
        for index in indices:
            yield found.stored(index, blob)
