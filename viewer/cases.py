"""Referral cases in the web viewer: the list, one case, a change of status.

The centre's cardiologists (and administrators) see the cases of the
hospitals their account covers (`viewer.scope`); a case another hospital's
account asks for answers 404, as a study does. Cases are opened by the
node's change feed (`storage.cases`), never by a page: the web only reads
them and records a cardiologist's decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from typing import Any, NoReturn

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from pydicom import dcmread

from dicomnode.consult.identity import CHECKED, Linked, Unavailable, identifying, open_case
from dicomnode.consult.sending import REIDENTIFY_EVENT, hospital_pdf
from storage.accounts import PARTNER
from storage.audit import MINOR_FAILURE
from storage.cases import (
    DECIDED,
    FIELDS,
    STATUSES,
    TITLES,
    Case,
    CaseError,
    UnknownCase,
    checked_detail,
    checked_note,
)
from storage.keys import Level
from storage.query import Query
from storage.reports import UNSENT, Report
from viewer import presentation, services
from viewer.address import client_address
from viewer.auth import audit
from viewer.i18n import gettext
from viewer.params import whole
from viewer.permissions import allowed
from viewer.planning.routes import IDENTIFYING
from viewer.scope import issuers

bp = Blueprint("cases", __name__)
DEFECTS = ("ASD", "VSD", "PDA")


def status_label(status: str) -> str:
    """A status as the pages name it, in the user's language."""
    return gettext(TITLES[status]) if status in TITLES else status


def detail_label(name: str) -> str:
    labels = {
        "missing": gettext("Imaging needed"),
        "device": gettext("Planned device"),
        "date": gettext("Indicative date"),
        "reason": gettext("Reason"),
        "note": gettext("Note"),
    }
    return labels.get(name, name)


def detail_text(detail: dict[str, str]) -> str:
    return " · ".join(f"{detail_label(k)}: {v}" for k, v in sorted(detail.items()))


def refusal(exc: CaseError) -> str:
    """Why a change was refused, in the user's language, with the status and
    the field named as the form names them."""
    values = dict(exc.values)
    if "status" in values:
        values["status"] = status_label(str(values["status"]))
    if "field" in values:
        values["field"] = ", ".join(detail_label(f) for f in str(values["field"]).split(", "))
    return gettext(exc.text, **values)


def identifies(kinds: set[str]) -> str:
    """Why a text was refused: the first kind of identity it gives."""
    what = next(IDENTIFYING[kind] for kind in IDENTIFYING if kind in kinds)
    return gettext(
        "This text gives {what}: the case knows whose it is; write it without anything "
        "that identifies anyone.",
        what=gettext(what),
    )


def report_state(report: Report) -> str:
    """Where a consultation report stands, in the user's language."""
    if report.state == UNSENT:
        return gettext("Not sent: {reason}", reason=_reason(report.reason))
    if report.delivered:
        last = max(s.done_at for s in report.sent if s.done_at)
        return gettext(
            "Delivered to {ae} on {when}", ae=report.destination, when=presentation.timestamp(last)
        )
    waiting = [s for s in report.sent if s.state != "done"]
    attempts = max((s.attempts for s in waiting), default=0)
    why = next((s.last_error for s in waiting if s.last_error), "")
    if not attempts:
        return gettext("Queued for {ae}", ae=report.destination)
    return gettext(
        "Waiting for {ae} (attempt {n}): {reason}",
        ae=report.destination,
        n=attempts,
        reason=_reason(why),
    )


def _reason(text: str) -> str:
    """A reason the node gives for a report that waits, said in the user's
    language: every one the node itself raises (`dicomnode.consult`, the
    forwarder); what a peer answers is said as the AE not taking it."""
    known = {
        "the linkage key is not available": gettext("the linkage key is not available"),
        "a linkage record does not open with this key": gettext(
            "the linkage key is not the one the identity was sealed with"
        ),
        "a linkage record names another hospital": gettext(
            "a sealed identity names another hospital: not sent"
        ),
        "the case's studies have no linkage record": gettext(
            "the case's studies have no sealed identity"
        ),
        "the report's study has no linkage record": gettext(
            "the case's studies have no sealed identity"
        ),
        "the case's studies name different children": gettext(
            "the case's studies name different children under one hospital number: "
            "not sent; an administrator must look at the case"
        ),
        "the destination is not an AE of the hospital": gettext(
            "the AE it was queued for is not the referring hospital's: not sent"
        ),
        "a character of the patient's name": gettext(
            "the child's name has a character no font of the report can draw: not sent"
        ),
        "font ": gettext("a font of the report is not installed"),
        "no [[remote_ae]] of this hospital": gettext("no AE of this hospital is configured"),
        "several [[remote_ae]] of this hospital": gettext(
            "several AEs of this hospital: one must be marked to receive reports"
        ),
        "destination no longer configured": gettext("no AE of this hospital is configured"),
        "the case holds no stored study": gettext("the case holds no stored study"),
        "association refused or destination unreachable": gettext(
            "the hospital's AE cannot be reached"
        ),
    }
    for start, said in known.items():
        if text.startswith(start):
            return said
    if text.startswith(("its ", "the instance ", "the PDF ", "no longer stored", "stored file")):
        return gettext("the report's instances changed in the archive: not sent")
    return gettext("the hospital's AE did not take it")


