"""The SOP classes the DIMSE service names itself: Verification and the
Query/Retrieve information models (PS3.4 A.4, C.6.1, C.6.2).

pynetdicom.sop_class makes its names at run time (through ``globals()``), so
a type checker cannot see them; the UIDs are the standard's and never change.
"""

from __future__ import annotations

from pydicom.uid import UID

VERIFICATION = UID("1.2.840.10008.1.1")
PATIENT_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.1.1")
PATIENT_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.1.2")
PATIENT_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.1.3")
STUDY_ROOT_FIND = UID("1.2.840.10008.5.1.4.1.2.2.1")
STUDY_ROOT_MOVE = UID("1.2.840.10008.5.1.4.1.2.2.2")
STUDY_ROOT_GET = UID("1.2.840.10008.5.1.4.1.2.2.3")
