"""DICOMweb (PS3.18) under /dicom-web: QIDO-RS, WADO-RS, STOW-RS.

QIDO-RS uses the C-FIND translation (`dicomnode.find`) and so the shared
matching in `storage`; WADO-RS returns the stored files as they are; STOW-RS
goes through the one ingest pipeline, de-identification included. Clients
authenticate with the web session or HTTP Basic (for OHIF, Weasis, scripts).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from io import BytesIO
from typing import Any

from flask import Blueprint, Response, abort, current_app, g, request
from pydicom import dcmread
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.uid import JPEGBaseline8Bit

from dicomnode.find import response
from dicomnode.importer import split_file
from dicomnode.ingest import Incoming, Outcome
from storage.audit import MINOR_FAILURE, SUCCESS
from storage.keys import Level
from storage.query import Query, QueryError
from viewer.auth import audit
from viewer.params import whole

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
                Query(level=level, keys=keys, limit=limit, offset=offset)
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
    return _search(Level.SERIES, StudyInstanceUID=study)


@bp.get("/series")
def search_all_series() -> Any:
    return _search(Level.SERIES)


@bp.get("/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str) -> Any:
    return _search(Level.IMAGE, StudyInstanceUID=study, SeriesInstanceUID=series)


@bp.get("/instances")
def search_all_instances() -> Any:
    return _search(Level.IMAGE)


def _instances(**keys: str) -> list[str]:
    rows = current_app.extensions["archive"].index.find(
        Query(level=Level.IMAGE, keys={**keys, "SOPInstanceUID": keys.get("SOPInstanceUID", "")})
    )
    uids = [r["SOPInstanceUID"] for r in rows]
    if not uids:
        abort(404, description="nothing stored matches")
    return uids


def _multipart(uids: list[str]) -> Response:
    """The stored files, one part each, read one at a time."""
    boundary = secrets.token_hex(16)
    archive = current_app.extensions["archive"]

    def parts() -> Iterator[bytes]:
        for uid in uids:
            data = archive.read(uid)
            if data is None:
                continue
            yield (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
            yield data
            yield b"\r\n"
        yield f"--{boundary}--\r\n".encode()

    mimetype = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return Response(parts(), headers={"Content-Type": mimetype})


@bp.get("/studies/<study>")
def retrieve_study(study: str) -> Response:
    uids = _instances(StudyInstanceUID=study)
    if uids:
        audit("study-view", g.user.username, obj=study, detail="DICOMweb retrieve")
    return _multipart(uids)


@bp.get("/studies/<study>/series/<series>")
def retrieve_series(study: str, series: str) -> Response:
    return _multipart(_instances(StudyInstanceUID=study, SeriesInstanceUID=series))


@bp.get("/studies/<study>/series/<series>/instances/<instance>")
def retrieve_instance(study: str, series: str, instance: str) -> Response:
    return _multipart(
        _instances(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)
    )


@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<frames>")
def retrieve_frames(study: str, series: str, instance: str, frames: str) -> Response:
    """Frames as stored: JPEG fragments as they are, native frames as bytes."""
    uid = _instances(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)[0]
    ds = dcmread(BytesIO(current_app.extensions["archive"].read(uid)))
    count = int(ds.get("NumberOfFrames") or 1)
    try:
        wanted = [int(n) for n in frames.split(",")]
    except ValueError:
        abort(400, description="frames: comma-separated numbers from 1")
    if any(not 1 <= n <= count for n in wanted):
        abort(404, description=f"frames are numbered 1 to {count}")
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        stored = list(generate_frames(ds.PixelData, number_of_frames=count))
        media = {JPEGBaseline8Bit: "image/jpeg"}.get(syntax, "application/octet-stream")
        payloads = [stored[n - 1] for n in wanted]
    else:
        size = len(ds.PixelData) // count
        media = "application/octet-stream"
        payloads = [ds.PixelData[(n - 1) * size : n * size] for n in wanted]
    boundary = secrets.token_hex(16)
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: {media}; transfer-syntax={syntax}\r\n\r\n".encode()
            + payload
            + b"\r\n"
            for payload in payloads
        )
        + f"--{boundary}--\r\n".encode()
    )
    return Response(
        body, headers={"Content-Type": f'multipart/related; type="{media}"; boundary={boundary}'}
    )


@bp.get("/studies/<study>/series/<series>/instances/<instance>/rendered")
@bp.get("/studies/<study>/series/<series>/instances/<instance>/frames/<int:number>/rendered")
def rendered(study: str, series: str, instance: str, number: int = 1) -> Response:
    from viewer.frames import frame

    return frame(instance, number)


@bp.get("/studies/<study>/series/<series>/instances/<instance>/thumbnail")
def thumbnail(study: str, series: str, instance: str) -> Response:
    from viewer.frames import thumbnail as small

    return small(instance)


def _metadata(uids: list[str]) -> Response:
    archive, base = current_app.extensions["archive"], request.url_root.rstrip("/")
    out = []
    for uid in uids:
        ds = dcmread(BytesIO(archive.read(uid)), stop_before_pixels=True)
        body = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "")
        body["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base}/api/instances/{uid}/frames/1"}
        out.append(body)
    return Response(_json(out), mimetype=JSON)


@bp.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    return _metadata(_instances(StudyInstanceUID=study))


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    return _metadata(
        _instances(StudyInstanceUID=study, SeriesInstanceUID=series, SOPInstanceUID=instance)
    )


def _parts(body: bytes, content_type: str) -> list[bytes]:
    """The payloads of a multipart/related body, byte for byte (RFC 2046)."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/related") or not match:
        abort(415, description='send multipart/related; type="application/dicom"')
    delimiter = b"--" + match.group(1).encode()
    parts = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        _, _, payload = chunk.partition(b"\r\n\r\n")
        parts.append(payload[:-2] if payload.endswith(b"\r\n") else payload)
    return parts


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
    ingestor = current_app.extensions["ingestor"]
    stored, failed = [], []
    for part in _parts(request.get_data(), request.headers.get("Content-Type", "")):
        try:
            data, syntax = split_file(part)
        except Exception:
            failed.append((None, None, 0xC000, "not a DICOM Part 10 file"))
            continue
        header = dcmread(BytesIO(part), stop_before_pixels=True, force=True)
        result = ingestor.ingest(
            Incoming(data, syntax, issuer=issuer, source=f"STOW-RS {g.user.username}")
        )
        entry = (
            header.get("SOPClassUID"),
            header.get("SOPInstanceUID"),
            result.status,
            result.comment,
        )
        (failed if result.outcome is Outcome.REJECTED else stored).append(entry)
    answer = Dataset()
    # A warning (held in quarantine for review) is WarningReason on its item,
    # and the answer is 202 as for any partial success (PS3.18 10.5.3).
    answer.ReferencedSOPSequence = [_sop(c, i, warning=status) for c, i, status, _ in stored]
    if failed:
        answer.FailedSOPSequence = [_sop(c, i, status) for c, i, status, _ in failed]
    # Who stored what, like a DIMSE association's record.
    audit(
        "stow",
        g.user.username,
        detail=f"{len(stored)} stored, {len(failed)} failed",
        outcome=MINOR_FAILURE if failed else SUCCESS,
    )
    warned = any(status for _, _, status, _ in stored)
    status = 200 if not (failed or warned) else (202 if stored else 409)
    return Response(_json(answer.to_json_dict()), status=status, mimetype=JSON)


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
