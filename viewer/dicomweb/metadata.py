"""WADO-RS metadata: the stored headers as DICOM JSON, bulk data by reference."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request
from pydicom import dcmread
from pydicom.datadict import dictionary_VR

from viewer.dicomweb import bp
from viewer.dicomweb.common import JSON, instances_of, json_text, one_instance, open_blob, path_keys
from viewer.readaudit import read

# Binary values above this size are bulk data in metadata: never read.
BULK_BYTES = 1024
BULK_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}


def _metadata(uids: list[str]) -> Response:
    base = request.url_root.rstrip("/")
    out = []
    for uid in uids:
        body = _header_json(uid)
        if body is None:
            continue
        body["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base}/api/instances/{uid}/frames/1"}
        out.append(body)
    return Response(json_text(out), mimetype=JSON)


def _header_json(uid: str) -> dict[str, Any] | None:
    """The instance's attributes as DICOM JSON, read from the stored file up
    to Pixel Data; binary values over ``BULK_BYTES`` (an overlay, a
    waveform, a document) are left unread and named bulk data, so a large
    instance costs its header's memory only."""
    try:
        source = open_blob(current_app.extensions["archive"], uid)
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
    answer = _metadata(instances_of(**path_keys(study=study)))
    read(study, "DICOMweb metadata study")
    return answer


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    answer = _metadata([one_instance(study, series, instance)])
    read(study, "DICOMweb metadata instance")
    return answer
