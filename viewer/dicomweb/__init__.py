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

from flask import Blueprint

bp = Blueprint("dicomweb", __name__, url_prefix="/dicom-web")

# The resources register their routes on `bp`.
from viewer.dicomweb import bulkdata, metadata, qido, stowrs, wado  # noqa: E402

__all__ = ["bp", "bulkdata", "metadata", "qido", "stowrs", "wado"]
