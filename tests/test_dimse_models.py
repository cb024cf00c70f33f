"""The SOP class UIDs `dicomnode.net.models` spells out are pynetdicom's
(which makes its names at run time, out of a type checker's sight)."""

from __future__ import annotations

import pytest
from pydicom.uid import UID
from pynetdicom import sop_class

from dicomnode.net import models

PYNETDICOM_NAMES = {
    "VERIFICATION": "Verification",
    "PATIENT_ROOT_FIND": "PatientRootQueryRetrieveInformationModelFind",
    "PATIENT_ROOT_MOVE": "PatientRootQueryRetrieveInformationModelMove",
    "PATIENT_ROOT_GET": "PatientRootQueryRetrieveInformationModelGet",
    "STUDY_ROOT_FIND": "StudyRootQueryRetrieveInformationModelFind",
    "STUDY_ROOT_MOVE": "StudyRootQueryRetrieveInformationModelMove",
    "STUDY_ROOT_GET": "StudyRootQueryRetrieveInformationModelGet",
}


@pytest.mark.parametrize(("ours", "theirs"), PYNETDICOM_NAMES.items())
def test_each_uid_is_pynetdicom_s(ours: str, theirs: str) -> None:
    assert getattr(models, ours) == getattr(sop_class, theirs)


def test_every_uid_is_checked_here() -> None:
    uids = {name for name, value in vars(models).items() if isinstance(value, UID)}
    assert uids == set(PYNETDICOM_NAMES)
