"""DICOMweb (PS3.18) under /dicom-web, one module a resource.

`qido` searches through the C-FIND translation (`dicomnode.dimse.find`), so both
doors match alike; `wado` sends instances, frames, rendered and thumbnail
images in what the Accept header allows (`negotiate`), as stored when that is
acceptable and transcoded one instance or frame at a time otherwise
(`dicomnode.media.transcode`, `frameparts`); `metadata` and `bulkdata` answer the
headers and the values they leave out; `stowrs` stores through the one
ingest pipeline, de-identification included. Clients authenticate with the
web session or HTTP Basic (OHIF, Weasis, scripts).

A UID in a path is one exact UID (`viewer.uids`), never a matching key, and
an instance is served only under its own study and series. Nothing holds an
instance whole: files go in chunks, frames one at a time at the offsets the
viewer's layout found (`viewer.framestore`). Every read is one "study-view"
audit record (`viewer.readaudit`).
"""

from __future__ import annotations

from flask import Blueprint

PREFIX = "/dicom-web"
bp = Blueprint("dicomweb", __name__, url_prefix=PREFIX)

# The resources register their routes on `bp`.
from viewer.dicomweb import bulkdata, metadata, qido, stowrs, wado  # noqa: E402

__all__ = ["PREFIX", "bp", "bulkdata", "metadata", "qido", "stowrs", "wado"]
