"""The plan as a DICOM Structured Report (TID 1500 Measurement Report).

One measurement group (TID 1501) per plan version: every worksheet value,
rim, drawn measurement (a Doppler or M-mode one as each value it gives:
velocity and gradient, VTI, interval, distance, slope) and user
calibration as a measurement (TID 300) that
references its image and frame (the calipers as SCOORD where they were drawn)
and names its scale in an algorithm identification (TID 4019: the scale
source and the calibration, as text); the Krichenko type as a CODE; the note,
the sizing aid, its rules with their sources and its warnings as TEXT under
the report's Qualitative Evaluations. A Comprehensive SR built with
highdicom, whose patient and study modules come from the (de-identified)
evidence; unsigned versions are PARTIAL / UNVERIFIED, a signed one COMPLETE /
VERIFIED with its verifying observer.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from copy import deepcopy
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
from highdicom.sr import (
    AlgorithmIdentification,
    CodeContentItem,
    CodedConcept,
    ComprehensiveSR,
    ContainerContentItem,
    CoordinatesForMeasurement,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    QualitativeEvaluation,
    RelationshipTypeValues,
    SourceImageForMeasurement,
    SourceImageForRegion,
    TextContentItem,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicomnode import UID_ROOT
from viewer.planning.body import FORMULA
from viewer.planning.calibration import french_mm
from viewer.planning.defects import UNITS as FIELD_UNITS
from viewer.planning.defects import Defect
from viewer.planning.worksheet import Slot, UnknownSlot, checked_choice, defect_of
from viewer.planning.zscores import STRUCTURES

__all__ = ["Signature", "Slot", "measurement_report", "observer_name", "series_label"]

LOCAL_SCHEME = "99CHDNODE"  # local codes for worksheet slots (PS3.16 8.2)
SR_ROOT = UID_ROOT + ".5."
MM = CodedConcept("mm", "UCUM", "millimeter")
CM = CodedConcept("cm", "UCUM", "centimeter")
MMHG = CodedConcept("mm[Hg]", "UCUM", "millimeter of mercury")
UNITS = {
    "mm": MM,
    "mm²": CodedConcept("mm2", "UCUM", "square millimeter"),
    "°": CodedConcept("deg", "UCUM", "degree"),
    "px": CodedConcept("{pixels}", "UCUM", "pixels"),
    "px²": CodedConcept("{pixels}2", "UCUM", "square pixels"),
}
DRAWN = {
    "length": codes.SCT.Length,
    "angle": codes.SCT.Angle,
    "ellipse": codes.SCT.Area,
    "area": codes.SCT.Area,
}
# A long and short axis: each a length on its own line (as OHIF's bidirectional).
AXES = (("value", codes.SCT.LongAxis, slice(0, 2)), ("short", codes.SCT.ShortAxis, slice(2, 4)))
M_PER_S = CodedConcept("m/s", "UCUM", "meter per second")
MS = CodedConcept("ms", "UCUM", "millisecond")
# What a Doppler or M-mode measurement states, each value of it as its own
# measurement on the same points: (the key the measure endpoint gives it,
# its concept, its unit). LOINC codes from PS3.16 CID 12304 (Echocardiography
# Measurements) where one says exactly what was measured; local codes where
# none does (a time between two clicks, an M-mode slope, a rate that is a
# heart rate only if the interval is one cycle).
REGION_VALUES: dict[str, list[tuple[str, CodedConcept, CodedConcept]]] = {
    "velocity": [
        ("value", CodedConcept("11726-7", "LN", "Peak Velocity"), M_PER_S),
        ("gradient", CodedConcept("20247-3", "LN", "Peak Gradient"), MMHG),
    ],
    "vti": [
        ("value", CodedConcept("20354-7", "LN", "Velocity Time Integral"), CM),
        ("peak_velocity", CodedConcept("11726-7", "LN", "Peak Velocity"), M_PER_S),
        ("mean_velocity", CodedConcept("20352-1", "LN", "Mean Velocity"), M_PER_S),
        ("peak_gradient", CodedConcept("20247-3", "LN", "Peak Gradient"), MMHG),
        ("mean_gradient", CodedConcept("20256-4", "LN", "Mean Gradient"), MMHG),
        ("duration_ms", CodedConcept("TRACE-TIME", LOCAL_SCHEME, "Traced duration"), MS),
    ],
    "interval": [
        ("value", CodedConcept("TIME-INTERVAL", LOCAL_SCHEME, "Time interval"), MS),
        (
            "rate",
            CodedConcept("CYCLE-RATE", LOCAL_SCHEME, "Rate if the interval is one cycle"),
            CodedConcept("/min", "UCUM", "per minute"),
        ),
    ],
    "m-mode": [
        ("value", codes.DCM.Distance, MM),
        ("time_ms", CodedConcept("TIME-INTERVAL", LOCAL_SCHEME, "Time interval"), MS),
        (
            "slope",
            CodedConcept("M-MODE-SLOPE", LOCAL_SCHEME, "M-mode slope"),
            CodedConcept("mm/s", "UCUM", "millimeter per second"),
        ),
    ],
}
PHASES = {"ED": codes.SCT.EndDiastole, "ES": codes.SCT.EndSystole}
ZSCORE = CodedConcept("ZSCORE", LOCAL_SCHEME, "Z-score for body surface area")
NO_UNIT = CodedConcept("1", "UCUM", "no units")
ZSCORE_METHOD = "Pettersen 2008 (J Am Soc Echocardiogr 21:922)"
CLOSURE_PLANNING = CodedConcept("CLOSURE-PLAN", LOCAL_SCHEME, "Transcatheter closure planning")
BSA = CodedConcept("8277-6", "LN", "Body Surface Area")
CALIBRATION = CodedConcept("CAL-REFERENCE", LOCAL_SCHEME, "Calibration reference length")
QUALITATIVE = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
SIZING_AID = CodedConcept("SIZING-AID", LOCAL_SCHEME, "Device sizing aid (decision support)")
SIZING_RULE = CodedConcept("SIZING-RULE", LOCAL_SCHEME, "Sizing rule and its source")
SIZING_WARNING = CodedConcept("SIZING-WARNING", LOCAL_SCHEME, "Sizing warning")
SIZING_NOTE = CodedConcept("SIZING-NOTE", LOCAL_SCHEME, "Sizing note (unchecked, or advice)")
SCALE_ALGORITHM = "Measurement scale"
# The Type 2 attributes highdicom copies from the evidence: a hospital may
# send them empty or not at all, and the SR must still be written.
TYPE2 = (
    "PatientName",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)

# The observer of a plan's report is named by role: the login names a member
# of staff, and who saved which version is in the plan row and the audit
# trail. Only a signature names a person (the verifying observer).
OBSERVER_ROLES = {
    "cardiologist": "Cardiologist",
    "admin": "Administrator",
    "researcher": "Researcher",
}


def observer_name(role: str) -> str:
    """The report's Person Observer Name: the role, on behalf of the node."""
    return f"{OBSERVER_ROLES.get(role, 'Clinician')}^CHD node"


