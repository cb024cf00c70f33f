"""DICOMweb (PS3.18) under /dicom-web: QIDO-RS, WADO-RS, STOW-RS.

QIDO-RS uses the C-FIND translation (`dicomnode.find`) and so the shared
matching in `storage`; WADO-RS returns the stored files as they are; STOW-RS
goes through the one ingest pipeline, de-identification included. Clients
authenticate with the web session or HTTP Basic (for OHIF, Weasis, scripts).

A UID in a path is one exact UID (`viewer.uids`), never a matching key, and
an instance is served only under its own study and series. Stored files and
frames are streamed, frames one at a time at the offsets the viewer's layout
found (`viewer.framestore`), so no request holds an instance whole. Every
retrieval, metadata and frame read is one "study-view" audit record
(`viewer.readaudit`).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from io import BytesIO
from typing import Any, BinaryIO

from flask import Blueprint, Response, abort, current_app, g, request
from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, JPEGBaseline8Bit
from werkzeug.exceptions import HTTPException

from dicomnode.find import response
from dicomnode.ingest import Incoming, Outcome
from storage.audit import MINOR_FAILURE, SUCCESS
from storage.keys import Level
from storage.query import Query, QueryError
from viewer import frames as viewer_frames
from viewer.auth import audit
from viewer.framestore import Layout
from viewer.multipart import MultipartError, boundary_of
from viewer.params import whole
from viewer.readaudit import read
from viewer.stow import announced, stream_parts
from viewer.uids import exact_uid

bp = Blueprint("dicomweb", __name__, url_prefix="/dicom-web")
JSON = "application/dicom+json"
# Attributes returned when a client names none (PS3.18 Table 10.6.3-3 and -4).
DEFAULT_KEYS = {
    Level.STUDY: (
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "ModalitiesInStudy",
        "ReferringPhysicianName",
        "PatientName",
        "PatientID",
        "StudyInstanceUID",
        "StudyID",
        "NumberOfStudyRelatedSeries",
        "NumberOfStudyRelatedInstances",
    ),
    Level.SERIES: (
        "Modality",
        "SeriesDescription",
        "SeriesNumber",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
        "StudyInstanceUID",
    ),
    Level.IMAGE: (
        "SOPClassUID",
        "SOPInstanceUID",
        "InstanceNumber",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "AvailableTransferSyntaxUID",
    ),
}
_CONTROL = {"includefield", "limit", "offset", "fuzzymatching"}
CHUNK_BYTES = 1 << 20  # a stored file is sent in pieces of this size
# Most frame numbers one WADO-RS frames request may list (as given, duplicates
# counted): the viewer's own /raw limit. The frames are streamed one at a time.
FRAME_LIST = viewer_frames.REQUEST_FRAMES
FRAME_NUMBER = re.compile("[1-9][0-9]{0,8}")  # ASCII only: int() takes "١", "+1", " 1", "1_0"
FRAMES_WRONG = "frame numbers: from 1, in digits 0-9 without leading zeros, separated by commas"
# Binary values above this size are bulk data in metadata: never read.
BULK_BYTES = 1024
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _keyword(name: str) -> str:
    """A query parameter names an attribute by keyword or by tag (gggg eeee)."""
    if tag_for_keyword(name) is not None:
        return name
    try:
        keyword = keyword_for_tag(int(name, 16))
    except ValueError:
        keyword = ""
    if not keyword:
        abort(400, description=f"{name} is not a DICOM attribute")
    return keyword


def _identifier(level: Level, fixed: dict[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level.value
    keys = dict.fromkeys(DEFAULT_KEYS[level], "")
    for name in request.args.getlist("includefield"):
        for part in name.split(","):
            if part and part != "all":
                keys.setdefault(_keyword(part), "")
    for name, value in request.args.items():
        if name not in _CONTROL:
            keys[_keyword(name)] = value
    keys.update(fixed)
    for keyword, value in keys.items():
        setattr(ds, keyword, value or None)
    return ds


def _search(level: Level, **fixed: str) -> Any:
    identifier = _identifier(level, fixed)
    keys = {
        e.keyword: "" if e.value is None else str(e.value)
        for e in identifier
        if e.keyword != "QueryRetrieveLevel"
    }
    try:
        limit = whole(request.args, "limit", 0) or None
        offset = whole(request.args, "offset", 0)
        rows = list(
            current_app.extensions["archive"].index.find(
                Query(level=level, keys=keys, limit=limit, offset=offset, issuers=g.user.sees)
            )
        )
    except (QueryError, ValueError) as exc:
        abort(400, description=str(exc))
    ae = current_app.config["NODE_CONFIG"].ae_title
    body = [response(identifier, row, level.value, ae).to_json_dict() for row in rows]
    return Response(_json(body), mimetype=JSON) if body else Response(status=204)


def _json(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)


@bp.get("/studies")
def search_studies() -> Any:
    return _search(Level.STUDY)


@bp.get("/studies/<study>/series")
def search_series(study: str) -> Any:
    return _search(Level.SERIES, **_path(study=study))


@bp.get("/series")
def search_all_series() -> Any:
    return _search(Level.SERIES)


@bp.get("/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str) -> Any:
    return _search(Level.IMAGE, **_path(study=study, series=series))


@bp.get("/instances")
def search_all_instances() -> Any:
    return _search(Level.IMAGE)


_KEYWORDS = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}


def _path(**given: str) -> dict[str, str]:
    """The UIDs of the path as query keys, each one exact UID (else 400,
    `viewer.uids`): never ``*``, a ``\\`` list or a wildcard to match with."""
    return {_KEYWORDS[part]: exact_uid(uid, _KEYWORDS[part]) for part, uid in given.items()}


def _instance(study: str, series: str, instance: str) -> str:
    """The path's instance, if it is in the path's study and series (else 404)."""
    return _instances(**_path(study=study, series=series, instance=instance))[0]


def _instances(**keys: str) -> list[str]:
    """SOP Instance UIDs under ``keys`` (exact UIDs from `_path`: matched by
    equality); 404 when none."""
    rows = current_app.extensions["archive"].index.find(
        Query(level=Level.IMAGE, keys={**keys, "SOPInstanceUID": keys.get("SOPInstanceUID", "")})
    )
    uids = [r["SOPInstanceUID"] for r in rows]
    if not uids:
        abort(404, description="nothing stored matches")
    return uids


def _open_blob(archive: Any, uid: str) -> BinaryIO | None:
    """The instance's stored file, open and nothing read yet; from an object
    store (no partial reads there) its bytes. None if nothing is stored."""
    key = archive.index.instance_blob(uid)
    if key is None:
        return None
    path_of = getattr(archive.blobs, "path", None)
    return open(path_of(key), "rb") if path_of else BytesIO(archive.blobs.read(key))


def _multipart(uids: list[str]) -> Response:
    """The stored files, one part each, streamed in chunks: memory stays a
    chunk per request however large the run (one object from an object store)."""
    boundary = secrets.token_hex(16)
    archive = current_app.extensions["archive"]  # the parts are sent after the request

    def parts() -> Iterator[bytes]:
        for uid in uids:
            try:
                source = _open_blob(archive, uid)
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
    uids = _instances(**_path(study=study))
    read(study, "DICOMweb retrieve study")
    return _multipart(uids)


@bp.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    uids = _instances(**_path(study=study, series=series))
    read(study, "DICOMweb retrieve series")
    return _multipart(uids)


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    uid = _instance(study, series, instance)
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
    found = viewer_frames.layout_or_abort(_instance(study, series, instance))
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
    answer = viewer_frames.frame(_instance(study, series, instance), int(number))
    read(study, "DICOMweb rendered")
    return answer


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
def thumbnail(study: str, series: str, instance: str) -> Response:
    answer = viewer_frames.thumbnail(_instance(study, series, instance))
    read(study, "DICOMweb thumbnail")
    return answer


def _metadata(uids: list[str]) -> Response:
    base = request.url_root.rstrip("/")
    out = []
    for uid in uids:
        body = _header_json(uid)
        if body is None:
            continue
        body["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base}/api/instances/{uid}/frames/1"}
        out.append(body)
    return Response(_json(out), mimetype=JSON)


def _header_json(uid: str) -> dict[str, Any] | None:
    """The instance's attributes as DICOM JSON, read from the stored file up
    to Pixel Data; binary values over ``BULK_BYTES`` (an overlay, a
    waveform, a document) are left unread and named bulk data, so a large
    instance costs its header's memory only."""
    try:
        source = _open_blob(current_app.extensions["archive"], uid)
    except FileNotFoundError:  # removed since the query: `dicomnode check` tells
        return None
    if source is None:
        return None
    bulk: dict[str, Any] = {}
    with source:
        ds = dcmread(source, stop_before_pixels=True, defer_size=BULK_BYTES)
        for tag in list(ds.keys()):
            element = ds.get_item(tag, keep_deferred=True)
            vrs = str(element.VR or _vr(tag)).split(" or ")
            if element.value is None and element.length > BULK_BYTES and BULK_VRS & set(vrs):
                vr = "OW" if "OW" in vrs else vrs[0]
                bulk[f"{int(tag):08X}"] = {"vr": vr, "BulkDataURI": ""}
                del ds[tag]
        body = ds.to_json_dict(
            bulk_data_threshold=BULK_BYTES, bulk_data_element_handler=lambda _: ""
        )
    return body | bulk


