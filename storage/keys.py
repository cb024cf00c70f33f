"""The attributes the index keeps, one row per attribute, by query level.

This table is the single place that says which DICOM attribute lives at which
level and how it is matched; the SQL schema, the extraction from instances and
the C-FIND / QIDO-RS translation are all derived from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property

from pydicom.datadict import dictionary_VR, tag_for_keyword


class Level(StrEnum):
    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def depth(self) -> int:
        return list(Level).index(self)


@dataclass(frozen=True)
class Attribute:
    keyword: str
    level: Level

    @cached_property
    def column(self) -> str:
        return self.keyword.lower()

    @cached_property
    def vr(self) -> str:
        return dictionary_VR(self.keyword)

    @cached_property
    def tag(self) -> int:
        tag = tag_for_keyword(self.keyword)
        assert tag is not None, self.keyword
        return tag


_BY_LEVEL: dict[Level, tuple[str, ...]] = {
    Level.PATIENT: (
        "PatientID",
        "IssuerOfPatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
    ),
    Level.STUDY: (
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "AccessionNumber",
        "StudyID",
        "StudyDescription",
        "ReferringPhysicianName",
        "PatientAge",
        "PatientSize",
        "PatientWeight",
    ),
    Level.SERIES: (
        "SeriesInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "SeriesDate",
        "SeriesTime",
        "BodyPartExamined",
        "Manufacturer",
        "ManufacturerModelName",
        "StationName",
        "InstitutionName",
    ),
    Level.IMAGE: (
        "SOPInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "NumberOfFrames",
        "ContentDate",
        "ContentTime",
        "Rows",
        "Columns",
        "AvailableTransferSyntaxUID",
    ),
}

ATTRIBUTES: dict[str, Attribute] = {
    keyword: Attribute(keyword, level)
    for level, keywords in _BY_LEVEL.items()
    for keyword in keywords
}

# The key that identifies a record of each level (PS3.4 C.6 unique keys).
UNIQUE_KEY: dict[Level, str] = {
    Level.PATIENT: "PatientID",
    Level.STUDY: "StudyInstanceUID",
    Level.SERIES: "SeriesInstanceUID",
    Level.IMAGE: "SOPInstanceUID",
}

# Keys computed from the records below a level rather than stored with it.
COMPUTED: dict[str, Level] = {
    "NumberOfPatientRelatedStudies": Level.PATIENT,
    "NumberOfPatientRelatedSeries": Level.PATIENT,
    "NumberOfPatientRelatedInstances": Level.PATIENT,
    "NumberOfStudyRelatedSeries": Level.STUDY,
    "NumberOfStudyRelatedInstances": Level.STUDY,
    "ModalitiesInStudy": Level.STUDY,
    "SOPClassesInStudy": Level.STUDY,
    "NumberOfSeriesRelatedInstances": Level.SERIES,
}


def attributes_at(level: Level) -> list[Attribute]:
    return [a for a in ATTRIBUTES.values() if a.level is level]
