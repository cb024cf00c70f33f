"""What the standard itself says: code meanings and well-known UIDs.

A sender can write anything into a Code Meaning or a UID, including a name or
an MRN. The node keeps what it can check against the standard's own tables
(pydicom ships PS3.16's concepts and PS3.6's UID registry) and replaces the
rest: a coded entry keeps its value and scheme, and its meaning comes from
the table, never from the sender.
"""

from __future__ import annotations

import re
from functools import cache

from pydicom._uid_dict import UID_dictionary
from pydicom.sr._concepts_dict import concepts
from pydicom.sr._snomed_dict import mapping as snomed_mapping

# A code the node cannot check: value and scheme are kept, the sender's words
# are not. Code Meaning is Type 1 wherever it stands, so it is replaced rather
# than removed: an emptied attribute would break the IOD for every reader.
LOCAL_MEANING = "(local code)"

# Coding schemes whose codes are their own meaning (units of measure).
_SELF_DESCRIBING = {"UCUM"}

# Registries that are not DICOM's but are named by well-known OIDs in coded
# entries (HL7's registry of coding systems, PS3.16 Table 8-1).
_WELL_KNOWN_OIDS = {
    "2.16.840.1.113883.6.1",  # LOINC
    "2.16.840.1.113883.6.96",  # SNOMED CT
    "2.16.840.1.113883.6.8",  # UCUM
    "2.16.840.1.113883.6.90",  # ICD-10-CM
    "2.16.840.1.113883.6.3",  # ICD-10
    "2.16.840.1.113883.6.103",  # ICD-9-CM
    "2.16.840.1.113883.6.24",  # MDC (ISO/IEEE 11073)
    "2.16.840.1.113883.6.256",  # RadLex
    "2.16.840.1.113883.3.26.1.1",  # NCI Thesaurus
    "2.16.840.1.113883.6.86",  # UMLS
    "2.16.840.1.113883.6.119",  # FMA
    "1.2.840.10008.2.16.4",  # DCM
}


@cache
def _meanings() -> dict[tuple[str, str], str]:
    """(scheme, code value) -> meaning, from every scheme pydicom knows."""
    table: dict[tuple[str, str], str] = {}
    for scheme, by_name in concepts.items():
        for codes in by_name.values():
            if not isinstance(codes, dict):  # pydicom's generated table is untyped
                continue
            for value, (meaning, _cids) in codes.items():
                table[(scheme, value)] = meaning
    # SNOMED codes still sent under the retired SRT designator (SRT -> SCT).
    for srt, sct in snomed_mapping.get("SRT", {}).items():
        if ("SCT", sct) in table:
            table[("SRT", srt)] = table[("SCT", sct)]
    return table


@cache
def known_schemes() -> frozenset[str]:
    """Coding Scheme Designators of the standard's tables (DCM, SCT, UMLS ...)."""
    return frozenset({scheme for scheme, _ in _meanings()} | _SELF_DESCRIBING | {"SRT"})


def standard_meaning(scheme: str, value: str) -> str | None:
    """The meaning the standard's tables give, or None for a code they lack."""
    scheme, value = scheme.strip(), value.strip()
    if scheme in _SELF_DESCRIBING and value:
        return value
    return _meanings().get((scheme, value))


# Context Group UIDs (PS3.16 Annex A): 1.2.840.10008.6.1.<a few digits>.
_CONTEXT_GROUP = re.compile(r"^1\.2\.840\.10008\.6\.1\.[1-9][0-9]{0,4}$")


def is_well_known_uid(uid: str) -> bool:
    """A UID the standard defines (SOP classes, transfer syntaxes, coding
    schemes, context groups, well-known frames of reference), which
    identifies nobody."""
    uid = uid.strip().rstrip("\x00")
    return uid in UID_dictionary or uid in _WELL_KNOWN_OIDS or bool(_CONTEXT_GROUP.match(uid))
