"""The audit trail for administrators: filter, page through, verify, CSV."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, g, render_template, request

from storage.audit import EVENTS, AuditFilter
from viewer.auth import audit, trail

bp = Blueprint("admin", __name__)
PAGE_SIZE = 100


def _filter() -> AuditFilter:
    args = request.args
    return AuditFilter(
        user=args.get("user", "").strip(),
        event=args.get("event", "") if args.get("event", "") in EVENTS else "",
        source=args.get("source", "").strip(),
        failures_only=bool(args.get("failures")),
        date_from=args.get("from", "").strip()[:10],
        date_to=args.get("to", "").strip()[:10],
    )


@bp.get("/audit")
def audit_page() -> Any:
    where = _filter()
    page = max(1, request.args.get("page", 1, type=int) or 1)
    rows = trail().rows(where, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    audit("audit-read", g.user.username, detail="web page")
    return render_template(
        "audit.html",
        user=g.user,
        rows=rows,
        events=sorted(EVENTS),
        page=page,
        pages=max(1, -(-trail().count(where) // PAGE_SIZE)),
        chain=trail().verify(),
        args=request.args,
    )


@bp.get("/audit.csv")
def audit_csv() -> Response:
    audit("audit-read", g.user.username, detail="CSV export")
    return Response(
        trail().csv(_filter()),
        mimetype="text/csv",
        headers={"Content-Disposition": "attachment; filename=audit-trail.csv"},
    )