@dataclass(frozen=True)
class Signature:
    """Who verified the plan: an account's user name as a Person Name (a
    single family-name component) and the node's organisation."""

    user: str
    organization: str

    @property
    def name(self) -> str:
        return re.sub(r"[\^=\\\x00-\x1f]", " ", self.user)[:60].strip() + "^"


def series_label(defect: str, plan: int) -> str:
    """The SR series' description, one series per plan of the study."""
    return _lo(f"Closure plan ({defect}) #{plan}")


def english(message: Any) -> str:
    """A Message ({text, values}) or a legacy plain string, in English."""
    if isinstance(message, dict):
        values = {
            k: f"{v:.1f}" if isinstance(v, float) else str(v)
            for k, v in (message.get("values") or {}).items()
        }
        try:
            return str(message.get("text", "")).format(**values)
        except (KeyError, IndexError, ValueError):
            return str(message.get("text", ""))
    return str(message)


def calibration_facts(given: dict[str, Any]) -> dict[str, Any]:
    """A user calibration's facts, for the SR and the print page alike: what
    it was drawn over (catheter French size or known length, in mm), its
    scale, and where it applies (``scope`` None: a plan from before scopes,
    whose one calibration applied to every measurement)."""
    french = float(given["french"]) if "french" in given else None
    known = french_mm(french) if french is not None else float(given["mm"])
    (x1, y1), (x2, y2) = given["points"]
    pixels = float(np.hypot(x2 - x1, y2 - y1))
    scope = given.get("scope") or {}
    return {
        "id": given.get("id"),
        "french": french,
        "mm": known,
        "pixels": pixels,
        "scale": known / pixels if pixels else 0.0,
        "scope": scope.get("kind"),
        "frame": int(scope.get("frame", 0)) + 1,
    }


