"""De-identification of a data set's attributes: the table plus a walker.

Walks every element at every depth and applies the action the profile gives
its tag (PS3.15 E.1-1); private elements, curves (50xx), overlays (60xx) and
icon images go; patient identity becomes keyed pseudonyms; UIDs are remapped;
dates move by one offset per patient; the result is marked as de-identified
and written back in UTF-8. Pixel data is another module's concern.

Combined action codes are resolved without IOD attribute types, towards the
least removal that is still de-identifying, so a conformant input stays
conformant: X/Z -> Z, X/D, Z/D, X/Z/D -> D. A sequence is removed only for X
and emptied only for Z; for every other action (D, the combinations, X/Z/U*)
its items are kept and the profile applied inside them (D on a sequence
means dummy content: the cleaned items are exactly that), since an emptied
Type 1 or Type 3 sequence breaks the IOD (dciodvfy says so).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from dicomnode.deid.profile import BASIC_PROFILE_CODE, Option, Profile
from dicomnode.deid.secret import Secret
from dicomnode.deid.values import age_string, dummy, remove_tokens, shift_date, shift_datetime

ICON_IMAGE_SEQUENCE = 0x00880200
_COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "K"}
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_IDENTITY_KEYWORDS = (
    "PatientName",
    "PatientID",
    "OtherPatientIDs",
    "OtherPatientNames",
    "PatientBirthName",
    "PatientMotherBirthName",
    "PatientBirthDate",
    "AccessionNumber",
    "InstitutionName",
    "InstitutionAddress",
    "ReferringPhysicianName",
    "PerformingPhysicianName",
    "OperatorsName",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "IssuerOfPatientID",
)


@dataclass(frozen=True)
class DeidSettings:
    """What a sending hospital's data gets; the defaults are what closure planning needs."""

    options: frozenset[Option] = frozenset(
        {
            Option.RETAIN_MODIFIED_DATES,
            Option.RETAIN_PATIENT_CHARACTERISTICS,
            Option.CLEAN_DESCRIPTORS,
        }
    )
    method_text: str = "CHD node: PS3.15 Basic Profile, keyed pseudonyms"
    # Private attributes known to be safe, as (group, private creator, element
    # byte); kept (text cleaned) only under the Retain Safe Private option.
    safe_private: frozenset[tuple[int, str, int]] = frozenset()


def parse_safe_private(text: str) -> frozenset[tuple[int, str, int]]:
    """``"0009:ACME ECHO 1.0:01; 0019:GEMS_ACQU_01:2A"`` -> allow-list entries."""
    entries = set()
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        try:
            group, creator, element = (p.strip() for p in item.split(":"))
            entry = (int(group, 16), creator, int(element, 16))
        except ValueError:
            raise ValueError(f"safe_private entry {item!r} is not GGGG:CREATOR:EE") from None
        if entry[0] % 2 == 0 or not 0 <= entry[2] <= 0xFF or not creator:
            raise ValueError(f"safe_private entry {item!r} is not a private attribute")
        entries.add(entry)
    return frozenset(entries)


@dataclass
class Subject:
    """Who the data set is about, as far as this step needs to know."""

    issuer: str
    patient_key: str  # PatientID, or a per-study key when there is none
    tokens: set[str] = field(default_factory=set)


def identity_tokens(ds: Dataset) -> set[str]:
    """Values (and their parts) that identify the subject, case-folded, for
    cleaning free text: names by component, IDs, birth date in common forms."""
    tokens: set[str] = set()
    for keyword in _IDENTITY_KEYWORDS:
        value = ds.get(keyword)
        if value in (None, ""):
            continue
        values = value if isinstance(value, MultiValue | list) else [value]
        for item in values:
            text = str(item).strip()
            if not text:
                continue
            tokens.add(text.casefold())
            for part in re.split(r"[\^=\s,]+", text):
                if len(part) >= 2:
                    tokens.add(part.casefold())
    birth = str(ds.get("PatientBirthDate") or "")
    if len(birth) == 8 and birth.isdigit():
        y, m, d = birth[:4], birth[4:6], birth[6:]
        tokens |= {f"{d}.{m}.{y}", f"{y}-{m}-{d}", f"{d}/{m}/{y}", f"{m}/{d}/{y}"}
    return tokens


