"""WADO-RS: instances, frames, rendered and thumbnail resources, each in a
representation the request's Accept allows (PS3.18 §8.7), else 406.

What is stored goes as it is whenever it is acceptable (``transfer-syntax=*``,
OHIF's default, always is): stored files in chunks, frames one at a time at
the offsets the viewer's layout found (`viewer.framestore`), so no request
holds an instance whole. An instance asked for in Explicit VR Little Endian
(the default for lossless data) is streamed too: its header, then each frame
decoded when its bytes are sent, so memory stays one frame, the first bytes
leave at once and the work stops when the client goes away. Other syntaxes
(RLE, JPEG 2000, JPEG-LS, Deflated) need the whole instance decoded: only up
to ``transcode_max_mb`` decoded, one at a time in the process
(`dicomnode.media.transcode`), else 406 saying how to get the data. Frames are
negotiated and written by `viewer.dicomweb.frameparts`, which Pixel Data
bulk data shares.

Rendered and thumbnail images reuse the viewer's rendering
(`viewer.framedisplay`): JPEG baseline frames as stored, other frames
windowed the way the sender's first window says, so DICOMweb and the viewer
show the same picture.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections.abc import Callable, Iterator
from io import BytesIO
from typing import Any

import numpy as np
from flask import Response, abort, request
from PIL import Image
from pydicom import dcmread
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from dicomnode.media import transcode
from storage.keys import Level
from storage.query import Query
from viewer import frames as viewer_frames
from viewer import services
from viewer.dicomweb import bp
from viewer.dicomweb.common import accept_ranges as _ranges
from viewer.dicomweb.common import instance_rows, one_instance, open_blob, path_keys
from viewer.dicomweb.frameparts import LITTLE_NATIVE, choose_frames, send_frames
from viewer.dicomweb.frameparts import syntax_name as _name
from viewer.dicomweb.negotiate import AS_STORED, MediaRange
from viewer.framedecode import frame_array, reference
from viewer.framedisplay import browser_image, image_8bit, rescale, thumbnail_jpeg
from viewer.framestore import FrameError, Layout
from viewer.framestore import layout as _layout
from viewer.readaudit import read

log = logging.getLogger(__name__)
CHUNK_BYTES = 1 << 20  # a stored file is sent in pieces of this size
# Most frame numbers one WADO-RS frames request may list (as given, duplicates
# counted): the viewer's own /raw limit. The frames are streamed one at a time.
FRAME_LIST = viewer_frames.REQUEST_FRAMES
FRAME_NUMBER = re.compile("[1-9][0-9]{0,8}")  # ASCII only: int() takes "١", "+1", " 1", "1_0"
FRAMES_WRONG = "frames: from 1, in digits 0-9 without leading zeros, separated by commas"
DICOM = "application/dicom"
VIEWPORT_MAX = 4096  # largest rendered width or height
THUMBNAIL_PIXELS = 192

RENDERED_MEDIA = ("image/jpeg", "image/png", "image/gif")  # the first is the default
PILLOW_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}


# --- instances ---------------------------------------------------------------


def _stored(keys: dict[str, str]) -> list[tuple[str, str]]:
    """(SOP Instance UID, stored transfer syntax) of the instances under
    ``keys`` (exact UIDs from the path); 404 when none."""
    rows = instance_rows(keys, "AvailableTransferSyntaxUID")
    return [(r["SOPInstanceUID"], str(r["AvailableTransferSyntaxUID"] or "")) for r in rows]


def _instance_syntaxes(ranges: list[MediaRange]) -> list[str | None]:
    """The transfer syntaxes asked for application/dicom, best first: a UID,
    ``*`` (as stored) or None (the default)."""
    wanted = [r.syntax for r in ranges if r.matches(DICOM)]
    if not wanted:
        abort(406, description=_instance_offer("this resource is sent as"))
    return wanted


def _instance_offer(lead: str) -> str:
    made = sorted(transcode.instance_targets() - {ImplicitVRLittleEndian})
    return (
        f'{lead} multipart/related; type="application/dicom" with transfer-syntax=* (as stored) '
        f"or one of {', '.join(made)} (default {ExplicitVRLittleEndian})"
    )


def _pick_syntax(stored: str, wanted: list[str | None]) -> str | None:
    """The first acceptable syntax the node can send ``stored`` data in."""
    for syntax in wanted:
        if syntax == AS_STORED:
            return stored
        if syntax is None:  # the default, unless the node only has lossy pixel data
            if stored in transcode.LOSSY:
                return stored
            syntax = ExplicitVRLittleEndian
        # PS3.18 §8.7.3: Implicit VR Little Endian is not used with web services.
        if syntax != ImplicitVRLittleEndian and transcode.can_make(stored, syntax):
            return syntax
    return None


def _retrieve(keys: dict[str, str], study: str, detail: str) -> Response:
    wanted = _instance_syntaxes(_ranges())
    plan: list[tuple[str, str, str]] = []
    archive = services.archive()
    for uid, stored in _stored(keys):
        stored = stored or _file_syntax(archive, uid)
        target = _pick_syntax(stored, wanted)
        if target is None:
            abort(
                406,
                description=f"an instance stored as {_name(stored)} cannot be sent in an "
                f"acceptable transfer syntax; {_instance_offer('the node can send')}",
            )
        plan.append((uid, stored, target))
    limit = services.ingestor().config.transcode_max_mb << 20
    streams: dict[str, Layout] = {}
    for uid, stored, target in plan:
        if stored == target:
            continue
        found = _frames_of(uid)
        if found is not None and target == ExplicitVRLittleEndian and _streamable(found):
            streams[uid] = found
        elif found is not None:  # refused before anything is decoded or sent
            _within(found.header, limit)
    ready: dict[str, Any] = {}
    if len(plan) == 1 and plan[0][1] != plan[0][2]:  # one instance: failures are a clear 4xx
        uid = plan[0][0]
        if uid in streams:
            ready[uid] = _first_frame(streams[uid], fail=True)
        else:
            ready[uid] = _transcoded(archive, *plan[0], limit=limit, fail=True) or b""
    read(study, detail)
    return _multipart(archive, plan, ready, streams, limit)


def _frames_of(uid: str) -> Layout | None:
    """The viewer's frame layout of ``uid``, or None (no pixel data, or
    frames the viewer cannot place: transcoded whole, within the limit)."""
    try:
        return _layout(uid)
    except FrameError:
        return None


def _streamable(found: Layout) -> bool:
    """Whether the frames can be decoded one at a time into Explicit VR
    Little Endian: whole bytes per sample, stored little endian or in a
    syntax decoded here, and a length Pixel Data can state."""
    header, stored = found.header, str(found.syntax)
    if int(header.get("BitsAllocated") or 0) not in (8, 16, 32):
        return False
    size = transcode.frame_size(header)
    if stored in LITTLE_NATIVE:
        ok = found.frame_bytes == size
    else:
        ok = UID(stored).is_compressed and transcode.decodable(stored)
    return ok and 0 < size * found.frames < 0xFFFFFFFE


def _too_large(exc: Exception) -> str:
    return (
        f"{exc}: too large to transcode here; ask for it as stored "
        '(multipart/related; type="application/dicom"; transfer-syntax=*), '
        "or for its frames (.../frames/{n}) in the syntax wanted"
    )


def _within(header: Any, limit: int) -> None:
    """406 when the instance decodes to more than ``limit`` bytes."""
    try:
        transcode.check_size(header, limit)
    except transcode.TooLarge as exc:
        abort(406, description=_too_large(exc))


def _first_frame(found: Layout, fail: bool = False) -> tuple[bytes, Any] | None:
    """Frame 1 decoded (its bytes and attributes), for the header: a frame
    that cannot be decoded is a 422 before the answer starts (``fail``),
    else logged and the instance left out."""
    try:
        with found.open() as blob:
            data = found.stored(0, blob)
        if str(found.syntax) in LITTLE_NATIVE:
            return data, None
        return transcode.decoded_frame(found.header, data)
    except (FrameError, transcode.TranscodeError) as exc:
        log.warning("instance %s not transcoded (%s)", reference(found.uid), exc)
        if fail:
            abort(422, description=f"the stored instance cannot be decoded ({exc})")
        return None


def _encapsulated_size(found: Layout) -> int:
    """Pixel Data's stored value length (the lossy ratio's denominator)."""
    ends = [offset + length for frame in found.fragments for offset, length in frame]
    return max(ends, default=0)


def _streamed(found: Layout, first: tuple[bytes, Any]) -> Iterator[bytes]:
    """The instance in Explicit VR Little Endian: the header with what
    decoding changes, then frame after frame as they are decoded. Ends
    early (logged) when a later frame cannot be decoded; stops when the
    server closes it (the client went away)."""
    native = str(found.syntax) in LITTLE_NATIVE
    yield transcode.stream_header(found.header, first[1], found.frames, _encapsulated_size(found))
    yield first[0]
    size = transcode.frame_size(found.header)
    with found.open() as blob:
        for index in range(1, found.frames):
            try:
                data = found.stored(index, blob)
                yield data if native else transcode.decoded_frame(found.header, data)[0]
            except (FrameError, transcode.TranscodeError) as exc:
                uid, number = reference(found.uid), index + 1
                log.warning("instance %s cut at frame %d (%s)", uid, number, exc)
                raise _CutShort from None
    if size * found.frames % 2:
        yield b"\0"


class _CutShort(Exception):
    """A streamed instance ended early: the answer ends without its boundary."""


def _file_syntax(archive: Any, uid: str) -> str:
    """The stored file's transfer syntax, for an index row that lacks it."""
    try:
        source = open_blob(archive, uid)
        if source is None:
            return ExplicitVRLittleEndian  # nothing to send: the part is left out
        with source:
            return str(dcmread(source, stop_before_pixels=True).file_meta.TransferSyntaxUID)
    except Exception:  # unreadable: sent as stored only (transfer-syntax=*)
        return "unreadable"


