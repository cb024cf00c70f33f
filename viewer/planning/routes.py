"""Planning API: several plans per study (one per defect, or numbered), each
save a new version with its SR; a cardiologist signs a version (a verified
SR), after which it is read only.

Every field is checked before a report is built: bad input is a 400 that
says what is wrong (never quoting it: free text may name anyone), never a
500. The note is held to the archive's de-identification: one that names
the child (their sealed identity), anyone by context or form, or gives a
date, phone, long number or address, is refused for the clinician to
rewrite. Worksheet values are kept in 0.1 mm; a save to an existing plan
says which version it continues, and only a plan's latest version is signed.
Refusals carry English text with {placeholders} and the values apart, so
the page shows them in the user's language.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from io import BytesIO
from typing import Any, NoReturn

from flask import Blueprint, abort, g, jsonify, make_response, request
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy import Connection
from werkzeug.http import HTTP_STATUS_CODES

from dicomnode.deid.identity import IdentityMatcher
from dicomnode.deid.linkage import LinkageError
from dicomnode.deid.names import identifying
from dicomnode.jobs.export import age_years
from dicomnode.ops.admin import linkage_cipher
from dicomnode.status import SUCCESS
from storage.index import AlsoWrite, StoreOutcome
from storage.keys import Level
from storage.plans import NEW, PlanError, Saved, UnknownPlan
from storage.query import Query
from viewer import services
from viewer.auth import audit
from viewer.i18n import LANGUAGES, catalogue
from viewer.planning import sizing, zscores
from viewer.planning.body import body_size
from viewer.planning.defects import rim_field, table
from viewer.planning.measure import (
    MAX_MEASUREMENTS,
    NEEDED,
    REGION_KINDS,
    applied_calibration,
    compute,
    header,
    json_body,
    saved_calibrations,
    saved_measurements,
)
from viewer.planning.report import (
    SR_ROOT,
    Signature,
    measurement_report,
    observer_name,
)
from viewer.planning.shapes import MOST_OUTLINE
from viewer.planning.worksheet import (
    InvalidValue,
    UnknownSlot,
    checked_choice,
    defect_of,
    rim_slot,
    worksheet_slot,
)
from viewer.presentation import height_m, weight_kg

bp = Blueprint("planning", __name__, url_prefix="/api")
MAX_BODY = 1 << 20  # a plan is a few kB; 200 measurements and a long note fit many times
MAX_SLOTS = 40
MAX_NOTE = 4000
MAX_LABEL = 64  # a Long String: the SR's tracking identifier
MAX_PLANS = 999
UNITS = {
    "length": ("mm", "px"),
    "ellipse": ("mm²", "px²"),
    "area": ("mm²", "px²"),
    "bidirectional": ("mm", "px"),
    "angle": ("°",),
    "velocity": ("m/s",),
    "interval": ("ms",),
    "m-mode": ("mm",),
    "vti": ("cm",),
}
# A velocity is signed (toward the probe or away); every other value is not.
VALUES = {"velocity": (-100.0, 100.0)}
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
WORD = re.compile(r"[^\W\d_]+")
# What a note may not give, in the order a refusal names it (English, for t()).
IDENTIFYING = {
    "name": "a name",
    "id": "an identifying number",
    "date": "a date",
    "phone": "a phone number",
    "place": "an address",
}


def refuse(status: int, text: str, **values: Any) -> NoReturn:
    """Stop with ``text`` (English, {placeholders}) filled in as the message,
    and the text and values apart for translation."""
    body = {
        "error": HTTP_STATUS_CODES.get(status, "Error"),
        "message": text.format(**values),
        "text": text,
        "values": values,
    }
    abort(make_response(jsonify(body), status))


class Images:
    """The study's images (its SRs aside), each header read once, when a
    plan refers to it."""

    def __init__(self, study_uid: str) -> None:
        keys = {"SOPInstanceUID": "", "Modality": "", "IssuerOfPatientID": ""}
        index = services.archive().index
        rows = list(index.find(Query(Level.IMAGE, {**keys, "StudyInstanceUID": study_uid})))
        if not rows:
            abort(404, description="no such study")
        self.study_uid = study_uid
        self.issuer = str(rows[0]["IssuerOfPatientID"])
        keys = {"PatientWeight": "", "PatientAge": "", "PatientSize": ""}
        study = Query(Level.STUDY, {"StudyInstanceUID": study_uid, **keys})
        found = list(services.archive().index.find(study))
        weight = found[0]["PatientWeight"] if found else None
        self.weight = weight if weight not in (None, "") else None
        # The BSA the plan states is the one its SR codes, from this study's header.
        self.size = body_size(weight_kg(found[0]), height_m(found[0])) if found else None
        # Device labels have age limits too (the duct occluder: 6 months).
        self.age = age_years(str(found[0]["PatientAge"] or "")) if found else None
        self.rows = [r for r in rows if r["Modality"] != "SR"] or rows
        self.uids = {r["SOPInstanceUID"] for r in self.rows}
        self._read: dict[str, Dataset] = {}

    def header(self, uid: Any, what: str) -> Dataset:
        if not isinstance(uid, str) or uid not in self.uids:
            refuse(400, "{what}: not an image of this study", what=what)
        if uid not in self._read:
            self._read[uid] = header(uid)
        return self._read[uid]

    def check(self, uid: Any, frame: int, points: list | None, what: str) -> None:
        """``frame`` 0-based; ``points`` (x, y) must lie on the image."""
        ds = self.header(uid, what)
        frames = int(ds.get("NumberOfFrames") or 1)
        if not 0 <= frame < frames:
            refuse(400, "{what}: the image has frames 1 to {n}", what=what, n=frames)
        columns, rows = int(ds.get("Columns") or 0), int(ds.get("Rows") or 0)
        if points and not all(0 <= x <= columns and 0 <= y <= rows for x, y in points):
            refuse(400, "{what}: a point lies outside the image", what=what)

    def evidence(self, uids: set[str]) -> list[Dataset]:
        """Headers of the referenced images, else of the study's first one
        (an SR needs evidence)."""
        chosen = sorted(uids & self.uids) or [self.rows[0]["SOPInstanceUID"]]
        return [self.header(uid, "evidence") for uid in chosen]


def _number(value: Any, what: str) -> float:
    """A finite JSON number (no strings, no booleans, no integer too large
    for a float); the worksheet judges its range."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        refuse(400, "{what}: a number", what=what)
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        refuse(400, "{what}: a finite number", what=what)
    return number


