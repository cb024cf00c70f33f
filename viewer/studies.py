"""Study browser and the study page (series, viewports, cine)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, g, render_template, request
from pydicom.uid import UID

from storage.keys import Level
from storage.query import Query, QueryError
from viewer import services
from viewer.auth import audit
from viewer.params import whole
from viewer.permissions import allowed
from viewer.planning.zscores import STRUCTURES
from viewer.scope import issuers

bp = Blueprint("studies", __name__)
PAGE_SIZE = 25
COMPARED = 8  # the child's other studies offered side by side, newest first
WILDCARDS = frozenset("*?\\")  # a key holding one would match other children
# Sort choices of the browser: (stored attribute, or None for arrival; descending).
SORTS = {
    "date": ("StudyDate", True),
    "received": (None, True),
    "hospital": ("IssuerOfPatientID", False),
    "pseudonym": ("PatientID", False),
}
STUDY_KEYS = (
    "StudyInstanceUID",
    "PatientID",
    "IssuerOfPatientID",
    "PatientSex",
    "PatientAge",
    "PatientWeight",
    "PatientSize",
    "StudyDate",
    "StudyDescription",
    "ModalitiesInStudy",
    "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances",
    "LastReceived",
    "FirstInstanceUID",
)


def _find(level: Level, keys: dict[str, str], **options: Any) -> list:
    """Matching records of the account's hospitals only (`viewer.scope`)."""
    query = Query(level=level, keys=keys, issuers=issuers(), **options)
    return list(services.archive().index.find(query))


def search_keys(args: Any) -> dict[str, str]:
    """Form fields to matching keys (PS3.4 rules; free text as a substring)."""
    keys = dict.fromkeys(STUDY_KEYS, "")
    if pseudonym := args.get("pseudonym", "").strip():
        keys["PatientID"] = pseudonym if "*" in pseudonym else f"*{pseudonym}*"
    if hospital := args.get("hospital", "").strip():
        keys["IssuerOfPatientID"] = f"*{hospital}*"
    if modality := args.get("modality", "").strip().upper():
        keys["ModalitiesInStudy"] = modality
    low, high = args.get("from", "").replace("-", ""), args.get("to", "").replace("-", "")
    if low or high:
        keys["StudyDate"] = f"{low}-{high}"
    if text := args.get("text", "").strip():
        keys["StudyDescription"] = f"*{text}*"
    return keys


@bp.get("/")
def index() -> Any:
    sort = SORTS.get(request.args.get("sort", "date"), SORTS["date"])
    try:
        page = whole(request.args, "page", 1, least=1)
        rows = _find(
            Level.STUDY,
            search_keys(request.args),
            limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE,
            sort=sort[0],
            descending=sort[1],
        )
    except (QueryError, ValueError) as exc:
        abort(400, description=str(exc))
    return render_template(
        "studies.html",
        rows=rows[:PAGE_SIZE],
        more=len(rows) > PAGE_SIZE,
        page=page,
        args=request.args,
        user=g.user,
    )


@bp.get("/quarantine")
def quarantine() -> Any:
    sees = issuers()
    held = [
        {**row, "kind": UID(row["sopclassuid"]).name if row["sopclassuid"] else ""}
        for row in services.archive().index.quarantined()
        if sees is None or row["issuer"] in sees  # an admin of one hospital: its own
    ]
    return render_template("quarantine.html", held=held, user=g.user)


@bp.get("/forwarding")
def forwarding() -> Any:
    index = services.archive().index
    counts = sorted(index.forwarding.counts().items())
    waiting = [job for job in index.forwarding.due_or_later()]
    return render_template("forwarding.html", counts=counts, waiting=waiting, user=g.user)


@bp.get("/studies/<uid>")
def study(uid: str) -> Any:
    studies = _find(Level.STUDY, {**dict.fromkeys(STUDY_KEYS, ""), "StudyInstanceUID": uid})
    if not studies:
        abort(404, description="no such study")
    audit("study-view", g.user.username, obj=uid)
    case = None
    if allowed("cases.case", g.user.role):
        case = services.archive().index.cases.for_study(uid, issuers())
    return render_template(
        "study.html",
        study=studies[0],
        case=case,
        series=thumbnails(_images(uid)),
        others=[
            {**other, "series": thumbnails(_images(other["StudyInstanceUID"]))}
            for other in _others(studies[0])
        ],
        measuring=allowed("measure.measure", g.user.role),
        structures={key: s.label for key, s in STRUCTURES.items()},
        user=g.user,
    )


def _images(uid: str) -> list[dict[str, Any]]:
    return _find(
        Level.IMAGE,
        {
            "StudyInstanceUID": uid,
            "SeriesInstanceUID": "",
            "SOPInstanceUID": "",
            "InstanceNumber": "",
            "NumberOfFrames": "",
            "Modality": "",
            "SeriesDescription": "",
            "SeriesNumber": "",
        },
    )


def _others(study: dict[str, Any]) -> list[dict[str, Any]]:
    """The same pseudonymous child's other studies the account may see (its
    pseudonym at the same hospital), newest first: the earlier imaging a
    cardiologist sets beside this one."""
    pseudonym, issuer = study.get("PatientID") or "", study.get("IssuerOfPatientID") or ""
    if not pseudonym or WILDCARDS & set(pseudonym + issuer):
        return []
    keys = {**dict.fromkeys(STUDY_KEYS, ""), "PatientID": pseudonym}
    if issuer:
        keys["IssuerOfPatientID"] = issuer
    rows = _find(Level.STUDY, keys, limit=COMPARED + 1, sort="StudyDate", descending=True)
    return [
        row
        for row in rows
        if row["StudyInstanceUID"] != study["StudyInstanceUID"]
        and (row.get("IssuerOfPatientID") or "") == issuer
        and row.get("PatientID") == pseudonym
    ][:COMPARED]


def thumbnails(images: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What the series list shows, in series then instance order: each
    multi-frame instance (a run) on its own, so every run of a series can be
    played and measured; a series' single-frame instances together as one
    stack; a report series as one line."""
    series: dict[str, list[dict[str, Any]]] = {}
    for image in sorted(
        images,
        key=lambda i: (
            i.get("SeriesNumber") or 0,
            i["SeriesInstanceUID"],
            i.get("InstanceNumber") or 0,
            i["SOPInstanceUID"],
        ),
    ):
        series.setdefault(image["SeriesInstanceUID"], []).append(image)
    shown: list[dict[str, Any]] = []
    for members in series.values():
        runs = [i for i in members if int(i.get("NumberOfFrames") or 1) > 1]
        stack = [i for i in members if int(i.get("NumberOfFrames") or 1) <= 1]
        for number, run in enumerate(runs, 1):
            shown.append(
                {**run, "instances": [run["SOPInstanceUID"]], "run": number, "runs": len(runs)}
            )
        if stack:
            entry = {**stack[0], "instances": [i["SOPInstanceUID"] for i in stack]}
            shown.append({**entry, "NumberOfFrames": None, "run": None, "runs": len(runs)})
    return shown