def _transcoded(
    archive: Any, uid: str, stored: str, target: str, limit: int, fail: bool = False
) -> bytes | None:
    source = open_blob(archive, uid)
    if source is None:
        if fail:
            abort(404, description="nothing stored matches")
        return None
    try:
        with source:
            return transcode.transcode(source, target, limit)
    except transcode.TooLarge as exc:
        log.warning("instance %s not transcoded (%s)", reference(uid), exc)
        if fail:
            abort(406, description=_too_large(exc))
        return None
    except transcode.TranscodeError as exc:
        log.warning("instance %s not transcoded (%s)", reference(uid), exc)
        if fail:
            abort(422, description=f"the stored instance {exc}")
        return None


def _multipart(
    archive: Any,
    plan: list[tuple[str, str, str]],
    ready: dict[str, Any],
    streams: dict[str, Layout],
    limit: int,
) -> Response:
    """One part per instance: stored files streamed in chunks (memory stays
    a chunk however large the run), Explicit VR Little Endian ones frame by
    frame, other transcoded ones made one at a time within ``limit``."""
    boundary = secrets.token_hex(16)

    def parts() -> Iterator[bytes]:
        for uid, stored, target in plan:
            head = f"--{boundary}\r\nContent-Type: {DICOM}; transfer-syntax={target}\r\n\r\n"
            if uid in streams:
                first = ready.pop(uid, None) or _first_frame(streams[uid])
                if first is None:
                    continue
                yield head.encode()
                try:
                    yield from _streamed(streams[uid], first)
                except _CutShort:
                    return  # no closing boundary: the client sees it cut short
                del first
                yield b"\r\n"
                continue
            if stored != target:
                data = ready.pop(uid, None) or _transcoded(archive, uid, stored, target, limit)
                if data is not None:  # three pieces: never a second copy of the instance
                    yield head.encode()
                    yield data
                    yield b"\r\n"
                del data
                continue
            source = open_blob(archive, uid)
            if source is None:  # removed since the query: `dicomnode check` tells
                continue
            with source:
                yield head.encode()
                while chunk := source.read(CHUNK_BYTES):
                    yield chunk
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    syntaxes = {target for _, _, target in plan}
    mimetype = f'multipart/related; type="{DICOM}"; boundary={boundary}'
    if len(syntaxes) == 1:
        mimetype += f"; transfer-syntax={syntaxes.pop()}"
    return Response(parts(), headers={"Content-Type": mimetype, "Vary": "Accept"})