def login_notices() -> list[tuple[Case, bool]]:
    """On the first page after a login: the cases (of the account's
    hospitals) that moved or got a note since the previous login."""
    since = session.pop("since", None)
    user = g.get("user")
    if not isinstance(since, str) or user is None or not allowed("cases.index", user.role):
        return []
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        return []
    return services.archive().index.cases.changed_since(when, issuers(), user.username)


@bp.app_context_processor
def labels() -> dict[str, Any]:
    return {
        "case_status": status_label,
        "case_detail": detail_label,
        "case_details": detail_text,
        "report_state": report_state,
        "login_notices": login_notices,
    }


@bp.get("/cases")
def index() -> Any:
    cases = services.archive().index.cases
    status = request.args.get("status", "").strip() or None
    defect = request.args.get("defect", "").strip() or None
    hospital = request.args.get("hospital", "").strip() or None
    try:
        waiting = whole(request.args, "waiting", 0, least=0, most=36500)
        before = datetime.now(UTC) - timedelta(days=waiting) if waiting else None
        found = cases.listing(
            issuers=issuers(),
            hospital=hospital,
            status=status,
            defect=defect,
            opened_before=before,
        )
    except CaseError as exc:
        abort(400, description=refusal(exc))
    return render_template(
        "cases.html",
        cases=found,
        hospitals=cases.hospitals(issuers()),
        statuses=list(STATUSES),
        defects=DEFECTS,
        args=request.args,
        now=datetime.now(UTC),
        user=g.user,
    )


@bp.get("/cases/<ref>")
def case(ref: str) -> Any:
    return _page(ref)


def deciding() -> bool:
    """Whether this account decides: a clinician of the centre, who sees
    every hospital. A partner hospital's account (one hospital) reads its
    cases and their answers; it does not decide them."""
    return allowed("cases.set_status", g.user.role) and issuers() is None


def _not_found(ref: str) -> NoReturn:
    """404 as for a case that does not exist; one of another hospital is
    an attempt the audit trail keeps, as for a study."""
    try:
        services.archive().index.cases.get(ref)
    except UnknownCase:
        pass
    else:
        audit(
            "access-denied",
            g.user.username,
            obj=ref,
            detail=f"{request.endpoint}: another hospital's case",
            outcome=MINOR_FAILURE,
        )
    abort(404, description="no such case")


def _found(ref: str) -> Case:
    try:
        return services.archive().index.cases.get(ref, issuers())
    except UnknownCase:
        _not_found(ref)


def hospitals_own(case: Case) -> bool:
    """Whether the user is of the hospital that referred the child: only
    they see the child as the hospital knows them."""
    scope = issuers()
    return g.user.role == PARTNER and g.user.issuer == case.issuer and scope == {case.issuer}


def _linked(case: Case, what: str) -> Linked:
    """The child's identity for the referring hospital's own user, audited."""
    linked = open_case(services.config(), services.archive().index, case)
    audit(REIDENTIFY_EVENT, g.user.username, obj=case.ref, detail=f"{what} for {case.issuer}")
    return linked


def _page(ref: str, error: str = "", code: int = 200, note_error: str = "") -> Any:
    found = _found(ref)
    linked, unavailable = None, ""
    if hospitals_own(found):
        try:
            linked = _linked(found, "case page")
        except Unavailable as exc:
            unavailable = _reason(str(exc))
    page = render_template(
        "case.html",
        case=found,
        studies=[_study(uid, linked) for uid in found.studies],
        reports=services.archive().index.reports.of_case(found.ref),
        identity=linked.newest if linked else None,
        unavailable=unavailable,
        statuses=STATUSES,
        deciding=deciding(),
        fields=FIELDS,
        error=error,
        note_error=note_error,
        form=request.form if error or note_error else {},
        now=datetime.now(UTC),
        user=g.user,
    )
    return page, code


def _study(uid: str, linked: Linked | None) -> dict[str, Any]:
    """A study of the case as its list shows it: what it holds; for the
    referring hospital's own user its own Study Instance UID, and no date
    (the centre's are shifted)."""
    keys = dict.fromkeys(
        ("StudyDate", "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances"), ""
    )
    rows = list(
        services.archive().index.find(Query(Level.STUDY, {**keys, "StudyInstanceUID": uid}))
    )
    row = rows[0] if rows else {}
    modalities = row.get("ModalitiesInStudy") or []
    if isinstance(modalities, str):
        modalities = modalities.split("\\")
    return {
        "uid": uid,
        "date": "" if linked else str(row.get("StudyDate") or ""),
        "modalities": ", ".join(m for m in modalities if m),
        "description": str(row.get("StudyDescription") or ""),
        "instances": row.get("NumberOfStudyRelatedInstances") or 0,
        "theirs": linked.studies.get(uid, "") if linked else "",
    }


