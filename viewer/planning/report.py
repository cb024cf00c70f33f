"""The plan as a DICOM Structured Report (TID 1500 Measurement Report).

Each filled slot of the worksheet becomes a measurement (mm, UCUM) in a
measurement group tracked per defect, referencing the image and frame it was
drawn on; the SR is a Comprehensive SR built with highdicom, whose patient
and study modules come from the (already de-identified) evidence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from highdicom.sr import (
    CodedConcept,
    ComprehensiveSR,
    Measurement,
    MeasurementReport,
    MeasurementsAndQualitativeEvaluations,
    ObservationContext,
    ObserverContext,
    PersonObserverIdentifyingAttributes,
    SourceImageForMeasurement,
    TrackingIdentifier,
)
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from dicomnode import UID_ROOT

LOCAL_SCHEME = "99CHDNODE"  # local codes for worksheet slots (PS3.16 8.2)
MM = CodedConcept("mm", "UCUM", "millimeter")
CLOSURE_PLANNING = CodedConcept("CLOSURE-PLAN", LOCAL_SCHEME, "Transcatheter closure planning")


# The worksheet of each defect: its slots' local codes and what they mean.
# The server's own catalogue, so what a browser sends as a meaning never
# reaches a report or a stored plan (it could name anyone); planning.js
# draws the same worksheet (tests/test_planning.py keeps the two equal).
WORKSHEET: dict[str, tuple[tuple[str, str], ...]] = {
    "secundum ASD": (
        ("ASD-MAX-DIAMETER", "ASD maximal diameter (view 1)"),
        ("ASD-MAX-DIAMETER-2", "ASD maximal diameter (view 2)"),
        ("ASD-SEPTAL-LENGTH", "Total septal length"),
        ("ASD-STRETCHED", "Stretched (balloon) diameter"),
    ),
    "PDA": (
        ("PDA-NARROWEST", "Narrowest (pulmonary end) diameter"),
        ("PDA-AMPULLA", "Aortic ampulla diameter"),
        ("PDA-LENGTH", "Duct length"),
    ),
    "perimembranous VSD": (
        ("VSD-LV-DIAMETER", "LV-side diameter"),
        ("VSD-RV-DIAMETER", "RV-side diameter"),
        ("VSD-AORTIC-DISTANCE", "Distance to the aortic valve"),
    ),
    "muscular VSD": (
        ("VSD-LV-DIAMETER", "LV-side diameter"),
        ("VSD-RV-DIAMETER", "RV-side diameter"),
    ),
}
# The septal rims the worksheet asks for (ASD), each a slot RIM-<NAME>.
RIMS = ("aortic", "SVC", "IVC", "posterior", "AV-valve")
CATALOGUE: dict[str, str] = {
    **{code: meaning for slots in WORKSHEET.values() for code, meaning in slots},
    **{f"RIM-{rim.upper()}": f"{rim} rim" for rim in RIMS},
}
# The observer of a plan's report is named by role: the login names a member
# of staff, and who saved which version is in the plan row and the audit trail.
OBSERVER_ROLES = {
    "cardiologist": "Cardiologist",
    "admin": "Administrator",
    "researcher": "Researcher",
}


class UnknownSlot(ValueError):
    """A slot the worksheet does not have. The message names the ones it has,
    never the one given (free text from a browser: it may name anyone)."""


@dataclass(frozen=True)
class Slot:
    """One worksheet value: what it is, how much, and where it was measured.
    The meaning is the catalogue's, never given."""

    code: str  # e.g. "ASD-MAX-DIAMETER"
    value_mm: float
    instance_uid: str | None = None
    frame: int | None = None
    meaning: str = field(init=False)  # e.g. "ASD maximal diameter (view 1)"

    def __post_init__(self) -> None:
        if self.code not in CATALOGUE:
            raise UnknownSlot("not a slot of any worksheet")
        object.__setattr__(self, "meaning", CATALOGUE[self.code])


def worksheet_slot(
    defect: str,
    code: str,
    value_mm: float,
    instance_uid: str | None = None,
    frame: int | None = None,
) -> Slot:
    """A slot of ``defect``'s worksheet; UnknownSlot for any other code."""
    codes = [known for known, _ in WORKSHEET.get(defect, ())]
    if code not in codes:
        raise UnknownSlot(f"the {defect} worksheet has only {', '.join(codes)}")
    return Slot(code, value_mm, instance_uid, frame)


def rim_slot(rim: str, value_mm: float) -> Slot:
    """The slot of one septal rim; UnknownSlot for a rim the worksheet lacks."""
    if rim not in RIMS:
        raise UnknownSlot(f"the worksheet's rims are {', '.join(RIMS)}")
    return Slot(f"RIM-{rim.upper()}", value_mm)


def observer_name(role: str) -> str:
    """The report's Person Observer Name: the role, on behalf of the node."""
    return f"{OBSERVER_ROLES.get(role, 'Clinician')}^CHD node"


def measurement_report(
    evidence: list[Dataset],
    slots: list[Slot],
    *,
    defect: str,
    observer: str,
    series_number: int = 900,
) -> ComprehensiveSR:
    """``observer`` is a Person Name for the role (`observer_name`), not a login."""
    by_uid = {str(ds.SOPInstanceUID): ds for ds in evidence}
    measurements = []
    for slot in slots:
        images = []
        if slot.instance_uid in by_uid:
            source = by_uid[slot.instance_uid]
            images.append(
                SourceImageForMeasurement(
                    referenced_sop_class_uid=source.SOPClassUID,
                    referenced_sop_instance_uid=source.SOPInstanceUID,
                    referenced_frame_numbers=[slot.frame] if slot.frame else None,
                )
            )
        measurements.append(
            Measurement(
                name=CodedConcept(slot.code, LOCAL_SCHEME, CATALOGUE[slot.code]),
                value=round(slot.value_mm, 2),
                unit=MM,
                referenced_images=images or None,
            )
        )
    group = MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(
            uid=generate_uid(UID_ROOT + ".5."), identifier=f"{defect} closure plan"
        ),
        measurements=measurements,
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
    return ComprehensiveSR(
        evidence=evidence,
        content=report,
        series_instance_uid=generate_uid(UID_ROOT + ".5."),
        series_number=series_number,
        sop_instance_uid=generate_uid(UID_ROOT + ".5."),
        instance_number=1,
        manufacturer="CHD imaging exchange node",
        series_description=f"Closure plan ({defect}) {datetime.now():%Y-%m-%d %H:%M}",
    )
