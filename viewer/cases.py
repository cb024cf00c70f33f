"""Referral cases in the web viewer: the list, one case, a change of status.

The centre's cardiologists (and administrators) see the cases of the
hospitals their account covers (`viewer.scope`); a case another hospital's
account asks for answers 404, as a study does. Cases are opened by the
node's change feed (`storage.cases`), never by a page: the web only reads
them and records a cardiologist's decision.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from flask import Blueprint, abort, g, redirect, render_template, request, url_for

from storage.audit import MINOR_FAILURE
from storage.cases import DECIDED, FIELDS, STATUSES, TITLES, CaseError, UnknownCase
from viewer import services
from viewer.address import client_address
from viewer.auth import audit
from viewer.i18n import gettext
from viewer.params import whole
from viewer.permissions import allowed
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


@bp.app_context_processor
def labels() -> dict[str, Any]:
    return {"case_status": status_label, "case_detail": detail_label, "case_details": detail_text}


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


def _page(ref: str, error: str = "", code: int = 200) -> Any:
    try:
        found = services.archive().index.cases.get(ref, issuers())
    except UnknownCase:
        _not_found(ref)
    page = render_template(
        "case.html",
        case=found,
        statuses=STATUSES,
        deciding=deciding(),
        fields=FIELDS,
        error=error,
        form=request.form if error else {},
        now=datetime.now(UTC),
        user=g.user,
    )
    return page, code


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
    try:
        services.archive().index.cases.set_status(
            ref,
            status,
            {name: value for name, value in given.items() if name in wanted and value.strip()},
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