@bp.get("/studies/<study>")
def retrieve_study(study: str) -> Response:
    return _retrieve(path_keys(study=study), study, "DICOMweb retrieve study")


@bp.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    return _retrieve(path_keys(study=study, series=series), study, "DICOMweb retrieve series")


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    keys = path_keys(study=study, series=series, instance=instance)
    return _retrieve(keys, study, "DICOMweb retrieve instance")


# --- frames ------------------------------------------------------------------


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
def retrieve_frames(study: str, series: str, instance: str, frames: str) -> Response:
    """Frames in the first acceptable representation: as stored (read from
    the blob at the layout's offsets and sent before the next is read), or
    decoded and encoded one frame at a time. Memory stays one frame whatever
    the list, and the instance is never read whole."""
    wanted = _frame_list(frames)
    ranges = _ranges()
    found = viewer_frames.layout_or_abort(one_instance(study, series, instance))
    if max(wanted) > found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    media, syntax = choose_frames(str(found.syntax), ranges)
    response = send_frames(found, [n - 1 for n in wanted], media, syntax)  # frames: `frameparts`
    read(study, "DICOMweb frames")
    return response


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


# --- rendered and thumbnail --------------------------------------------------


def _rendered_media(ranges: list[MediaRange]) -> str:
    """The first acceptable rendered media type (image/jpeg when any is)."""
    for r in ranges:
        for media in RENDERED_MEDIA:
            if r.matches(media):
                return media
    abort(406, description=f"rendered images are sent as {', '.join(RENDERED_MEDIA)}")


