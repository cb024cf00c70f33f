"""QIDO-RS: searches through the C-FIND translation (`dicomnode.find`) and so
the shared matching in `storage`."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, current_app, g, request
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dicomnode.find import response
from storage.keys import Level
from storage.query import Query, QueryError
from viewer.dicomweb import bp
from viewer.dicomweb.common import JSON, json_text, path_keys
from viewer.params import whole

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
                Query(level=level, keys=keys, limit=limit, offset=offset, issuers=g.user.sees)
            )
        )
    except (QueryError, ValueError) as exc:
        abort(400, description=str(exc))
    ae = current_app.config["NODE_CONFIG"].ae_title
    body = [response(identifier, row, level.value, ae).to_json_dict() for row in rows]
    return Response(json_text(body), mimetype=JSON) if body else Response(status=204)


@bp.get("/studies")
def search_studies() -> Any:
    return _search(Level.STUDY)


@bp.get("/studies/<study>/series")
def search_series(study: str) -> Any:
    return _search(Level.SERIES, **path_keys(study=study))


@bp.get("/series")
def search_all_series() -> Any:
    return _search(Level.SERIES)


@bp.get("/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str) -> Any:
    return _search(Level.IMAGE, **path_keys(study=study, series=series))


@bp.get("/instances")
def search_all_instances() -> Any:
    return _search(Level.IMAGE)