class HeaderDeidentifier:
    def __init__(self, secret: Secret, settings: DeidSettings | None = None) -> None:
        self.secret = secret
        self.settings = settings or DeidSettings()
        self.profile = Profile(self.settings.options)

    def subject(self, ds: Dataset, issuer: str, patient_key: str) -> Subject:
        return Subject(issuer=issuer, patient_key=patient_key, tokens=identity_tokens(ds))

    def apply(self, ds: Dataset, subject: Subject) -> Dataset:
        """De-identify ``ds`` in place (and return it)."""
        ds.decode()  # every text value to Unicode before anything is compared
        self._keep_age(ds)
        shift = (
            self.secret.date_offset_days(subject.issuer, subject.patient_key)
            if Option.RETAIN_MODIFIED_DATES in self.settings.options
            and Option.RETAIN_FULL_DATES not in self.settings.options
            else None
        )
        self._walk(ds, subject, shift)
        self._replace_identity(ds, subject)
        self._mark(ds, shifted=shift is not None)
        ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    def _keep_age(self, ds: Dataset) -> None:
        """Birth date goes (Z); device sizing still needs the age at the study."""
        if Option.RETAIN_PATIENT_CHARACTERISTICS not in self.settings.options:
            return
        if str(ds.get("PatientAge") or "").strip():
            return
        seen = next(
            (str(ds.get(k)) for k in ("StudyDate", "SeriesDate", "ContentDate") if ds.get(k)),
            "",
        )
        age = age_string(str(ds.get("PatientBirthDate") or ""), seen)
        if age:
            ds.PatientAge = age

    # -- the walk ---------------------------------------------------------
    def _walk(self, ds: Dataset, subject: Subject, shift: int | None) -> None:
        for element in list(ds):
            tag = int(element.tag)
            group = tag >> 16
            if group % 2 == 1:
                if self._safe_private(ds, tag):
                    self._apply(ds, element, "C", subject, shift)
                else:
                    del ds[tag]
                continue
            if group & 0xFF00 in (0x5000, 0x6000) or tag == ICON_IMAGE_SEQUENCE:
                del ds[tag]  # curves, overlays, icons
                continue
            action = self.profile.action(tag)
            if element.VR == "SQ":
                self._sequence(ds, element, action, subject, shift)
            elif action is not None:
                self._apply(ds, element, _COMBINED.get(action, action), subject, shift)

    def _safe_private(self, ds: Dataset, tag: int) -> bool:
        """Allow-listed under Retain Safe Private (creators of kept ones too)."""
        allowed = self.settings.safe_private
        if Option.RETAIN_SAFE_PRIVATE not in self.settings.options or not allowed:
            return False
        group, element = tag >> 16, tag & 0xFFFF
        if 0x0010 <= element <= 0x00FF:  # a private creator element
            creator = str(ds[tag].value).strip()
            return any(g == group and c == creator for g, c, _ in allowed)
        creator_tag = (group << 16) | (element >> 8)
        if element < 0x1000 or creator_tag not in ds:
            return False
        creator = str(ds[creator_tag].value).strip()
        return (group, creator, element & 0xFF) in allowed

    def _sequence(
        self,
        ds: Dataset,
        element: DataElement,
        action: str | None,
        subject: Subject,
        shift: int | None,
    ) -> None:
        if action == "X":
            del ds[element.tag]
        elif action == "Z":
            element.value = Sequence()
        else:  # D, K, C, U (within), or not listed: keep the items, cleaned
            for item in element.value:
                self._walk(item, subject, shift)

    def _apply(
        self,
        ds: Dataset,
        element: DataElement,
        action: str,
        subject: Subject,
        shift: int | None,
    ) -> None:
        vr = element.VR
        if action == "X":
            del ds[element.tag]
        elif action == "Z":
            element.value = None
        elif action == "D":
            element.value = self._dated(element, shift) if vr in ("DA", "DT") else dummy(vr)
            if vr == "UI":
                element.value = self._uids(element.value)
        elif action == "U":
            element.value = self._uids(element.value)
        elif action == "C":
            element.value = self._clean(element, subject, shift)
        # K: keep as is

    # -- values -----------------------------------------------------------
    def _uids(self, value: Any) -> Any:
        if isinstance(value, MultiValue | list):
            return [self.secret.uid(str(v)) for v in value]
        return self.secret.uid(str(value)) if value else value

    @staticmethod
    def _dated(element: DataElement, shift: int | None) -> Any:
        if shift is None or not element.value:
            return dummy(element.VR)
        move = shift_date if element.VR == "DA" else shift_datetime
        values = element.value if isinstance(element.value, MultiValue | list) else [element.value]
        try:
            moved = [move(str(v), shift) for v in values]
        except ValueError:
            return dummy(element.VR)
        return moved if len(moved) > 1 else moved[0]

    def _clean(self, element: DataElement, subject: Subject, shift: int | None) -> Any:
        vr = element.VR
        if vr in ("DA", "DT"):
            return self._dated(element, shift)
        if vr == "TM":
            return element.value  # whole-day shifts leave the time of day
        if vr in _TEXT_VRS and vr != "PN":
            if Option.CLEAN_DESCRIPTORS not in self.settings.options:
                return dummy(vr)
            values = (
                element.value if isinstance(element.value, MultiValue | list) else [element.value]
            )
            cleaned = [remove_tokens(str(v), subject.tokens) for v in values if v is not None]
            cleaned = [c for c in cleaned if c]
            return None if not cleaned else (cleaned if len(cleaned) > 1 else cleaned[0])
        return dummy(vr)

    # -- identity and markers ----------------------------------------------
    def _replace_identity(self, ds: Dataset, subject: Subject) -> None:
        pseudonym = self.secret.pseudonym(subject.issuer, subject.patient_key)
        ds.PatientID = pseudonym
        ds.PatientName = PersonName(pseudonym)
        for keyword, purpose, length in (
            ("AccessionNumber", "accession", 12),
            ("StudyID", "study-id", 8),
        ):
            if keyword in ds and ds[keyword].value:
                value = str(ds[keyword].value)
                ds[keyword].value = self.secret.token(purpose, subject.issuer, value, length=length)

    @staticmethod
    def add_method_code(ds: Dataset, option: Option) -> None:
        """Record an option applied after the header step (Clean Pixel Data)."""
        item = Dataset()
        item.CodeValue = option.code
        item.CodingSchemeDesignator = "DCM"
        item.CodeMeaning = option.meaning
        ds.DeidentificationMethodCodeSequence.append(item)

    def _mark(self, ds: Dataset, *, shifted: bool) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self.settings.method_text[:64]
        codes = [BASIC_PROFILE_CODE] + [
            (o.code, o.meaning) for o in Option if o in self.settings.options
        ]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if shifted:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif Option.RETAIN_FULL_DATES in self.settings.options:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