def calibration_text(given: dict[str, Any]) -> list[str]:
    """A user calibration in words (English): what, its scale, its scope."""
    facts = calibration_facts(given)
    if facts["french"] is not None:
        what = f"catheter {facts['french']:g}F ({facts['mm']:.2f} mm)"
    else:
        what = f"known length {facts['mm']:g} mm"
    if facts["id"] is not None:
        what = f"calibration {facts['id']}: {what}"
    scope = {
        None: "applies to every measurement of the plan (saved before scopes)",
        "frame": f"applies to frame {facts['frame']} of its image only",
        "series": "applies to the series of the image it was drawn on",
    }
    return [
        what,
        f"{facts['scale']:.4f} mm per pixel over {facts['pixels']:.1f} px",
        scope.get(facts["scope"], scope["series"]),
    ]


def measurement_report(
    evidence: list[Dataset],
    slots: Sequence[Any],
    *,
    defect: str,
    observer: str,
    content: dict[str, Any] | None = None,
    plan: int = 1,
    version: int = 1,
    signature: Signature | None = None,
    predecessors: Sequence[Dataset] = (),
    sop_instance_uid: str | None = None,
) -> ComprehensiveSR:
    """``slots``: the worksheet values (``Slot`` or the stored dicts, rims
    included); ``content``: the stored plan (measurements, calibrations,
    choices such as the Krichenko type, note, proposal). ``observer`` is a
    Person Name for the role (`observer_name`), not a login; ``signature``
    makes it VERIFIED. Codes, meanings and units of the worksheet values and
    choices are the catalogue's (``defects``), whatever a slot says: a code
    or a choice ``defect``'s worksheet lacks is a ValueError (UnknownSlot,
    InvalidValue), never written."""
    content = content or {}
    entry = defect_of(defect)
    evidence = [_complete(ds) for ds in evidence]
    by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
    drawn = content.get("measurements") or []
    calibrations = _calibrations(content)
    items = [_slot(_entry(s), entry, drawn, calibrations, by_uid) for s in slots]
    items += [
        _phased(item, m.get("phase")) for m in drawn for item in _drawn(m, calibrations, by_uid)
    ]
    items += [_calibration(c, by_uid) for c in calibrations.values() if "scope" in c]
    if content.get("body"):
        items.append(_body(content["body"]))
    evaluations = _choices(entry, content)
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=generate_uid(SR_ROOT),
            identifier=_lo(f"{defect} closure plan {plan}, version {version}"),
        ),
        measurements=items or None,
        qualitative_evaluations=evaluations or None,
    )
    context = ObservationContext(
        observer_person_context=ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=PersonObserverIdentifyingAttributes(name=observer),
        )
    )
    report = MeasurementReport(
        observation_context=context,
        procedure_reported=CLOSURE_PLANNING,
        imaging_measurements=[group],
    )
    texts = _texts(content)
    if texts:
        container = ContainerContentItem(QUALITATIVE, relationship_type="CONTAINS")
        container.ContentSequence = DicomSequence(texts)
        report[0].ContentSequence.append(container)
    study_uid = str(evidence[0].StudyInstanceUID)
    with warnings.catch_warnings():
        # highdicom doubts a one-component Patient's Name: ours is the pseudonym.
        warnings.filterwarnings("ignore", "The string .* is unlikely", UserWarning)
        return ComprehensiveSR(
            evidence=evidence,
            content=report,
            # One series per plan of the study: its versions are its instances.
            series_instance_uid=generate_uid(SR_ROOT, entropy_srcs=[study_uid, "plan", str(plan)]),
            series_number=900 + plan,
            sop_instance_uid=sop_instance_uid or generate_uid(SR_ROOT),
            instance_number=2 * version if signature else 2 * version - 1,
            manufacturer="CHD imaging exchange node",
            series_description=series_label(defect, plan),
            is_complete=signature is not None,
            is_final=signature is not None,
            is_verified=signature is not None,
            verifying_observer_name=signature.name if signature else None,
            verifying_organization=_lo(signature.organization) if signature else None,
            previous_versions=list(predecessors) or None,
        )


