"""What every DICOMweb resource shares: the path's UIDs as exact keys, the
instances they name, the stored file, DICOM JSON."""

from __future__ import annotations

import json
from io import BytesIO
from typing import Any, BinaryIO

from flask import abort, current_app

from storage.keys import Level
from storage.query import Query
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
    """SOP Instance UIDs under ``keys`` (exact UIDs from `_path`: matched by
    equality); 404 when none."""
    rows = current_app.extensions["archive"].index.find(
        Query(level=Level.IMAGE, keys={**keys, "SOPInstanceUID": keys.get("SOPInstanceUID", "")})
    )
    uids = [r["SOPInstanceUID"] for r in rows]
    if not uids:
        abort(404, description="nothing stored matches")
    return uids


def open_blob(archive: Any, uid: str) -> BinaryIO | None:
    """The instance's stored file, open and nothing read yet; from an object
    store (no partial reads there) its bytes. None if nothing is stored."""
    key = archive.index.instance_blob(uid)
    if key is None:
        return None
    path_of = getattr(archive.blobs, "path", None)
    return open(path_of(key), "rb") if path_of else BytesIO(archive.blobs.read(key))
