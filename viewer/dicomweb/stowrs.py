"""STOW-RS (PS3.18 §10.5): every part through the one ingest pipeline,
de-identification included, and an answer by the letter of Annex I.

The answer names what the node holds, never what the sender sent: each
instance under the UIDs it was stored under, with its RetrieveURL, and
Warning Reason B000 (Coercion of Data Elements) with the data elements
de-identification replaced, removed or added, by tag only. Nothing of the
sender's instance is echoed, not even its UIDs (PS3.15 counts them as
identifying). The sender tells its instances apart by their place in the
body: every item gives its part's number (there is no standard attribute
for that, nor for the coerced tags without their original values, so both
are in the node's private block, `PRIVATE_CREATOR`).

``POST /studies/{study}`` stores into one of the node's (de-identified)
studies of the account's hospital what de-identifies into it; any other part
fails (`DIFFERENT_STUDY`) and is not stored, the rest of the request is.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Response, abort, g, request
from pydicom import dcmread
from pydicom.dataset import Dataset
from werkzeug.exceptions import HTTPException

from dicomnode.deid.codes import is_well_known_uid
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome
from dicomnode.status import (
    CANNOT_UNDERSTAND,
    COERCION_OF_DATA_ELEMENTS,
    DIFFERENT_STUDY,
    UNREADABLE,
)
from storage.audit import MINOR_FAILURE, SUCCESS
from storage.keys import Level
from storage.query import Query
from storage.values import normalise_issuer
from viewer import services
from viewer.address import public_root
from viewer.auth import audit
from viewer.dicomweb import PREFIX, bp
from viewer.dicomweb.common import JSON, json_acceptable, json_text, open_blob, path_keys
from viewer.multipart import MultipartError, boundary_of
from viewer.stow import (
    Announced,
    Changes,
    announced,
    changes,
    predicted_study,
    sent_header,
    stream_parts,
)

# Failures that say the body held no DICOM to read: all of them is 400.
BAD_SYNTAX = frozenset({CANNOT_UNDERSTAND, UNREADABLE})
PRIVATE_CREATOR = "CHD-NODE STOW"
PART, REPLACED, REMOVED, ADDED, STATUS = 0x01, 0x02, 0x03, 0x04, 0x05
HELD = "held for review"
NOT_THIS_STUDY = "not of the study the request names"
NO_SUCH_STUDY = (
    "the node holds no such study: POST to /dicom-web/studies to store a new one (the node "
    "stores de-identified studies under UIDs of its own), or to a study it holds (the "
    "RetrieveURL of an earlier answer)"
)


@dataclass(frozen=True)
class Answered:
    """One part's outcome as the answer tells it: the node's UIDs only."""

    part: int
    status: int
    stored: bool = False
    held: bool = False
    sop_class: str = ""
    sop_instance: str = ""
    study: str = ""
    series: str = ""
    changes: Changes = field(default_factory=Changes)
    comment: str = ""


@bp.post("/studies")
def store() -> Any:
    """STOW-RS into the node: new studies or the node's own."""
    return _store(None)


@bp.post("/studies/<study>")
def store_study(study: str) -> Any:
    """STOW-RS into one of the node's studies (PS3.18 Table 10.5.1-1)."""
    return _store(study)