def _lo(text: str) -> str:
    """A Long String (Code Meaning, descriptions): at most 64 characters."""
    return text if len(text) <= 64 else text[:63] + "…"


def _complete(ds: Dataset) -> Dataset:
    """A copy of an evidence header with every Type 2 attribute the SR takes
    from it present (empty when the sender left it out); the stored instance
    is never changed."""
    copy = deepcopy(ds)
    for keyword in TYPE2:
        if keyword not in copy:
            setattr(copy, keyword, "")
    return copy


def _entry(slot: Any) -> Any:
    """A stored slot (dict) or a ``Slot``, read alike."""
    if isinstance(slot, dict):
        return SimpleNamespace(
            code=slot["code"],
            value_mm=float(slot["value_mm"]),
            instance_uid=slot.get("instance_uid"),
            frame=slot.get("frame"),
            measurement=slot.get("measurement"),
        )
    return slot


def _calibrations(content: dict[str, Any]) -> dict[Any, dict[str, Any]]:
    """Calibrations by id; a legacy single one under the key None."""
    found: dict[Any, dict[str, Any]] = {c["id"]: c for c in content.get("calibrations") or []}
    if content.get("calibration"):
        found[None] = content["calibration"]
    return found


def _scale(source: Any, calibration: dict[str, Any] | None) -> AlgorithmIdentification:
    parameters = [f"scale: {english(source)}"]
    if calibration:
        parameters += [f"calibration: {line}" for line in calibration_text(calibration)]
    return AlgorithmIdentification(SCALE_ALGORITHM, "1", parameters=[_lo(p) for p in parameters])


def _where(uid: str | None, frame: int | None, by_uid: dict[str, Dataset]) -> tuple | None:
    """(SOP class, instance, frames) of an evidence image, or None."""
    if uid not in by_uid:
        return None
    ds = by_uid[uid]
    frames = [frame] if frame and int(ds.get("NumberOfFrames") or 1) > 1 else None
    return ds.SOPClassUID, ds.SOPInstanceUID, frames


def _coordinates(
    drawn: dict[str, Any], by_uid: dict[str, Dataset], part: slice = slice(None)
) -> list | None:
    """The calipers of a drawn measurement (its points in ``part``) as
    SCOORD on its image and frame (1-based in DICOM, 0-based in the viewer)."""
    where = _where(drawn["uid"], int(drawn["frame"]) + 1, by_uid)
    if where is None:
        return None
    points = [[float(x), float(y)] for x, y in drawn["points"][part]]
    kind = "POINT" if len(points) == 1 else "POLYLINE"
    if drawn["kind"] == "area" and points[0] != points[-1]:
        points.append(points[0])  # a 2-D SCOORD polygon is a POLYLINE closed on its start
    if drawn["kind"] == "ellipse":
        (cx, cy), (ex, ey) = points
        rx, ry = abs(ex - cx), abs(ey - cy)
        major = [[cx - rx, cy], [cx + rx, cy]]
        minor = [[cx, cy - ry], [cx, cy + ry]]
        points = major + minor if rx >= ry else minor + major
        kind = "ELLIPSE"
    return [
        CoordinatesForMeasurement(kind, np.array(points, dtype=float), SourceImageForRegion(*where))
    ]


