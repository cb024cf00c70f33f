"""What every DICOMweb resource shares: the path's UIDs as exact keys, the
instances they name, the stored file, the request's Accept ranges, DICOM JSON."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, BinaryIO

from flask import abort, request

from storage.keys import Level
from storage.query import Query
from viewer import services
from viewer.dicomweb.negotiate import MediaRange, NotAcceptable, parse
from viewer.uids import exact_uid

JSON = "application/dicom+json"


def json_text(body: Any) -> str:
    return json.dumps(body, ensure_ascii=False)


_KEYWORDS = {
    "study": "StudyInstanceUID",
    "series": "SeriesInstanceUID",
    "instance": "SOPInstanceUID",
}


def path_keys(**given: str) -> dict[str, str]:
    """The UIDs of the path as query keys, each one exact UID (else 400,
    `viewer.uids`): never ``*``, a ``\\`` list or a wildcard to match with."""
    return {_KEYWORDS[part]: exact_uid(uid, _KEYWORDS[part]) for part, uid in given.items()}


def one_instance(study: str, series: str, instance: str) -> str:
    """The path's instance, if it is in the path's study and series (else 404)."""
    return instances_of(**path_keys(study=study, series=series, instance=instance))[0]


def instances_of(**keys: str) -> list[str]:
    """SOP Instance UIDs under ``keys`` (exact UIDs from `path_keys`:
    matched by equality); 404 when none."""
    return [r["SOPInstanceUID"] for r in instance_rows(keys)]


def instance_rows(keys: dict[str, str], *fields: str) -> list[dict[str, Any]]:
    """Index rows of the instances under ``keys`` (exact UIDs), with their
    SOP Instance UID and ``fields``; 404 when none."""
    wanted = {"SOPInstanceUID": keys.get("SOPInstanceUID", ""), **dict.fromkeys(fields, "")}
    query = Query(level=Level.IMAGE, keys={**keys, **wanted})
    rows = list(services.archive().index.find(query))
    if not rows:
        abort(404, description="nothing stored matches")
    return rows


def accept_ranges() -> list[MediaRange]:
    """The request's Accept header (`negotiate.parse`): 400 beyond its
    bounds, 406 when unreadable, never a 500."""
    try:
        return parse(request.headers.get("Accept"))
    except NotAcceptable as exc:
        abort(exc.status, description=str(exc))


def json_acceptable(what: str) -> None:
    """406 unless the Accept header (read by `negotiate`, bounded) allows
    application/dicom+json: no header, ``*/*``, ``application/*`` and
    ``application/json`` do; a multipart range does not (DICOM XML, the
    multipart form, is not made). Checked before anything is read or stored."""
    for r in accept_ranges():
        if not r.multipart and (r.matches(JSON) or r.media == "application/json"):
            return
    abort(406, description=f"{what} is sent as application/dicom+json only")


def open_blob(archive: Any, uid: str) -> BinaryIO | None:
    """The instance's stored file, open and nothing read yet; from an object
    store (no partial reads there) its bytes. None if nothing is stored, or
    the file went since the index was read (`dicomnode check` tells)."""
    key = archive.index.instance_blob(uid)
    if key is None:
        return None
    path_of = getattr(archive.blobs, "path", None)
    try:
        return open(path_of(key), "rb") if path_of else BytesIO(archive.blobs.read(key))
    except FileNotFoundError:
        return None


def stored_or_404(uid: str) -> BinaryIO:
    """`open_blob` of the request's archive; 404 when there is no file."""
    source = open_blob(services.archive(), uid)
    if source is None:
        abort(404, description="the instance's file is missing")
    return source