def _vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:  # private or unknown: unknown
        return "UN"


@bp.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    answer = _metadata(_instances(**_path(study=study)))
    read(study, "DICOMweb metadata study")
    return answer


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    answer = _metadata([_instance(study, series, instance)])
    read(study, "DICOMweb metadata instance")
    return answer


@bp.post("/studies")
def store() -> Any:
    """STOW-RS: every part through the ingest; reasons for what failed.

    The patients' issuer is the account's hospital, exactly as its DIMSE
    devices' ``[[remote_ae]]`` issuer, so a child sent both ways is one
    patient. An account without one may not store (else its uploads would
    make patients of their own).
    """
    issuer = g.user.issuer
    if not issuer:
        audit(
            "access-denied",
            g.user.username,
            obj=request.endpoint or "",
            detail="STOW-RS by an account without a hospital (issuer)",
            outcome=MINOR_FAILURE,
        )
        abort(
            403,
            description=f"the account {g.user.username!r} has no hospital (issuer), so its "
            "uploads cannot be assigned to patients; an administrator sets one with: "
            f'dicomnode user issuer {g.user.username} --issuer "Hospital name"',
        )
    boundary = boundary_of(request.headers.get("Content-Type", ""))
    if boundary is None:
        abort(415, description='send multipart/related; type="application/dicom"')
    ingestor = current_app.extensions["ingestor"]
    config = current_app.config["NODE_CONFIG"]
    stored: list[tuple[Any, Any, int, str]] = []
    failed: list[tuple[Any, Any, int, str]] = []
    seen: set[str] = set()
    spool = getattr(ingestor, "spool", None)
    sinks = stream_parts(
        request.stream,
        boundary,
        spool,
        config.spool_threshold_mb << 20,
        config.max_instance_mb << 20,
    )
    try:
        for part in sinks:
            if part.problem:
                failed.append((None, None, part.status, part.problem))
                continue
            uids = announced(part.data, part.syntax)
            if uids.sop_instance and uids.sop_instance in seen:
                continue  # sent twice in one request: one instance, answered once
            seen.add(uids.sop_instance or "")
            result = ingestor.ingest(
                Incoming(
                    part.data,
                    part.syntax,
                    issuer=issuer,
                    source=f"STOW-RS {g.user.username}",
                )
            )
            entry = (uids.sop_class, uids.sop_instance, result.status, result.comment)
            (failed if result.outcome is Outcome.REJECTED else stored).append(entry)
    except MultipartError as exc:
        _audit_stow(stored, failed, f"body refused: {exc}")
        abort(400, description=f"STOW-RS body: {exc} ({len(stored)} stored before it)")
    except HTTPException as exc:  # the body bound, reached while streaming
        _audit_stow(stored, failed, f"body refused: {exc.code}")
        raise
    _audit_stow(stored, failed)
    answer = Dataset()
    # A warning (held in quarantine for review) is WarningReason on its item,
    # and the answer is 202 as for any partial success (PS3.18 10.5.3).
    answer.ReferencedSOPSequence = [_sop(c, i, warning=status) for c, i, status, _ in stored]
    if failed:
        answer.FailedSOPSequence = [_sop(c, i, status) for c, i, status, _ in failed]
    warned = any(status for _, _, status, _ in stored)
    status = 200 if not (failed or warned) else (202 if stored else 409)
    return Response(_json(answer.to_json_dict()), status=status, mimetype=JSON)


def _audit_stow(stored: list, failed: list, refused: str = "") -> None:
    """Who stored what, like a DIMSE association's record; also when the
    body was refused part-way, after what came before it was stored."""
    detail = f"{len(stored)} stored, {len(failed)} failed" + (f", {refused}" if refused else "")
    outcome = MINOR_FAILURE if failed or refused else SUCCESS
    audit("stow", g.user.username, detail=detail, outcome=outcome)


def _sop(
    sop_class: Any, sop_instance: Any, failure: int | None = None, *, warning: int = 0
) -> Dataset:
    item = Dataset()
    if sop_class:
        item.ReferencedSOPClassUID = sop_class
    if sop_instance:
        # The original UID, as the sender knows it; the archive's is remapped.
        item.ReferencedSOPInstanceUID = sop_instance
    if failure is not None:
        item.FailureReason = failure
    if warning:
        item.WarningReason = warning
    return item