def _choices(entry: Defect, content: dict[str, Any]) -> list[QualitativeEvaluation]:
    """Each choice of the worksheet made (the Krichenko type), coded as the
    catalogue codes it."""
    out = []
    for f in entry.choices:
        value = checked_choice(entry.name, f.key, content.get(f.key))
        chosen = f.choice(value)
        if chosen is not None:
            name = CodedConcept(
                f.report_code or f.code, LOCAL_SCHEME, _lo(f.report_label or f.label)
            )
            coded = CodedConcept(chosen.report_code, LOCAL_SCHEME, _lo(chosen.report_label))
            out.append(QualitativeEvaluation(name, coded))
    return out


def _slot(slot: Any, entry: Defect, drawn: list, calibrations: dict, by_uid: dict) -> Measurement:
    """A worksheet value: from a drawn measurement (its calipers and scale),
    or typed in (with the image it was read from, when given). Its code,
    meaning and unit are the catalogue's."""
    field = entry.slot(slot.code)
    if field is None:
        codes = [f.code for f in (*entry.measured, *entry.rim_fields.values())]
        raise UnknownSlot(f"the {entry.name} worksheet has only {', '.join(codes)}")
    linked = getattr(slot, "measurement", None)
    source = drawn[linked] if linked is not None and 0 <= linked < len(drawn) else None
    coordinates = _coordinates(source, by_uid) if source else None
    images = None
    if coordinates is None and (where := _where(slot.instance_uid, slot.frame, by_uid)):
        images = [SourceImageForMeasurement(*where)]
    scale = None
    if source is not None:
        scale = _scale(source["source"], calibrations.get(source.get("calibration_id")))
    return Measurement(
        name=CodedConcept(field.code, LOCAL_SCHEME, _lo(field.label)),
        value=round(float(slot.value_mm), 2),
        unit=CodedConcept(*FIELD_UNITS[field.unit]),
        referenced_images=images,
        referenced_coordinates=coordinates,
        algorithm_id=scale,
    )


def _drawn(drawn: dict[str, Any], calibrations: dict, by_uid: dict) -> list[Measurement]:
    """A drawn measurement; a Doppler or M-mode one as each value it gives,
    on the same points, read through the region its scale source names."""
    tracking = _tracking(drawn.get("label"))
    if drawn["kind"] in REGION_VALUES:
        return [
            Measurement(
                tracking_identifier=tracking,
                name=name,
                value=round(float(drawn[key]), 3 if unit == M_PER_S else 2),
                unit=unit,
                referenced_coordinates=_coordinates(drawn, by_uid),
                algorithm_id=_scale(drawn["source"], None),
            )
            for key, name, unit in REGION_VALUES[drawn["kind"]]
            if drawn.get(key) is not None
        ]
    calibration = calibrations.get(drawn.get("calibration_id"))
    if calibration is None and drawn["unit"] in ("mm", "mm²") and None in calibrations:
        calibration = calibrations[None]  # legacy: its one calibration
    scale = _scale(drawn["source"], calibration if "mm" in drawn["unit"] else None)
    if drawn["kind"] == "bidirectional":
        return [
            Measurement(
                tracking_identifier=tracking,
                name=name,
                value=round(float(drawn[key]), 2),
                unit=UNITS.get(drawn["unit"], UNITS["px"]),
                referenced_coordinates=_coordinates(drawn, by_uid, part),
                algorithm_id=scale,
            )
            for key, name, part in AXES
        ]
    return [
        Measurement(
            tracking_identifier=tracking,
            name=DRAWN[drawn["kind"]],
            value=round(float(drawn["value"]), 2),
            unit=UNITS.get(drawn["unit"], UNITS["px"]),
            referenced_coordinates=_coordinates(drawn, by_uid),
            algorithm_id=scale,
        ),
        *_zscore(drawn, tracking, by_uid),
    ]


def _zscore(drawn: dict[str, Any], tracking: Any, by_uid: dict) -> list[Measurement]:
    """A length's z-score for the child's BSA, when the structure it
    measures was named: the reference, the structure and the BSA as its
    algorithm's name and parameters."""
    z = drawn.get("zscore")
    if not z:
        return []
    return [
        Measurement(
            tracking_identifier=tracking,
            name=ZSCORE,
            value=float(z["z"]),
            unit=NO_UNIT,
            referenced_coordinates=_coordinates(drawn, by_uid),
            algorithm_id=AlgorithmIdentification(
                ZSCORE_METHOD,
                "1",
                parameters=[
                    _lo(f"structure: {STRUCTURES[z['structure']].label}"),
                    f"BSA {z['bsa_m2']} m2 (Haycock)",
                ],
            ),
        )
    ]


