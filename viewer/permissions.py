"""Which role may call which endpoint: one table, checked before every request.

An endpoint missing from the table is refused to everyone (fail closed), and
tests/test_web_security.py fails when a route is added without a rule.
Object-level checks stay with the views: studies and instances are looked up
through the index only (quarantined or unknown UIDs answer 404 to every
role), and export jobs are visible to their owner and admins.
"""

from __future__ import annotations

from storage.accounts import ROLES

OPEN: frozenset[str] = frozenset()  # no login needed
EVERYONE = frozenset(ROLES)
CLINICAL = frozenset({"cardiologist", "admin"})
# Referral cases: the centre's clinicians, and a partner hospital's
# cardiologists for their own hospital's children (scoped by `viewer.scope`).
CASES = CLINICAL | {"partner"}
RESEARCH = frozenset({"researcher", "admin"})
ADMIN = frozenset({"admin"})

RULES: dict[str, frozenset[str]] = {
    "auth.login": OPEN,
    "health": OPEN,
    "static": OPEN,
    "favicon": OPEN,
    "auth.logout": EVERYONE,
    "i18n.choose": EVERYONE,
    "stats": EVERYONE,
    # Browsing and viewing de-identified studies: every role.
    "studies.index": EVERYONE,
    "studies.study": EVERYONE,
    "frames.frame": EVERYONE,
    "frames.meta": EVERYONE,
    "frames.ecg": EVERYONE,
    "frames.thumbnail": EVERYONE,
    "frames.raw": EVERYONE,
    "measure.geometry": EVERYONE,
    "planning.plans": EVERYONE,
    "planning_pages.print_plan": EVERYONE,
    "dicomweb.search_studies": EVERYONE,
    "dicomweb.search_series": EVERYONE,
    "dicomweb.search_all_series": EVERYONE,
    "dicomweb.search_instances": EVERYONE,
    "dicomweb.search_study_instances": EVERYONE,
    "dicomweb.search_all_instances": EVERYONE,
    "dicomweb.retrieve_study": EVERYONE,
    "dicomweb.retrieve_series": EVERYONE,
    "dicomweb.retrieve_instance": EVERYONE,
    "dicomweb.retrieve_frames": EVERYONE,
    "dicomweb.rendered": EVERYONE,
    "dicomweb.thumbnail": EVERYONE,
    "dicomweb.study_rendered": EVERYONE,
    "dicomweb.series_rendered": EVERYONE,
    "dicomweb.study_thumbnail": EVERYONE,
    "dicomweb.series_thumbnail": EVERYONE,
    "dicomweb.study_metadata": EVERYONE,
    "dicomweb.instance_metadata": EVERYONE,
    "dicomweb.series_metadata": EVERYONE,
    "dicomweb.bulkdata": EVERYONE,
    "ohif.app": EVERYONE,  # the OHIF viewer's files; its data comes through DICOMweb
    # Clinical work: measuring, planning, storing reports and images.
    "measure.measure": CLINICAL,
    "measure.envelope": CLINICAL,
    "measure.edges": CLINICAL,
    "measure.vessel_profile": CLINICAL,
    "planning.zscore_of": CLINICAL,
    "planning.save_plan": CLINICAL,
    "planning.sign_plan": CLINICAL,
    # STOW-RS: a partner hospital uploads more images of its children too.
    "dicomweb.store": CASES,
    "dicomweb.store_study": CASES,
    # Referral cases: the centre decides; a partner hospital reads its own,
    # the centre's answers, and adds notes.
    "cases.index": CASES,
    "cases.case": CASES,
    "cases.note": CASES,
    "cases.report": CASES,
    "cases.set_status": CLINICAL,
    "cases.service": ADMIN,  # the service's figures, on the administrators' pages
    # Research cohorts.
    "exports.page": RESEARCH,
    "exports.show_preview": RESEARCH,
    "exports.start": RESEARCH,
    "exports.status": RESEARCH,
    "exports.cancel": RESEARCH,
    "exports.download": RESEARCH,
    # Administration.
    "studies.quarantine": ADMIN,
    "studies.forwarding": ADMIN,
    "admin.audit_page": ADMIN,
    "admin.audit_csv": ADMIN,
}


def allowed(endpoint: str | None, role: str | None) -> bool:
    rule = RULES.get(endpoint or "")
    if rule is None:
        return False
    return rule is OPEN or role in rule


def is_open(endpoint: str | None) -> bool:
    return RULES.get(endpoint or "") is OPEN
