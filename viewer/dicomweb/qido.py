"""QIDO-RS (PS3.18 10.6, query parameters 8.3.4): searches through the shared
matching in `storage`, so a key matches here exactly as in C-FIND
(`dicomnode.dimse.find`): universal, single value, wildcards, DA/TM ranges, lists.

What the standard leaves to the origin server, and what the node does:

- Lists: ``\\`` between values as in a C-FIND identifier
  (``ModalitiesInStudy=US\\XA``); for UIDs also commas (PS3.18 8.3.4.1
  uid-list-match); a parameter given more than once is one list.
- ``includefield``: by keyword or tag, comma lists, repeated; ``all`` is every
  attribute the index keeps for the level and its parents, with the level's
  computed ones (counts, ModalitiesInStudy). An attribute of the data
  dictionary the index does not keep, or one of a lower level, is left out
  and named in a Warning (as C-FIND answers an unsupported optional key); a
  name that is no attribute at all is a 400.
- ``fuzzymatching=true`` (and ``emptyvaluematching``, ``multiplevaluematching``):
  not supported, literal matching with the standard's Warning.
- No match: 200 and an empty list (current PS3.18; 204 was earlier editions').
- Paging: at most ``MAX_RESULTS`` per response whatever ``limit`` asks; when
  more matches remain, the Warning of 8.3.4.4.1 says so.
"""

from __future__ import annotations

import re
from typing import Any

from flask import Response, abort, g, request
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset

from dicomnode.dimse.find import response
from storage.keys import ATTRIBUTES, COMPUTED, Level
from storage.query import Query, QueryError
from viewer import services
from viewer.address import public_root
from viewer.dicomweb import PREFIX, bp
from viewer.dicomweb.common import JSON, json_acceptable, json_text, path_keys
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
# A Study's Instances search (PS3.18 10.6.3.3.3) also returns the series'
# attributes of Table 10.6.3-4 the index keeps (the count is per series, so
# not at this level).
STUDY_INSTANCES_KEYS = tuple(
    k for k in DEFAULT_KEYS[Level.SERIES] if k in ATTRIBUTES and k not in DEFAULT_KEYS[Level.IMAGE]
)
# The most matches one response carries, whatever ``limit`` asks (a client
# pages on with ``offset``): bounds the memory one search takes.
MAX_RESULTS = 10_000
NOT_SUPPORTED = {
    "fuzzymatching": "The fuzzymatching parameter is not supported. "
    "Only literal matching has been performed.",
    "emptyvaluematching": "The emptyvaluematching parameter is not supported. "
    "Empty Value Matching has not been performed.",
    "multiplevaluematching": "The multiplevaluematching parameter is not supported. "
    "Multiple Value Matching has not been performed.",
}
MORE = "There are additional results that can be requested"
_CONTROL = {"includefield", "limit", "offset", *NOT_SUPPORTED}
# An attribute path of PS3.18 8.3.4.1 (tags or keywords, "." into sequences).
_PATH = re.compile(r"[A-Za-z0-9]{1,64}(\.[A-Za-z0-9]{1,64}){0,7}")


def _keyword(name: str) -> str | None:
    """The keyword a query parameter names by keyword or by tag (gggg eeee);
    None for an attribute the node has no keyword for (a private tag, a path
    into a sequence), which is then unsupported; 400 for a name that is not
    an attribute at all."""
    if tag_for_keyword(name) is not None:
        return name
    if re.fullmatch(r"[0-9A-Fa-f]{8}", name):
        return keyword_for_tag(int(name, 16)) or None
    if "." in name and _PATH.fullmatch(name):
        return None
    abort(400, description=f"{name[:64]} is not a DICOM attribute")


def supported(level: Level) -> frozenset[str]:
    """What a search at ``level`` can match and return: the indexed
    attributes of the level and its parents, and the level's computed keys."""
    stored = {a.keyword for a in ATTRIBUTES.values() if a.level.depth <= level.depth}
    return frozenset(stored | {k for k, at in COMPUTED.items() if at is level})