def _phased(measurement: Measurement, phase: Any) -> Measurement:
    """A measurement taken on a frame tagged end-diastole or end-systole,
    with that phase as a concept modifier of its value, as echo SR states a
    cardiac phase (SCT Cardiac cycle phase, CID 12233)."""
    if phase in PHASES:
        value = measurement[0]
        if "ContentSequence" not in value:
            value.ContentSequence = DicomSequence()
        value.ContentSequence.append(
            CodeContentItem(
                name=codes.SCT.CardiacCyclePhase,
                value=PHASES[phase],
                relationship_type=RelationshipTypeValues.HAS_CONCEPT_MOD,
            )
        )
    return measurement


def _body(body: dict[str, Any]) -> Measurement:
    """The child's BSA, with the formula, weight and height it came from."""
    return Measurement(
        name=BSA,
        value=float(body["bsa_m2"]),
        unit=CodedConcept("m2", "UCUM", "square meter"),
        algorithm_id=AlgorithmIdentification(
            str(body.get("formula") or FORMULA),
            "1",
            parameters=[f"weight {body['weight_kg']} kg", f"height {body['height_cm']} cm"],
        ),
    )


def _tracking(label: Any) -> TrackingIdentifier | None:
    """The cardiologist's label of a measurement ("PDA pulmonary end"), as
    its TID 300 tracking identifier."""
    if not label:
        return None
    return TrackingIdentifier(uid=generate_uid(SR_ROOT), identifier=_lo(str(label)))


def _calibration(given: dict[str, Any], by_uid: dict[str, Dataset]) -> Measurement:
    """A user calibration: the known length, on the line drawn over it."""
    scope = given["scope"]
    line = {"uid": scope["uid"], "frame": scope.get("frame", 0), "kind": "length"}
    lines = calibration_text(given)
    return Measurement(
        name=CALIBRATION,
        value=round(
            french_mm(float(given["french"])) if "french" in given else float(given["mm"]), 3
        ),
        unit=MM,
        referenced_coordinates=_coordinates({**line, "points": given["points"]}, by_uid),
        algorithm_id=AlgorithmIdentification(
            SCALE_ALGORITHM, "1", parameters=[_lo(p) for p in lines]
        ),
    )


def _texts(content: dict[str, Any]) -> list[TextContentItem]:
    """The note, and the sizing aid with its rules, sources and warnings."""
    out = []
    if note := str(content.get("note") or "").strip():
        out.append(TextContentItem(codes.DCM.Comment, note, relationship_type="CONTAINS"))
    proposal = content.get("proposal")
    if proposal:
        sizes = ", ".join(proposal.get("sizes") or []) or "none"
        aid = f"candidate devices: {sizes}; basis: {english(proposal.get('basis', ''))}"
        aid += "; decision support, not an order"
        out.append(TextContentItem(SIZING_AID, aid, relationship_type="CONTAINS"))
        for rule in _rules(proposal):
            says = english({"text": rule.get("says", ""), "values": rule.get("values")})
            text = f"{says} ({rule.get('source', '')})"
            out.append(TextContentItem(SIZING_RULE, text, relationship_type="CONTAINS"))
        for concept, key in ((SIZING_WARNING, "warnings"), (SIZING_NOTE, "notes")):
            for said in proposal.get(key) or []:
                out.append(TextContentItem(concept, english(said), relationship_type="CONTAINS"))
    return out


def _rules(proposal: dict[str, Any]) -> Iterable[dict[str, Any]]:
    """Every rule applied (``rules``), or the one a legacy proposal names."""
    rules = proposal.get("rules") or ([proposal["rule"]] if proposal.get("rule") else [])
    seen = set()
    for rule in rules:
        key = (rule.get("says"), rule.get("source"))
        if key not in seen:
            seen.add(key)
            yield rule
