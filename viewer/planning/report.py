"""The plan as a DICOM Structured Report (TID 1500 Measurement Report).

Each filled slot of the worksheet becomes a measurement (mm, UCUM) in a
measurement group tracked per defect, referencing the image and frame it was
drawn on; the SR is a Comprehensive SR built with highdicom, whose patient
and study modules come from the (already de-identified) evidence.
"""

from __future__ import annotations

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
from viewer.planning.worksheet import CATALOGUE, Slot

LOCAL_SCHEME = "99CHDNODE"  # local codes for worksheet slots (PS3.16 8.2)
MM = CodedConcept("mm", "UCUM", "millimeter")
CLOSURE_PLANNING = CodedConcept("CLOSURE-PLAN", LOCAL_SCHEME, "Transcatheter closure planning")


# The observer of a plan's report is named by role: the login names a member
# of staff, and who saved which version is in the plan row and the audit trail.
OBSERVER_ROLES = {
    "cardiologist": "Cardiologist",
    "admin": "Administrator",
    "researcher": "Researcher",
}


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
