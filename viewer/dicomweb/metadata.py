"""WADO-RS metadata (PS3.18 §10.4) of a study, a series or an instance: the
stored (de-identified) headers as DICOM JSON, bulk data by reference.

The JSON array is streamed one instance at a time, each read from its file
up to Pixel Data with large values left unread: a study of thousands of
instances costs one header's memory, never the study's. Every binary value
over ``BULK_BYTES``, at any depth, and Pixel Data are given as a
BulkDataURI under /dicom-web (`viewer.dicomweb.bulkdata`), which the same
credentials open.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any, BinaryIO, Literal

from flask import Response
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicomnode.media.elements import kept_deferred
from viewer import services
from viewer.address import public_root
from viewer.dicomweb import bp
from viewer.dicomweb.bulkdata import (
    BULK_BYTES,
    BULK_VRS,
    PIXEL_TAGS,
    bulk_uri,
    instance_root,
)
from viewer.dicomweb.bulkdata import vrs_of as _vrs
from viewer.dicomweb.common import JSON, instance_rows, json_acceptable, open_blob, path_keys
from viewer.framedecode import reference
from viewer.readaudit import read

log = logging.getLogger(__name__)


def _instances(keys: dict[str, str]) -> list[tuple[str, str]]:
    """(series, SOP Instance UID) of every instance under the path's exact
    UIDs; 404 when none."""
    rows = instance_rows({"SeriesInstanceUID": "", **keys})
    return [(r["SeriesInstanceUID"], r["SOPInstanceUID"]) for r in rows]


def _metadata(study: str, found: list[tuple[str, str]], detail: str) -> Response:
    """The JSON array, streamed: ``[``, one instance at a time, ``]``."""
    archive = services.archive()
    root = public_root()
    read(study, detail)

    def body() -> Iterator[str]:
        yield "["
        first = True
        for series, uid in found:
            at = instance_root(root, study, series, uid)
            header = _header_json(archive, uid, at)
            if header is None:
                continue
            yield ("" if first else ",") + json.dumps(header, ensure_ascii=False)
            first = False
        yield "]"

    return Response(body(), mimetype=JSON)


def _header_json(archive: Any, uid: str, at: str) -> dict[str, Any] | None:
    """The instance's attributes as DICOM JSON (see the module); None when
    its file is gone or unreadable (logged without the UID: the rest of the
    study still goes)."""
    source = open_blob(archive, uid)
    if source is None:  # removed since the query: `dicomnode check` tells
        return None
    try:
        with source:
            return header_json(source, at)
    except Exception as exc:  # damaged data raises many kinds
        log.warning("metadata of %s left out (%s)", reference(uid), type(exc).__name__)
        return None


def header_json(source: BinaryIO, at: str) -> dict[str, Any]:
    """DICOM JSON of the file at ``source``, bulk data named under ``at``."""
    ds = dcmread(source, stop_before_pixels=True, defer_size=BULK_BYTES)
    body = _json(ds, at, [])
    pixel = _pixel_tag(ds, source)
    if pixel is not None:
        syntax = ds.file_meta.get("TransferSyntaxUID")
        vr = {0x7FE00008: "OF", 0x7FE00009: "OD"}.get(pixel, "OW")
        encapsulated = syntax is not None and syntax.is_encapsulated
        if pixel == 0x7FE00010 and (encapsulated or int(ds.get("BitsAllocated") or 16) <= 8):
            vr = "OB"
        body[f"{pixel:08X}"] = {"vr": vr, "BulkDataURI": bulk_uri(at, [pixel])}
    return body


def _pixel_tag(ds: Dataset, source: BinaryIO) -> int | None:
    """Which pixel data the file has, if any: reading stopped at its tag.
    A deflated file's position says nothing: an image there has Pixel Data."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_deflated:
        return 0x7FE00010 if "Rows" in ds else None
    tag = source.read(4)
    if len(tag) < 4:
        return None
    order: Literal["little", "big"] = (
        "little" if syntax is None or syntax.is_little_endian else "big"
    )
    found = int.from_bytes(tag[:2], order) << 16 | int.from_bytes(tag[2:], order)
    return found if found in PIXEL_TAGS else None


def _json(ds: Dataset, at: str, path: list[int]) -> dict[str, Any]:
    """DICOM JSON of ``ds`` by pydicom, binary values over ``BULK_BYTES`` as
    BulkDataURIs with their path: deferred top-level ones are never read;
    those inside sequences (read with their sequence) are found by identity
    when pydicom hands them over. A value that cannot be put in JSON (a
    careless sender's) is left out rather than failing the study."""
    bulk: dict[str, Any] = {}
    paths: dict[int, list[int]] = {}
    for tag in list(ds.keys()):
        raw = kept_deferred(ds, tag)
        vrs = _vrs(raw, int(tag))
        deferred = isinstance(raw, RawDataElement) and raw.value is None and raw.length
        if deferred and BULK_VRS & set(vrs):
            vr = "OW" if "OW" in vrs else vrs[0]
            bulk[f"{int(tag):08X}"] = {"vr": vr, "BulkDataURI": bulk_uri(at, [*path, int(tag)])}
            del ds[tag]
        elif "SQ" in vrs:
            _nested(ds, int(tag), [*path, int(tag)], paths)
    body = ds.to_json_dict(
        bulk_data_threshold=BULK_BYTES,
        bulk_data_element_handler=lambda e: bulk_uri(at, paths.get(id(e), [*path, int(e.tag)])),
        suppress_invalid_tags=True,
    )
    return body | bulk


def _nested(ds: Dataset, tag: int, here: list[int], paths: dict[int, list[int]]) -> None:
    """Record the path of every binary element in the items of ``ds[tag]``."""
    try:
        items = ds[tag].value or []
    except Exception:  # unparsable: to_json_dict leaves it out
        return
    for number, item in enumerate(items, 1):
        for element in item:
            where = [*here, number, int(element.tag)]
            if element.VR == "SQ":
                _nested(item, int(element.tag), where, paths)
            elif BULK_VRS & set(str(element.VR).split(" or ")):
                paths[id(element)] = where


@bp.get("/studies/<study>/metadata")
def study_metadata(study: str) -> Response:
    json_acceptable("metadata")
    found = _instances(path_keys(study=study))
    return _metadata(study, found, "DICOMweb metadata study")


@bp.get("/studies/<study>/series/<series>/metadata")
def series_metadata(study: str, series: str) -> Response:
    json_acceptable("metadata")
    found = _instances(path_keys(study=study, series=series))
    return _metadata(study, found, "DICOMweb metadata series")


@bp.get("/studies/<study>/series/<series>/instances/<instance>/metadata")
def instance_metadata(study: str, series: str, instance: str) -> Response:
    json_acceptable("metadata")
    found = _instances(path_keys(study=study, series=series, instance=instance))
    return _metadata(study, found, "DICOMweb metadata instance")
