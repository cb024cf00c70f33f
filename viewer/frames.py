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
thumbnails and DICOMweb /rendered. URLs are immutable (instance UIDs are
never reused), so every answer may be cached for good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flask import Blueprint, Response, abort, jsonify, request

from viewer.framedecode import raw_frame
from viewer.framedisplay import browser_image, frame_times_ms, rescale, thumbnail_jpeg, window
from viewer.framestore import FrameError, Layout, layout
from viewer.presentation import patient_fields

bp = Blueprint("frames", __name__, url_prefix="/api/instances")
REQUEST_BYTES = 24 << 20  # most bytes one /raw request sends
IMMUTABLE = "private, max-age=31536000, immutable"


def _guarded(work: Callable[[], Any]) -> Any:
    """``work``'s result, or its FrameError as an HTTP error that says why."""
    try:
        return work()
    except FrameError as exc:
        abort(exc.status, description=str(exc))


def _layout(uid: str) -> Layout:
    return _guarded(lambda: layout(uid))


def per_request(found: Layout) -> int:
    """How many frames one /raw request may ask for."""
    return max(1, REQUEST_BYTES // max(found.raw.get("bytes", 1), 1))


def _immutable(response: Response, etag: str | None = None) -> Response:
    if etag:
        response.headers["ETag"] = etag
    response.headers["Cache-Control"] = IMMUTABLE
    return response


def _etag(*parts: object) -> str:
    return '"' + "-".join(str(p) for p in parts) + '"'


def _not_modified(etag: str) -> bool:
    return request.headers.get("If-None-Match") == etag


@bp.get("/<uid>/meta")
def meta(uid: str) -> Any:
    found = _layout(uid)
    ds = found.header
    times = frame_times_ms(ds, found.frames)
    return jsonify(
        uid=uid,
        frames=found.frames,
        frame_times_ms=times,
        fps=round(1000.0 / (sum(times) / len(times)), 2),
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
    )


@bp.get("/<uid>/thumbnail")
def thumbnail(uid: str) -> Response:
    """The first frame, small: decoding one frame (not kept), never the clip."""
    found = _layout(uid)
    return _immutable(Response(_guarded(lambda: thumbnail_jpeg(found)), mimetype="image/jpeg"))


@bp.get("/<uid>/frames/<int:number>")
def frame(uid: str, number: int) -> Response:
    etag = _etag(uid, number)
    if _not_modified(etag):
        return Response(status=304)
    found = _layout(uid)
    if not 1 <= number <= found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    data, mime = _guarded(lambda: browser_image(found, number - 1))
    return _immutable(Response(data, mimetype=mime), etag)


@bp.get("/<uid>/raw/<int:first>-<int:last>")
def raw(uid: str, first: int, last: int) -> Response:
    """Frames ``first`` to ``last`` (from 1) in the layout /meta gives under
    ``raw``, one after another; at most ``per_request`` frames at once."""
    etag = _etag(uid, "raw", first, last)
    if _not_modified(etag):
        return Response(status=304)
    found = _layout(uid)
    if found.delivery == "image" or not found.raw:
        abort(415, description="this image is sent as PNG frames (/frames/N), not raw")
    if not 1 <= first <= last <= found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    if last - first + 1 > per_request(found):
        abort(400, description=f"ask for at most {per_request(found)} frames at once")
    indices = range(first - 1, last)
    if found.passthrough:
        body: Iterator[bytes] | list[bytes] = _stream(found, indices)
    else:  # decoded before answering, so a frame that fails is a clear error
        body = [_guarded(lambda i=i: raw_frame(found, i)) for i in indices]
    response = Response(body, mimetype="application/octet-stream", direct_passthrough=True)
    response.headers["Content-Length"] = str(len(indices) * found.raw["bytes"])
    return _immutable(response, etag)


def _stream(found: Layout, indices: range) -> Iterator[bytes]:
    """Stored frames read one at a time: memory stays one frame per request."""
    with found.open() as blob:
        for index in indices:
            yield found.stored(index, blob)