def _whole(value: Any, low: int, high: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        refuse(400, "{what}: a whole number from {low} to {high}", what=what, low=low, high=high)
    return value


def _body() -> dict[str, Any]:
    if (request.content_length or 0) > MAX_BODY:
        refuse(413, "a plan is at most {n} bytes", n=MAX_BODY)
    body = json_body()
    if not isinstance(body, dict):
        refuse(400, "a JSON object: defect, slots, rims, note, measurements, calibrations")
    return body


@dataclass
class Form:
    """A save request, every field checked."""

    defect: str
    plan: int | str | None
    based_on: int | None
    content: dict[str, Any]
    referenced: set[str]  # the images the report refers to


def _form(body: dict[str, Any], images: Images) -> Form:
    entry = table().defect(body.get("defect"))
    if entry is None:
        refuse(400, "defect: one of {defects}", defects=", ".join(sorted(table().names)))
    defect = entry.name
    plan = body.get("plan")
    if plan is not None and plan != NEW:
        plan = _whole(plan, 1, MAX_PLANS, "plan")
    based_on = body.get("based_on")
    if based_on is not None:
        based_on = _whole(based_on, 1, 1_000_000, "based_on")
    if body.get("calibration"):
        refuse(400, "calibration: send calibrations, a list")
    calibrations = saved_calibrations(body)
    for c in calibrations:
        scope = c["scope"]
        images.check(scope["uid"], scope.get("frame", 0), c["points"], "calibrations")
    given = body.get("measurements")
    if given is not None and (not isinstance(given, list) or len(given) > MAX_MEASUREMENTS):
        refuse(400, "measurements: a list of at most {n}", n=MAX_MEASUREMENTS)
    measurements = saved_measurements(given, calibrations)
    by_id = {c["id"]: c for c in calibrations}
    identity = _identity(images.study_uid)
    for m in measurements:
        _check_measurement(m, images)
        _remeasure(m, images, by_id)
        m["label"] = _note(m["label"], identity, LABEL) or None
    slots = _slots(defect, body.get("slots"), measurements, images)
    rims = _rims(defect, body.get("rims"))
    choices = _choices(defect, body)
    values = {s["code"]: s["value_mm"] for s in slots}
    try:
        proposal = sizing.propose(
            defect, values, rims, weight_kg=images.weight, age_years=images.age, choices=choices
        )
    except InvalidValue as exc:
        refuse(400, exc.text, **exc.values)
    except ValueError as exc:
        refuse(400, "sizing: {reason}", reason=str(exc))
    content = {
        "slots": slots,
        "rims": rims,
        "deficient_rims": sizing.deficient_rims(rims),
        "note": _note(body.get("note"), identity),
        **choices,  # each choice of the worksheet by its key ("krichenko")
        "calibrations": calibrations,
        # The drawn lines, so reopening the study shows them on their frames again.
        "measurements": measurements,
        "proposal": asdict(proposal) if proposal else None,
        "based_on": based_on,
        "body": asdict(images.size) if images.size else None,
    }
    return Form(defect, plan, based_on, content, _referenced(content))


def _check_measurement(m: dict[str, Any], images: Images) -> None:
    kind, count = m["kind"], len(m["points"])
    if kind in REGION_KINDS:
        needed = REGION_KINDS[kind]  # 0: a trace, of three points or more
        if count != needed if needed else count < 3:
            refuse(400, "measurements: velocity (1 point), interval or m-mode (2), vti (3 or more)")
        if m["calibration_id"] is not None:
            refuse(400, "measurements: a {kind} is read through its ultrasound region", kind=kind)
    elif kind not in NEEDED or count != (NEEDED[kind] or count):
        refuse(400, "measurements: length (2 points), angle (3), ellipse (2) or bidirectional (4)")
    elif not NEEDED[kind] and not 3 <= count <= MOST_OUTLINE:
        refuse(400, "measurements: an area's outline of 3 to {n} points", n=MOST_OUTLINE)
    low, high = VALUES.get(kind, (0.0, 1e6))
    if m["unit"] not in UNITS[kind] or not low <= m["value"] <= high:
        refuse(400, "measurements: a {kind} in {units}", kind=kind, units=", ".join(UNITS[kind]))
    images.check(m["uid"], m["frame"], m["points"], "measurements")


def _remeasure(m: dict[str, Any], images: Images, calibrations: dict[int, Any]) -> None:
    """A drawn measurement's value, unit and scale source as the measure
    endpoint computes them from its points and calibration: what the browser
    sends back is not what the report states, and a value its points do not
    give (edited, or measured with another scale) is refused."""
    ds = images.header(m["uid"], "measurements")
    given = calibrations.get(m["calibration_id"])
    applied = applied_calibration(given, m["uid"], ds, m["frame"]) if given else None
    points = [(float(x), float(y)) for x, y in m["points"]]
    found = compute(ds, m["kind"], points, applied)
    # Within the shown rounding: a tenth of mm, ms, cm or degree; 0.01 m/s.
    tolerance = 0.005 if m["unit"] == "m/s" else 0.05
    if (
        found["unit"] != m["unit"]
        or not math.isfinite(found["value"])
        or abs(found["value"] - m["value"]) > tolerance + 1e-9
    ):
        refuse(
            400,
            "measurements: a value does not follow from its points and calibration: "
            "measure it again",
        )
    m.update(found)
    # The z-score of the structure it measures, from this study's BSA.
    m["zscore"] = None
    if m.get("structure") is not None:
        _structure(m["structure"])
        if m["unit"] != "mm":
            refuse(400, "measurements: a z-score is of a length in mm")
        bsa = images.size.bsa_m2 if images.size else None
        found_z = zscores.zscore(m["structure"], m["value"], bsa)
        m["zscore"] = asdict(found_z) if found_z else None


def _slots(defect: str, given: Any, measurements: list, images: Images) -> list[dict[str, Any]]:
    """The worksheet values: each takes its meaning from the server's
    catalogue (what the browser sends as a meaning is ignored), and its
    image, frame and scale from the drawn measurement it came from. An
    unknown slot is refused rather than left out: a plan saved without a
    value the cardiologist entered would differ from what they saw."""
    if given is None:
        return []
    if not isinstance(given, list) or len(given) > MAX_SLOTS:
        refuse(400, "slots: a list of at most {n}", n=MAX_SLOTS)
    out: list[dict[str, Any]] = []
    for item in given:
        if not isinstance(item, dict) or not isinstance(item.get("code"), str):
            refuse(400, "slots: a list of code, value_mm and measurement")
        uid, frame, link = None, None, item.get("measurement")
        if link is not None:
            link = _whole(link, 0, MAX_MEASUREMENTS, "slots: measurement")
            if link >= len(measurements):
                refuse(400, "slots: there is no measurement {n}", n=link + 1)
            uid, frame = measurements[link]["uid"], measurements[link]["frame"] + 1
        elif item.get("instance_uid") is not None:
            uid = item["instance_uid"]
            frame = item.get("frame")
            frame = 1 if frame is None else _whole(frame, 1, 100_000, "slots: frame")
            images.check(uid, frame - 1, None, "slots")
        value = tenth(_number(item.get("value_mm"), "slots"))
        slot = _checked("slots", worksheet_slot, defect, item["code"], value, uid, frame)
        if link is not None:
            drawn = measurements[link]
            if drawn["kind"] != "length" or drawn["unit"] != "mm":
                refuse(400, "slots: measurement {n} is not a length in mm", n=link + 1)
            if abs(drawn["value"] - slot.value_mm) > 0.05 + 1e-9:
                refuse(400, "slots: the value differs from measurement {n}", n=link + 1)
        if any(s["code"] == slot.code for s in out):
            refuse(400, "slots: each code once")
        out.append({**asdict(slot), "measurement": link})
    return out


def _checked(what: str, make: Callable[..., Any], *args: Any) -> Any:
    """The worksheet's verdict on a slot or rim: UnknownSlot and InvalidValue
    (messages that quote no input) become a 400."""
    try:
        return make(*args)
    except InvalidValue as exc:
        refuse(400, exc.text, **exc.values)
    except UnknownSlot as exc:
        refuse(400, "{what}: {reason}", what=what, reason=str(exc))


def _rims(defect: str, given: Any) -> dict[str, float]:
    if not given:
        return {}
    if not isinstance(given, dict):
        refuse(400, "rims: an object of rim name to mm")
    return {
        name: _checked("rims", rim_slot, name, tenth(_number(value, "rims")), defect).value_mm
        for name, value in given.items()
    }


def _choices(defect: str, body: dict[str, Any]) -> dict[str, str | None]:
    """The worksheet's choices (the Krichenko type of a duct), each under its
    key in the body; a choice of another worksheet, or a value not offered,
    is refused."""
    chosen = {
        key: _checked(key, checked_choice, defect, key, body.get(key))
        for key in table().choice_keys
    }
    return {f.key: chosen[f.key] for f in defect_of(defect).choices}


def tenth(value: float) -> float:
    """A worksheet value in 0.1 mm: half away from zero on the number as
    written (4.05 is 4.1, though the float is a hair under), as the page
    rounds it; sizing and the report see this value. Beyond any measurement
    (the worksheet refuses it) as given."""
    if not abs(value) < 1e6:
        return value
    return float(Decimal(repr(value)).quantize(Decimal("0.1"), ROUND_HALF_UP))


@dataclass(frozen=True)
class TextField:
    """A free-text field of a plan: its limit and its refusals (each its
    own catalogue text, so each is translated whole)."""

    most: int
    not_text: str
    too_long: str
    not_valid: str
    identifies: str


NOTE = TextField(
    MAX_NOTE,
    "note: text",
    "note: at most {n} characters",
    "note: a character that is not valid text",
    "note: it gives {what}, and plans are kept de-identified: "
    "rewrite it without anything that identifies anyone",
)
LABEL = TextField(
    MAX_LABEL,
    "label: text",
    "label: at most {n} characters",
    "label: a character that is not valid text",
    "label: it gives {what}, and plans are kept de-identified: "
    "rewrite it without anything that identifies anyone",
)


def _note(value: Any, identity: IdentityMatcher, field: TextField = NOTE) -> str:
    """The note (or a measurement's label) as text the archive may keep:
    de-identified like every descriptor, so one that names or identifies
    anyone is refused (saying what kind of thing, never quoting it) for the
    clinician to rewrite."""
    if value is None:
        return ""
    if not isinstance(value, str):
        refuse(400, field.not_text)
    if len(value) > field.most:
        refuse(400, field.too_long, n=field.most)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate ("\ud800"): no character at all
        refuse(400, field.not_valid)
    found = identifying(value, identity, _own_words)
    if found:
        what = next(IDENTIFYING[kind] for kind in IDENTIFYING if kind in found)
        refuse(400, field.identifies, what=what)
    return CONTROL.sub(" ", value)


def _own_words(span: str) -> bool:
    """Whether a name-like span is made of the node's own words: a
    classification or an author the worksheet and the rules cite
    ("Krichenko", "Криченко"), not a person of this plan."""
    words = WORD.findall(span)
    return bool(words) and all(w.casefold() in _vocabulary() for w in words)


@cache
def _vocabulary() -> frozenset[str]:
    """Every word of the node's own text (the worksheet, the rules and their
    sources, every message) in every language it speaks."""
    words: set[str] = set()
    for language in LANGUAGES:
        for english, translated in catalogue(language).items():
            words.update(w.casefold() for w in WORD.findall(f"{english} {translated}"))
    return frozenset(words)


def _identity(study_uid: str) -> IdentityMatcher:
    """The child's identity as received (name, ID, accession number, birth
    date), opened from the study's sealed records: a note may give the
    child's given name, which no context or form betrays. Nothing without
    the linkage key; a record that does not open is passed over."""
    try:
        cipher = linkage_cipher(services.config())
    except RuntimeError:
        return IdentityMatcher.from_values(())
    pairs: list[tuple[str, str]] = []
    for study, pseudonym, sealed in services.archive().index.linkage_for(study_uid):
        try:
            pairs += cipher.open(sealed, pseudonym, study).values()
        except LinkageError:
            continue
    return IdentityMatcher.from_values(pairs)


def report_entries(content: dict[str, Any]) -> list[dict[str, Any]]:
    """The worksheet values and the rims of a stored plan, for its report
    (which takes their meanings and units from the catalogue)."""
    rims = [
        {"code": rim_field(name).code, "value_mm": value}
        for name, value in (content.get("rims") or {}).items()
    ]
    return list(content.get("slots") or []) + rims


def _referenced(content: dict[str, Any]) -> set[str]:
    uids = {s.get("instance_uid") for s in content.get("slots") or []}
    uids |= {m.get("uid") for m in content.get("measurements") or []}
    uids |= {c["scope"]["uid"] for c in content.get("calibrations") or [] if "scope" in c}
    return {u for u in uids if isinstance(u, str)}


def _stored(sr_uid: str | None) -> list[Dataset]:
    """The version's unsigned report, which the signed one succeeds (none
    for a plan saved before reports were kept with it)."""
    data = services.archive().read(sr_uid) if sr_uid else None
    return [dcmread(BytesIO(data), stop_before_pixels=True)] if data else []


def _stored_report(sr: Any, images: Images, also: AlsoWrite | None = None) -> bool:
    """Whether the archive took the report (it validates it like any
    instance; a full disk refuses it); ``also``: rows committed with it."""
    return services.ingestor().ingest_own(sr, images.issuer, also).status == SUCCESS


@bp.post("/studies/<uid>/zscore")
def zscore_of(uid: str) -> Any:
    """A dimension's z-score for the study's child, from the BSA its header
    gives (`zscores`): what a measurement's row shows once the structure it
    measures is chosen."""
    body = json_body()
    if not isinstance(body, dict):
        refuse(400, "a JSON object: structure, mm")
    structure = _structure(body.get("structure"))
    mm = _number(body.get("mm"), "mm")
    images = Images(uid)
    try:
        found = zscores.zscore(structure, mm, images.size.bsa_m2 if images.size else None)
    except ValueError:
        refuse(400, "mm: a positive number")
    if found is None:
        refuse(400, NO_ZSCORE)
    return jsonify(asdict(found))


NO_ZSCORE = "no z-score: the child's BSA is unknown or outside the reference's (0.1 to 2.0 m²)"


def _structure(given: Any) -> str:
    if not isinstance(given, str) or given not in zscores.STRUCTURES:
        refuse(400, "structure: one of {names}", names=", ".join(zscores.STRUCTURES))
    return given


@bp.get("/studies/<uid>/plans")
def plans(uid: str) -> Any:
    """Every version of every plan of the study."""
    return jsonify(services.archive().index.plans.versions(uid))


@bp.post("/studies/<uid>/plans")
def save_plan(uid: str) -> Any:
    """Save a new version of a plan and write it as an SR of its series."""
    body = _body()
    images = Images(uid)
    form = _form(body, images)
    store = services.archive().index.plans
    sr_uid = generate_uid(SR_ROOT)
    # The version and its report commit together, in the report's store: the
    # report is made for the version a save would make now (`Plans.draft`),
    # and one saved meanwhile refuses both (no version without its report,
    # no report without its version).
    saved: list[Saved] = []

    def version(conn: Connection, _: StoreOutcome) -> None:
        saved.append(
            store.save_in(
                conn,
                uid,
                form.defect,
                form.content,
                g.user.username,
                sr_uid,
                plan=form.plan,
                based_on=form.based_on,
                expect=draft,
            )
        )

    try:
        draft = store.draft(uid, form.defect, plan=form.plan, based_on=form.based_on)
        sr = measurement_report(
            images.evidence(form.referenced),
            report_entries(form.content),
            defect=form.defect,
            # Named by role: who saved it is in the plan row and the audit trail.
            observer=observer_name(g.user.role),
            content=form.content,
            plan=draft.plan,
            version=draft.version,
            sop_instance_uid=sr_uid,
        )
        stored = _stored_report(sr, images, version)
    except UnknownPlan as exc:
        refuse(400, exc.text, **exc.values)
    except PlanError as exc:
        refuse(409, exc.text, **exc.values)
    if not (stored and saved):
        refuse(503, "the report could not be stored, so the plan was not saved: try again")
    (done,) = saved
    audit(
        "plan-save",
        g.user.username,
        obj=uid,
        detail=f"{form.defect} plan {done.plan} version {done.version}",
    )
    return jsonify(
        plan=done.plan,
        version=done.version,
        defect=form.defect,
        author=g.user.username,
        created_at=done.created_at.isoformat(),
        sr_uid=sr_uid,
        signed_by=None,
        signed_at=None,
        **form.content,
    ), 201


@bp.post("/studies/<uid>/plans/<int:plan>/versions/<int:version>/sign")
def sign_plan(uid: str, plan: int, version: int) -> Any:
    """Sign a version: a new SR, COMPLETE and VERIFIED, naming the signer
    (their account's user name) and the node; the version is read only
    from then on (a second signature is refused with 409)."""
    images = Images(uid)
    store = services.archive().index.plans
    try:
        row = store.claim_signature(uid, plan, version, g.user.username)
    except UnknownPlan as exc:
        refuse(404, exc.text, **exc.values)
    except PlanError as exc:
        refuse(409, exc.text, **exc.values)
    content = row["content"]
    sr_uid = generate_uid(SR_ROOT)
    node = services.config()
    try:
        sr = measurement_report(
            images.evidence(_referenced(content)),
            report_entries(content),
            defect=row["defect"],
            observer=observer_name(g.user.role),
            content=content,
            plan=plan,
            version=version,
            signature=Signature(g.user.username, f"CHD imaging exchange node {node.ae_title}"),
            predecessors=_stored(row["sr_uid"]),
            sop_instance_uid=sr_uid,
        )
        stored = _stored_report(sr, images)
    except ValueError as exc:  # a value the catalogue no longer has: never signed
        store.release_signature(uid, plan, version)
        refuse(409, "{what}: {reason}", what="plan", reason=str(exc))
    except Exception:
        store.release_signature(uid, plan, version)
        raise
    if not stored:
        store.release_signature(uid, plan, version)
        refuse(503, "the signed report could not be stored, so the plan was not signed: try again")
    store.finish_signature(uid, plan, version, sr_uid)
    audit(
        "plan-sign",
        g.user.username,
        obj=uid,
        detail=f"{row['defect']} plan {plan} version {version}",
    )
    return jsonify(
        plan=plan,
        version=version,
        signed_by=row["signed_by"],
        signed_at=row["signed_at"],
        signed_sr_uid=sr_uid,
    ), 201