def _guarded(work: Callable[[], Any], uid: str) -> Any:
    """``work``'s result; a frame that cannot be shown is a 4xx saying why."""
    try:
        return work()
    except FrameError as exc:
        abort(exc.status, description=str(exc))
    except Exception as exc:  # damaged data: Pillow's and pydicom's errors are of many kinds
        log.warning("rendering of %s failed (%s)", reference(uid), type(exc).__name__)
        abort(422, description="the stored pixel data cannot be shown")


def _numbers(name: str, count: int, low: float, high: float) -> list[float] | None:
    """A query parameter of ``count`` comma-separated numbers in [low, high]."""
    text = request.args.get(name)
    if text is None:
        return None
    parts = text.split(",")
    try:
        values = [float(p) for p in parts] if len(text) <= 64 else []
    except ValueError:
        values = []
    if len(values) != count or not all(low <= v <= high for v in values):
        abort(400, description=f"{name}: {count} comma-separated numbers")
    return values


def _parameters() -> dict[str, Any]:
    """PS3.18 §8.3.5.1 rendering parameters: quality, viewport (vw,vh: the
    image scaled to fit), window (center,width[,function]: linear only)."""
    quality = _numbers("quality", 1, 1, 100)
    viewport = request.args.get("viewport")
    size = None
    if viewport is not None:
        if viewport.count(",") != 1:
            abort(400, description="viewport: vw,vh (cropping is not supported)")
        size = _numbers("viewport", 2, 1, VIEWPORT_MAX)
    window = request.args.get("window")
    given = None
    if window is not None:
        parts = window.split(",")
        if len(parts) == 3 and parts[2].strip().lower() in ("linear", "linear-exact"):
            parts = parts[:2]
        try:
            given = [float(p) for p in parts] if len(window) <= 64 else []
        except ValueError:
            given = []
        if len(given) != 2 or not all(np.isfinite(given)) or given[1] < 1:
            abort(400, description="window: center,width[,linear] with width at least 1")
    return {
        "quality": int(quality[0]) if quality else 90,
        "viewport": None if size is None else (int(size[0]), int(size[1])),
        "window": given,
    }


def _windowed(found: Layout, index: int, given: list[float]) -> np.ndarray:
    """A grey frame windowed to 8 bits by the request's window (PS3.3
    C.11.2.1.2 linear); colour frames are not windowed."""
    values = frame_array(found, index)
    if values.ndim == 3:
        return image_8bit(found, values)
    modality = rescale(found.header)
    scaled = values.astype(np.float64) * modality["slope"] + modality["intercept"]
    center, width = given
    low = center - 0.5 - (width - 1) / 2
    out = np.clip((scaled - low) / max(width - 1, 1e-6) * 255, 0, 255).astype(np.uint8)
    if str(found.header.get("PhotometricInterpretation")) == "MONOCHROME1":
        out = 255 - out
    return out


def _image(
    found: Layout, index: int, params: dict[str, Any]
) -> tuple[Image.Image | None, bytes, str]:
    """Frame ``index`` as the viewer renders it: (image, encoded, mime);
    ``encoded`` is the viewer's own bytes when no parameter changes them."""
    if params["window"] is not None:
        return Image.fromarray(_windowed(found, index, params["window"])), b"", ""
    data, mime = browser_image(found, index)
    return None, data, mime


def _encode(image: Image.Image, media: str, quality: int) -> bytes:
    if media == "image/jpeg" and image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    buffer = BytesIO()
    options = {"quality": quality} if media == "image/jpeg" else {}
    image.save(buffer, format=PILLOW_FORMAT[media], **options)
    return buffer.getvalue()


def _fit(image: Image.Image, size: tuple[int, int] | None) -> Image.Image:
    if size is None:
        return image
    scale = min(size[0] / image.width, size[1] / image.height)
    target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(target, Image.Resampling.LANCZOS)


