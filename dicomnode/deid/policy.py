"""Beyond Table E.1-1: what happens to a standard attribute the table omits.

Table E.1-1 is the floor. A sender (or a de-identifier that trusted the
table alone) can put a name in any attribute the table does not list: an SR
Text Value, a frame label, a code meaning, a retrieve URL. So the node keeps
such an attribute only when ``retained_attributes.json`` (shipped beside the
profile table, each row with its reason) says it is safe, and otherwise
decides by what its VR can carry:

- text, names, dates, times, URLs and unknown bytes (AE, DA, DT, TM, LO, LT,
  PN, SH, ST, UC, UR, UT, UN, OB/OW) are removed;
- UIDs are remapped (the caller keeps the standard's well-known ones);
- numbers, code strings, tags and sequences are kept (a sequence's items go
  through the same rules at every depth).

Rows marked ``clean`` are free text a clinician reads (SR text, graphic
annotations, labels): the descriptor cleaner takes identity out and the rest
stays. ``meaning`` is Code Meaning, taken from the standard's code tables.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files

RETAINED_FILE = "retained_attributes.json"

KEEP, CLEAN, MEANING, REMOVE, REMAP = "keep", "clean", "meaning", "remove", "remap"
# VRs that can carry free text, a name, a date or a URL (the list);
# OB/OW of standard attributes the retained table does not name count as
# bytes of unknown content.
RISKY_VRS = frozenset(
    {"AE", "DA", "DT", "TM", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT", "UN", "OB", "OW"}
)
# VRs whose values are text (kept ones still pass the descriptor cleaner).
TEXT_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"})


# Of the descriptors Clean Descriptors would keep cleaned, the ones a
# cardiologist reads to find and understand a study. The rest (comments,
# histories, reasons, diagnoses typed by staff) name relatives and staff the
# header never mentions, so they get the Basic Profile's action instead.
DESCRIPTORS_KEPT = frozenset(
    {
        0x00081030,  # StudyDescription
        0x0008103E,  # SeriesDescription
        0x00181030,  # ProtocolName
        0x00400254,  # PerformedProcedureStepDescription
        0x00321060,  # RequestedProcedureDescription
        0x00400007,  # ScheduledProcedureStepDescription
        0x00204000,  # ImageComments
        0x00209158,  # FrameComments
        0x00181400,  # AcquisitionDeviceProcessingDescription
        0x00180010,  # ContrastBolusAgent
        0x00189424,  # AcquisitionProtocolDescription
    }
)


# Dates that are not the patient's: shifting them by the patient's offset
# would give the offset away to anyone who knows the true one (a context
# group's version, a device's calibration day), and keeping them would keep
# whatever a sender wrote there (a birth date), so they go.
DATE_OVERRIDES = {
    0x00080106: "X",  # ContextGroupVersion
    0x00080107: "X",  # ContextGroupLocalVersion
    0x00181200: "X",  # DateOfLastCalibration
    0x00181202: "X",  # DateTimeOfLastCalibration
    0x00181204: "X",  # DateOfManufacture
    0x00181205: "X",  # DateOfInstallation
    0x0018700C: "X",  # DateOfLastDetectorCalibration
}


@cache
def retained() -> dict[int, str]:
    """Tag -> ``keep`` / ``clean`` / ``meaning`` for the attributes named safe."""
    rows = json.loads(files("dicomnode.deid").joinpath(RETAINED_FILE).read_text("utf-8"))
    return {int(row["tag"].strip("()").replace(",", ""), 16): row["action"] for row in rows}


def beyond_table(tag: int, vr: str) -> str:
    """The action for a standard attribute that Table E.1-1 does not list."""
    named = retained().get(tag)
    if named is not None:
        return named
    if vr == "UI":
        return REMAP
    if vr in RISKY_VRS or "OB" in vr or "OW" in vr:  # "OB or OW" as pydicom spells it
        return REMOVE
    return KEEP