def _store(study: str | None) -> Any:
    """Every part through the ingest; the answer by the letter of Annex I.

    The patients' issuer is the account's hospital, exactly as its DIMSE
    devices' ``[[remote_ae]]`` issuer, so a child sent both ways is one
    patient. An account without one may not store (else its uploads would
    make patients of their own).
    """
    json_acceptable("the store answer")  # before anything is stored
    issuer = _issuer()
    if study is not None:
        study = _target(study, issuer)
    boundary = boundary_of(request.headers.get("Content-Type", ""))
    if boundary is None:
        abort(415, description='send multipart/related; type="application/dicom"')
    ingestor: Ingestor = services.ingestor()
    config = services.config()
    answered: list[Answered] = []
    seen: set[str] = set()
    sinks = stream_parts(
        request.stream,
        boundary,
        getattr(ingestor, "spool", None),
        config.spool_threshold_mb << 20,
        config.max_instance_mb << 20,
    )
    try:
        for number, part in enumerate(sinks, 1):
            if part.problem:
                answered.append(Answered(number, part.status, comment=part.problem))
                continue
            uids = announced(part.data, part.syntax)
            if uids.sop_instance and uids.sop_instance in seen:
                continue  # sent twice in one request: one instance, answered once
            seen.add(uids.sop_instance or "")
            answered.append(_one(ingestor, number, part, uids, issuer, study))
    except MultipartError as exc:
        _audit_stow(answered, f"body refused: {exc}")
        abort(400, description=f"STOW-RS body: {exc} ({_count(answered)} stored before it)")
    except HTTPException as exc:  # the body bound, reached while streaming
        _audit_stow(answered, f"body refused: {exc.code}")
        raise
    _audit_stow(answered)
    if not answered:
        abort(400, description="STOW-RS body: no instance in it")
    return Response(json_text(_answer(answered).to_json_dict()), _status(answered), mimetype=JSON)


def _issuer() -> str:
    issuer = g.user.issuer
    if not issuer:
        audit(
            "access-denied",
            g.user.username,
            obj=request.endpoint or "",
            detail="STOW-RS by an account without a hospital (issuer)",
            outcome=MINOR_FAILURE,
        )
        abort(
            403,
            description=f"the account {g.user.username!r} has no hospital (issuer), so its "
            "uploads cannot be assigned to patients; an administrator sets one with: "
            f'dicomnode user issuer {g.user.username} --issuer "Hospital name"',
        )
    return str(issuer)


def _target(study: str, issuer: str) -> str:
    """The URL's study: one the node holds (404 otherwise, without echoing
    the UID, which may be the sender's own), of the account's hospital (403:
    seeing other hospitals' children is not storing into their studies).
    `viewer.scope` has already answered 404 for a study the account does not see."""
    keys = path_keys(study=study)
    index = services.archive().index
    if not list(index.find(Query(Level.STUDY, dict(keys), limit=1))):
        abort(404, description=NO_SUCH_STUDY)
    own = frozenset({normalise_issuer(issuer)})
    if not list(index.find(Query(Level.STUDY, dict(keys), limit=1, issuers=own))):
        audit(
            "access-denied",
            g.user.username,
            obj=keys["StudyInstanceUID"],
            detail="STOW-RS into another hospital's study",
            outcome=MINOR_FAILURE,
        )
        abort(403, description="the study is another hospital's: store into your own studies")
    return keys["StudyInstanceUID"]


def _one(
    ingestor: Ingestor,
    number: int,
    part: Any,
    uids: Announced,
    issuer: str,
    study: str | None,
) -> Answered:
    """One part ingested (or refused before: not of the URL's study), told
    by the node's UIDs and what de-identification changed."""
    header = sent_header(part.data, part.syntax, ingestor.config.max_instance_mb << 20)
    # The sender's SOP Class UID is echoed only when the standard defines it
    # (a private one, or a name typed into it, could say who sent it).
    sop_class = str(uids.sop_class or "")
    sop_class = sop_class if is_well_known_uid(sop_class) else ""
    # The UID it is (or would be) stored under: a keyed function of the
    # sender's, which reveals nothing of it.
    secret = ingestor.deidentify.secret
    keyed = secret.uid(str(uids.sop_instance)) if uids.sop_instance else ""
    if (
        study is not None
        and header is not None
        and "StudyInstanceUID" in header
        and predicted_study(ingestor, header, issuer) != study
    ):
        return Answered(
            number, DIFFERENT_STUDY, sop_class=sop_class, sop_instance=keyed, comment=NOT_THIS_STUDY
        )
    result = ingestor.ingest(
        Incoming(
            part.data,
            part.syntax,
            issuer=issuer,
            source=f"STOW-RS {g.user.username}",
            study=study,
            read_now=True,  # its answer names where to retrieve it, or says held
        )
    )
    if result.outcome is Outcome.REJECTED:
        return Answered(
            number, result.status, sop_class=sop_class, sop_instance=keyed, comment=result.comment
        )
    stored = result.dataset if result.dataset is not None else _held_header(keyed)
    if stored is None:  # removed since: `dicomnode check` tells
        return Answered(number, result.status, stored=True, sop_class=sop_class, sop_instance=keyed)
    held = result.outcome is Outcome.QUARANTINED
    return Answered(
        number,
        result.status,
        stored=True,
        held=held,
        sop_class=str(stored.get("SOPClassUID", sop_class)),
        sop_instance=str(stored.SOPInstanceUID),
        study=str(stored.get("StudyInstanceUID", "")),
        series=str(stored.get("SeriesInstanceUID", "")),
        changes=changes(header, stored) if header is not None else Changes(),
        comment=HELD if held else result.comment,
    )