def _render(found: Layout, index: int, media: str, params: dict[str, Any]) -> bytes:
    """One frame in ``media``: the viewer's image itself when it already is
    that media type and nothing asks for a change, else re-encoded from it."""
    image, data, mime = _image(found, index, params)
    untouched = params["viewport"] is None and "quality" not in request.args
    if image is None and mime == media and untouched:
        return data
    if image is None:
        image = _opened(data)
    return _encode(_fit(image, params["viewport"]), media, params["quality"])


def _respond(data: bytes, media: str) -> Response:
    response = Response(data, mimetype=media)
    response.headers["Cache-Control"] = "private, no-cache"
    response.headers["Vary"] = "Accept"
    return response


def _representative(keys: dict[str, str]) -> str:
    """The instance a study or series is shown by: the first image (lowest
    series, then instance number) the node can show."""
    query = Query(
        level=Level.IMAGE,
        keys={**keys, "SOPInstanceUID": "", "SeriesNumber": "", "InstanceNumber": "", "Rows": ""},
    )
    rows = [r for r in services.archive().index.find(query) if r["Rows"]]
    if not rows:
        abort(404, description="nothing stored matches an image")

    def order(row: dict[str, Any]) -> tuple[float, float]:
        return _as_number(row.get("SeriesNumber")), _as_number(row.get("InstanceNumber"))

    return min(rows, key=order)["SOPInstanceUID"]


def _as_number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("inf")


def _frame_number(number: str) -> int:
    # A string, not <int:>: werkzeug's int converter takes "١" and "01".
    if not FRAME_NUMBER.fullmatch(number):
        abort(400, description=FRAMES_WRONG)
    return int(number)


def _rendered(uid: str, number: int, study: str, detail: str, small: bool = False) -> Response:
    media = _rendered_media(_ranges())
    params = _parameters()
    found = viewer_frames.layout_or_abort(uid)
    if number > found.frames:
        abort(404, description=f"frames are numbered 1 to {found.frames}")
    if small:
        data = _guarded(lambda: _thumbnail(found, number - 1, media, params), uid)
    else:
        data = _guarded(lambda: _render(found, number - 1, media, params), uid)
    read(study, detail)
    return _respond(data, media)


def _thumbnail(found: Layout, index: int, media: str, params: dict[str, Any]) -> bytes:
    """A small image of frame ``index``: the viewer's thumbnail for the
    first frame, else the frame rendered and shrunk."""
    if index == 0 and params["window"] is None:
        data = thumbnail_jpeg(found)
        if media == "image/jpeg" and params["viewport"] is None:
            return data
        image = _opened(data)
    else:
        image = _fit_image(found, index, params)
        image.thumbnail((THUMBNAIL_PIXELS, THUMBNAIL_PIXELS))
    if params["viewport"] is not None:
        image = _fit(image, params["viewport"])
    return _encode(image, media, params["quality"])


def _fit_image(found: Layout, index: int, params: dict[str, Any]) -> Image.Image:
    image, data, _ = _image(found, index, params)
    return _opened(data) if image is None else image


def _opened(data: bytes) -> Image.Image:
    """The encoded image ``data``, decoded now (not when first used)."""
    image = Image.open(BytesIO(data))
    image.load()
    return image


@bp.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<number>/rendered")
def rendered(study: str, series: str, instance: str, number: str = "1") -> Response:
    """An instance (its first frame) or one frame as an image."""
    uid = one_instance(study, series, instance)
    return _rendered(uid, _frame_number(number), study, "DICOMweb rendered")


@bp.get("/studies/<study>/rendered")
def study_rendered(study: str) -> Response:
    uid = _representative(path_keys(study=study))
    return _rendered(uid, 1, study, "DICOMweb rendered")


@bp.get("/studies/<study>/series/<series>/rendered")
def series_rendered(study: str, series: str) -> Response:
    uid = _representative(path_keys(study=study, series=series))
    return _rendered(uid, 1, study, "DICOMweb rendered")


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<number>/thumbnail")
def thumbnail(study: str, series: str, instance: str, number: str = "1") -> Response:
    uid = one_instance(study, series, instance)
    return _rendered(uid, _frame_number(number), study, "DICOMweb thumbnail", small=True)


@bp.get("/studies/<study>/thumbnail")
def study_thumbnail(study: str) -> Response:
    uid = _representative(path_keys(study=study))
    return _rendered(uid, 1, study, "DICOMweb thumbnail", small=True)


@bp.get("/studies/<study>/series/<series>/thumbnail")
def series_thumbnail(study: str, series: str) -> Response:
    uid = _representative(path_keys(study=study, series=series))
    return _rendered(uid, 1, study, "DICOMweb thumbnail", small=True)