def _identifying(case: Case, *texts: str, need_key: bool = True) -> set[str]:
    return identifying(services.config(), services.archive().index, case, texts, need_key=need_key)


@bp.post("/cases/<ref>/notes")
def note(ref: str) -> Any:
    """A note on the case: a partner hospital's word to the centre or the
    centre's to them. Refused when it names the child (the centre's copy
    stays de-identified) and when that cannot be checked."""
    found = _found(ref)
    text = request.form.get("text", "")
    try:
        # What is checked is what will be kept and read (hidden characters
        # made spaces first: a phone split by zero-width spaces is a phone).
        if kinds := _identifying(found, checked_note(text)):
            return _page(ref, note_error=identifies(kinds), code=400)
    except CaseError as exc:
        return _page(ref, note_error=refusal(exc), code=400)
    except Unavailable as exc:
        message = gettext(
            "the note cannot be checked for identity now ({reason}): not kept",
            reason=_reason(str(exc)),
        )
        return _page(ref, note_error=message, code=503)
    try:
        services.archive().index.cases.add_note(
            ref,
            text,
            user=g.user.username,
            role=g.user.role,
            source=client_address(),
            issuers=issuers(),
        )
    except CaseError as exc:
        return _page(ref, note_error=refusal(exc), code=400)
    return redirect(url_for("cases.case", ref=ref) + "#notes", code=303)


@bp.get("/cases/<ref>/reports/<int:pk>.pdf")
def report(ref: str, pk: int) -> Any:
    """A consultation report as a PDF: the centre's copy (pseudonymous), or,
    for the referring hospital's own user, theirs (named, audited)."""
    found = _found(ref)
    wanted = [r for r in services.archive().index.reports.of_case(found.ref) if r.pk == pk]
    if not wanted or not wanted[0].pdf_uid:
        abort(404, description="no such report")
    made = wanted[0]
    if hospitals_own(found):
        try:
            linked = _linked(found, f"consultation report {made.pdf_uid}")
            identity = linked.by_study.get(made.study_uid) or linked.newest
            pdf = hospital_pdf(services.archive(), made, identity)
        except Unavailable as exc:
            abort(503, description=_reason(str(exc)))
    else:
        data = services.archive().read(made.pdf_uid)
        if data is None:
            abort(404, description="no such report")
        stored = dcmread(BytesIO(data))
        pdf = bytes(stored.EncapsulatedDocument)[: int(stored.EncapsulatedDocumentLength)]
    answer = Response(pdf, mimetype="application/pdf")
    answer.headers["Content-Disposition"] = f'inline; filename="{found.ref}.pdf"'
    answer.headers["Cache-Control"] = "no-store"
    return answer


@bp.post("/cases/<ref>/status")
def set_status(ref: str) -> Any:
    if not deciding():
        try:
            services.archive().index.cases.get(ref, issuers())
        except UnknownCase:
            _not_found(ref)
        abort(403, description="only the centre's clinicians decide a case")
    status = request.form.get("status", "")
    given = {name: request.form.get(name, "") for name in FIELDS}
    wanted = set(sum(STATUSES.get(status, ((), ())), ()))  # the fields this status reads
    chosen = {name: value for name, value in given.items() if name in wanted and value.strip()}
    try:
        # The centre never sees the identity, but a phone call may put a name
        # in a detail: what is checked is what will be kept (cleaned first).
        # Without the key the child's own name cannot be looked for, the rest
        # is (a decision never waits for the key).
        kept = checked_detail(status, chosen)
        checked = [kept[n] for n in CHECKED if n in kept]
        if kinds := _identifying(_found(ref), *checked, need_key=False):
            return _page(ref, identifies(kinds), 400)
    except CaseError as exc:
        return _page(ref, refusal(exc), 400)
    try:
        services.archive().index.cases.set_status(
            ref,
            status,
            chosen,
            user=g.user.username,
            role=g.user.role,
            source=client_address(),
            issuers=issuers(),
        )
    except UnknownCase:
        _not_found(ref)
    except CaseError as exc:  # the page again, saying why, with what was typed
        return _page(ref, refusal(exc), 400)
    return redirect(url_for("cases.case", ref=ref), code=303)


@bp.get("/service")
def service() -> Any:
    """The service's figures (referrals per hospital and month, days to a
    decision, decisions by type): what a health commission reports."""
    figures = services.archive().index.cases.throughput(issuers())
    hospitals = sorted(figures.referrals)
    return render_template(
        "service.html",
        figures=figures,
        hospitals=hospitals,
        decided_statuses=[s for s in STATUSES if s in DECIDED],
        user=g.user,
    )
