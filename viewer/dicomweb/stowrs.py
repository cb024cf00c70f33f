"""STOW-RS: every part through the one ingest pipeline, de-identification included."""

from __future__ import annotations

from typing import Any

from flask import Response, abort, current_app, g, request
from pydicom.dataset import Dataset
from werkzeug.exceptions import HTTPException

from dicomnode.ingest import Incoming, Outcome
from storage.audit import MINOR_FAILURE, SUCCESS
from viewer.auth import audit
from viewer.dicomweb import bp
from viewer.dicomweb.common import JSON, json_text
from viewer.multipart import MultipartError, boundary_of
from viewer.stow import announced, stream_parts


@bp.post("/studies")
def store() -> Any:
    """STOW-RS: every part through the ingest; reasons for what failed.

    The patients' issuer is the account's hospital, exactly as its DIMSE
    devices' ``[[remote_ae]]`` issuer, so a child sent both ways is one
    patient. An account without one may not store (else its uploads would
    make patients of their own).
    """
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
    boundary = boundary_of(request.headers.get("Content-Type", ""))
    if boundary is None:
        abort(415, description='send multipart/related; type="application/dicom"')
    ingestor = current_app.extensions["ingestor"]
    config = current_app.config["NODE_CONFIG"]
    stored: list[tuple[Any, Any, int, str]] = []
    failed: list[tuple[Any, Any, int, str]] = []
    seen: set[str] = set()
    spool = getattr(ingestor, "spool", None)
    sinks = stream_parts(
        request.stream,
        boundary,
        spool,
        config.spool_threshold_mb << 20,
        config.max_instance_mb << 20,
    )
    try:
        for part in sinks:
            if part.problem:
                failed.append((None, None, part.status, part.problem))
                continue
            uids = announced(part.data, part.syntax)
            if uids.sop_instance and uids.sop_instance in seen:
                continue  # sent twice in one request: one instance, answered once
            seen.add(uids.sop_instance or "")
            result = ingestor.ingest(
                Incoming(
                    part.data,
                    part.syntax,
                    issuer=issuer,
                    source=f"STOW-RS {g.user.username}",
                )
            )
            entry = (uids.sop_class, uids.sop_instance, result.status, result.comment)
            (failed if result.outcome is Outcome.REJECTED else stored).append(entry)
    except MultipartError as exc:
        _audit_stow(stored, failed, f"body refused: {exc}")
        abort(400, description=f"STOW-RS body: {exc} ({len(stored)} stored before it)")
    except HTTPException as exc:  # the body bound, reached while streaming
        _audit_stow(stored, failed, f"body refused: {exc.code}")
        raise
    _audit_stow(stored, failed)
    answer = Dataset()
    # A warning (held in quarantine for review) is WarningReason on its item,
    # and the answer is 202 as for any partial success (PS3.18 10.5.3).
    answer.ReferencedSOPSequence = [_sop(c, i, warning=status) for c, i, status, _ in stored]
    if failed:
        answer.FailedSOPSequence = [_sop(c, i, status) for c, i, status, _ in failed]
    warned = any(status for _, _, status, _ in stored)
    status = 200 if not (failed or warned) else (202 if stored else 409)
    return Response(json_text(answer.to_json_dict()), status=status, mimetype=JSON)


def _audit_stow(stored: list, failed: list, refused: str = "") -> None:
    """Who stored what, like a DIMSE association's record; also when the
    body was refused part-way, after what came before it was stored."""
    detail = f"{len(stored)} stored, {len(failed)} failed" + (f", {refused}" if refused else "")
    outcome = MINOR_FAILURE if failed or refused else SUCCESS
    audit("stow", g.user.username, detail=detail, outcome=outcome)


def _sop(
    sop_class: Any, sop_instance: Any, failure: int | None = None, *, warning: int = 0
) -> Dataset:
    item = Dataset()
    if sop_class:
        item.ReferencedSOPClassUID = sop_class
    if sop_instance:
        # The original UID, as the sender knows it; the archive's is remapped.
        item.ReferencedSOPInstanceUID = sop_instance
    if failure is not None:
        item.FailureReason = failure
    if warning:
        item.WarningReason = warning
    return item