def _held_header(uid: str) -> Dataset | None:
    """A duplicate's header as the node holds it (first stored)."""
    if not uid:
        return None
    try:
        source = open_blob(services.archive(), uid)
    except FileNotFoundError:
        return None
    if source is None:
        return None
    with source:
        try:
            return dcmread(source, stop_before_pixels=True)
        except Exception:  # damaged since: `dicomnode check` tells
            return None


def _answer(answered: list[Answered]) -> Dataset:
    base = f"{public_root()}{PREFIX.lstrip('/')}/studies"
    answer = Dataset()
    studies = {a.study for a in answered if a.stored and not a.held}
    # Type 2: the study's URL when every instance went to one, else empty.
    answer.RetrieveURL = f"{base}/{studies.pop()}" if len(studies) == 1 else ""
    failed = [_item(a, base) for a in answered if not a.stored]
    if failed:
        answer.FailedSOPSequence = failed
    referenced = [_item(a, base) for a in answered if a.stored]
    if referenced:
        answer.ReferencedSOPSequence = referenced
    return answer


def _item(a: Answered, base: str) -> Dataset:
    item = Dataset()
    if a.sop_class:
        item.ReferencedSOPClassUID = a.sop_class
    if a.sop_instance:
        item.ReferencedSOPInstanceUID = a.sop_instance
    if not a.stored:
        item.FailureReason = a.status
    else:
        # Type 2: empty for an instance held for review (nothing to retrieve yet).
        retrievable = a.study and a.series and not a.held
        item.RetrieveURL = (
            f"{base}/{a.study}/series/{a.series}/instances/{a.sop_instance}" if retrievable else ""
        )
        if a.changes or a.held or a.status:
            # Held for review or coerced: both are Coercion of Data Elements (PS3.18 I.2.1).
            item.WarningReason = COERCION_OF_DATA_ELEMENTS
    block = item.private_block(0x0009, PRIVATE_CREATOR, create=True)
    block.add_new(PART, "UL", a.part)
    told = ((REPLACED, a.changes.replaced), (REMOVED, a.changes.removed), (ADDED, a.changes.added))
    for offset, tags in told:
        if tags:
            block.add_new(offset, "AT", list(tags))
    if a.comment:
        block.add_new(STATUS, "LO", a.comment[:64])
    return item


def _status(answered: list[Answered]) -> int:
    """PS3.18 Table 10.5.3-1: 200 all stored; 202 some not stored, or
    stored with a warning of the ingest's own (held for review, kept apart
    under UIDs of its own: what C-STORE answers B000 for); 409 none stored;
    400 none stored because nothing in the body could be read as DICOM.
    De-identification's coercion alone, which every instance undergoes (and
    C-STORE answers Success for), is told in the body, not by a 202."""
    stored = [a for a in answered if a.stored]
    failed = [a for a in answered if not a.stored]
    if not stored:
        return 400 if all(a.status in BAD_SYNTAX for a in failed) else 409
    return 202 if failed or any(a.status for a in stored) else 200


def _count(answered: list[Answered]) -> int:
    return sum(a.stored for a in answered)


def _audit_stow(answered: list[Answered], refused: str = "") -> None:
    """Who stored what, like a DIMSE association's record; also when the
    body was refused part-way, after what came before it was stored."""
    stored = _count(answered)
    failed = len(answered) - stored
    detail = f"{stored} stored, {failed} failed" + (f", {refused}" if refused else "")
    outcome = MINOR_FAILURE if failed or refused else SUCCESS
    audit("stow", g.user.username, detail=detail, outcome=outcome)
