"""C-FIND: translate an identifier into a `storage.Query` and rows back.

The matching itself lives in `storage.matching`; this module only knows the
DIMSE side: query levels per information model, requested keys, character
sets of the response, cancellation and the optional result limit, and whose
patients the calling AE may see (`visible_issuers`), which C-MOVE and C-GET
share.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from dicomnode.config import Config
from dicomnode.ingest.validate import status_dataset
from dicomnode.net.models import PATIENT_ROOT_FIND, STUDY_ROOT_FIND
from dicomnode.status import (
    CANCEL,
    FIND_UNABLE_TO_PROCESS,
    IDENTIFIER_DOES_NOT_MATCH,
    PENDING,
    SUCCESS,
)
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query, QueryError

log = logging.getLogger(__name__)

LEVELS: dict[str, set[str]] = {
    PATIENT_ROOT_FIND: {"PATIENT", "STUDY", "SERIES", "IMAGE"},
    STUDY_ROOT_FIND: {"STUDY", "SERIES", "IMAGE"},
}
_NOT_KEYS = {"QueryRetrieveLevel", "SpecificCharacterSet"}


def visible_issuers(config: Config, calling_ae: str) -> frozenset[str] | None:
    """The hospitals whose patients ``calling_ae`` may find and retrieve: its
    [[remote_ae]] entry's ``sees`` (its own issuer unless query_issuers says
    more), all of them (None) for "*". An AE title the table does not list
    (only possible with require_known_ae = false) sees no one: a title is a
    claim anyone can make, so it cannot open any hospital's patients."""
    remote = config.remote(calling_ae)
    return frozenset() if remote is None else remote.sees


def query_level(identifier: Dataset, model: str) -> Level:
    """The identifier's Query/Retrieve Level; QueryError if the model lacks it."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    if level not in LEVELS.get(model, ()):
        raise QueryError(f"query level {level or '(none)'} is not valid for this model")
    return Level(level)


def query_from_identifier(
    identifier: Dataset, model: str, limit: int = 0, issuers: frozenset[str] | None = None
) -> Query:
    """Raise QueryError for a level the model does not have."""
    level = query_level(identifier, model)
    keys: dict[str, str] = {}
    for element in identifier:
        keyword = element.keyword or keyword_for_tag(element.tag)
        if not keyword or keyword in _NOT_KEYS or element.VR == "SQ":
            continue
        value = element.value
        if value is None:
            text = ""
        elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            text = "\\".join(str(v) for v in value)
        else:
            text = str(value)
        keys[keyword] = text
    return Query(level=level, keys=keys, limit=limit or None, issuers=issuers)


def response(identifier: Dataset, row: dict[str, Any], level: str, retrieve_ae: str) -> Dataset:
    """Only the requested keys, with values from the row (empty if unknown)."""
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    non_ascii = False
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in _NOT_KEYS:
            continue
        value: Any = row.get(keyword)
        if keyword == "RetrieveAETitle":
            value = retrieve_ae
        elif keyword == "InstanceAvailability":
            value = "ONLINE"
        if isinstance(value, str) and not value.isascii():
            non_ascii = True
        vr = element.VR if element.VR not in ("UN", None) else dictionary_VR(element.tag)
        if vr == "SQ":
            value = []
        ds.add(DataElement(element.tag, vr, value if value not in ("",) else None))
    if non_ascii:
        # Whatever the query's character set, UTF-8 carries every script.
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def find(
    archive: Archive,
    identifier: Dataset,
    model: str,
    *,
    retrieve_ae: str,
    issuers: frozenset[str] | None,
    limit: int = 0,
    is_cancelled: Any = lambda: False,
) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """The (status, identifier) pairs pynetdicom's C-FIND handler yields.

    ``issuers`` (required: every caller decides) are the hospitals whose
    patients may match, None for all."""
    try:
        query = query_from_identifier(identifier, model, limit, issuers)
    except QueryError as exc:
        yield status_dataset(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    try:
        for row in archive.index.find(query):
            if is_cancelled():
                yield CANCEL, None
                return
            yield PENDING, response(identifier, row, query.level.value, retrieve_ae)
    except QueryError as exc:
        yield status_dataset(IDENTIFIER_DOES_NOT_MATCH, str(exc)), None
        return
    except Exception as exc:
        # pynetdicom would log the traceback, whose text may quote query values.
        log.error("C-FIND failed: %s", type(exc).__name__)
        yield status_dataset(FIND_UNABLE_TO_PROCESS, "unable to process"), None
        return
    yield SUCCESS, None