class _Search:
    """One request's keys: what to match, what to return, what to warn of."""

    def __init__(self, level: Level, fixed: dict[str, str], extra: tuple[str, ...] = ()) -> None:
        self.level = level
        self.allowed = supported(level)
        self.ignored: list[str] = []
        self.returned = dict.fromkeys((*DEFAULT_KEYS[level], *extra), "")
        self._includes()
        self._matches()
        self.returned.update(fixed)

    def _ignore(self, name: str, keyword: str | None) -> bool:
        """True (and noted for the Warning) if ``keyword`` is not supported."""
        if keyword is not None and keyword in self.allowed:
            return False
        if name not in self.ignored:
            self.ignored.append(name)
        return True

    def _includes(self) -> None:
        for value in request.args.getlist("includefield"):
            for name in filter(None, (part.strip() for part in value.split(","))):
                if name == "all":
                    self.returned.update(dict.fromkeys(sorted(self.allowed), ""))
                    continue
                keyword = _keyword(name)
                if not self._ignore(name, keyword):
                    self.returned.setdefault(str(keyword), "")

    def _matches(self) -> None:
        for name in request.args:
            if name in _CONTROL:
                continue
            keyword = _keyword(name)
            if self._ignore(name, keyword):
                continue
            values = request.args.getlist(name)
            if dictionary_VR(str(keyword)) == "UI":  # PS3.18 uid-list-match: commas
                values = [v for value in values for v in value.split(",")]
            self.returned[str(keyword)] = "\\".join(v.strip() for v in values)

    def identifier(self) -> Dataset:
        """The keys as a C-FIND identifier (values come from the index)."""
        ds = Dataset()
        ds.QueryRetrieveLevel = self.level.value
        for keyword in self.returned:
            setattr(ds, keyword, None)
        return ds


def _flag(name: str) -> bool:
    value = request.args.get(name, "false").strip().lower()
    if value not in ("true", "false"):
        abort(400, description=f"{name}: true or false")
    return value == "true"


def _warning(text: str) -> str:
    """A Warning value of PS3.18 (299, the service, the standard's words)."""
    return f'299 {public_root()}{PREFIX.strip("/")}: "{text}"'


def _search(level: Level, fixed: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> Any:
    json_acceptable("a search's answer")
    keys = _Search(level, fixed or {}, extra)
    warnings = [_warning(text) for name, text in NOT_SUPPORTED.items() if _flag(name)]
    asked = whole(request.args, "limit", 0)
    offset = whole(request.args, "offset", 0)
    most = min(asked, MAX_RESULTS) if asked else MAX_RESULTS
    query = Query(level, keys.returned, limit=most + 1, offset=offset, issuers=g.user.sees)
    try:
        rows = list(services.archive().index.find(query))
    except (QueryError, ValueError) as exc:
        abort(400, description=str(exc))
    if len(rows) > most:
        rows = rows[:most]
        warnings.append(_warning(MORE))
    if keys.ignored:
        names = ", ".join(keys.ignored)
        warnings.append(_warning(f"Not supported here, so ignored: {names}"))
    identifier = keys.identifier()
    ae = services.config().ae_title
    body = [response(identifier, row, level.value, ae).to_json_dict() for row in rows]
    answer = Response(json_text(body), mimetype=JSON)
    if warnings:
        answer.headers["Warning"] = ", ".join(warnings)
    return answer


@bp.get("/studies")
def search_studies() -> Any:
    return _search(Level.STUDY)


@bp.get("/studies/<study>/series")
def search_series(study: str) -> Any:
    return _search(Level.SERIES, path_keys(study=study))


@bp.get("/series")
def search_all_series() -> Any:
    return _search(Level.SERIES)


@bp.get("/studies/<study>/instances")
def search_study_instances(study: str) -> Any:
    """PS3.18 10.6.1 Study's Instances: the instance defaults and the series'."""
    return _search(Level.IMAGE, path_keys(study=study), STUDY_INSTANCES_KEYS)


@bp.get("/studies/<study>/series/<series>/instances")
def search_instances(study: str, series: str) -> Any:
    return _search(Level.IMAGE, path_keys(study=study, series=series))


@bp.get("/instances")
def search_all_instances() -> Any:
    return _search(Level.IMAGE)
