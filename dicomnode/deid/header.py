"""De-identification of a data set's attributes: the table, the policy, a walker.

Walks every element at every depth. An attribute Table E.1-1 lists gets the
table's action (PS3.15 E.1-1, the floor); one it does not list gets the
node's policy (`dicomnode.deid.policy`: kept only when known safe, else
removed by what its VR can carry). Every UID the standard does not define is
remapped wherever it stands; Code Meanings come from the standard's tables;
free text that is kept goes through the descriptor cleaner, which finds the
child's and the staff's names, IDs, dates, phones and places however they
are written. Private elements, curves (50xx), overlays (60xx) and icon images
go; patient identity becomes keyed pseudonyms; dates move by one offset per
patient and lose their time zone; ages over 89 become 090Y; the result is
marked as de-identified and written back in UTF-8. Pixel data is another
module's concern.

Combined action codes are resolved without IOD attribute types, towards the
least removal that is still de-identifying, so a conformant input stays
conformant: X/Z -> Z, X/D, Z/D, X/Z/D -> D. A sequence is removed only for X
and emptied only for Z; for every other action (D, the combinations, X/Z/U*)
its items are kept and the rules applied inside them (D on a sequence means
dummy content: the cleaned items are exactly that), since an emptied Type 1
or Type 3 sequence breaks the IOD (dciodvfy says so).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import DicomDictionary
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.valuerep import PersonName

from dicomnode.deid import policy
from dicomnode.deid.codes import LOCAL_MEANING, is_well_known_uid, known_schemes, standard_meaning
from dicomnode.deid.identity import MARK, Hit, IdentityMatcher, mark
from dicomnode.deid.names import SPACED, find_identifiers, find_names
from dicomnode.deid.options import DeidPolicy, parse_safe_private  # noqa: F401 (re-exported)
from dicomnode.deid.plausible import HEIGHT_M, WEIGHT_KG, in_bounds
from dicomnode.deid.profile import BASIC_PROFILE_CODE, Option, Profile
from dicomnode.deid.secret import Secret
from dicomnode.deid.values import (
    STRICT_VRS,
    age_string,
    cap_age,
    dummy,
    lived_age,
    strip_offset,
    well_formed,
)
from dicomnode.media.sopclasses import is_unknown_storage

ICON_IMAGE_SEQUENCE = 0x00880200
ENCAPSULATED_DOCUMENT = 0x00420011
# Encapsulated PDF, CDA, STL, OBJ, MTL: documents the node cannot clean, so
# their payload is kept and the pipeline holds every such instance for review.
ENCAPSULATED_CLASSES = "1.2.840.10008.5.1.4.1.1.104."
TIMEZONE_OFFSET = 0x00080201
_CODE_PARTS = (0x00080100, 0x00080102)  # Code Value, Coding Scheme Designator
LABEL_DUMMY = "LABEL"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_NUMBER_FORMS = {
    "DS": re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?"),
    "IS": re.compile(r"[+-]?\d+"),
    "AS": re.compile(r"\d{3}[DWMY]"),
}
_COMBINED = {"X/Z": "Z", "X/D": "D", "Z/D": "D", "X/Z/D": "D", "X/Z/U*": "K"}
# Always applied by the walker, whatever a hospital's options say: SR content
# and graphic annotations are walked and their text cleaned like any other.
_ALWAYS = (Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS)


# The walker's settings are the sender's policy, resolved once (`deid.options`).
DeidSettings = DeidPolicy


@dataclass
class Subject:
    """Who the data set is about, as far as this step needs to know."""

    issuer: str
    patient_key: str  # PatientID, or a per-study key when there is none
    matcher: IdentityMatcher = field(default_factory=lambda: IdentityMatcher.from_values(()))
    # Kinds of identity the cleaner leaves in place (an option retains them).
    kept_kinds: frozenset[str] = frozenset()
    # Original UIDs another patient already holds: remapped within this
    # patient's scope, so its instance never joins (or replaces) the other's.
    scoped_uids: frozenset[str] = frozenset()
    # New UIDs (UID -> level) nobody held when looked at, for the store's own
    # transaction to claim (`Deidentifier._claim`, optimistic).
    claims: dict[str, str] = field(default_factory=dict)


def _redecoded(text: str) -> list[str]:
    """``text`` as it reads if its bytes were UTF-8, Windows Cyrillic or
    GB18030 wrongly decoded as Latin-1 (a sender's wrong character set)."""
    if text.isascii() or any(ord(ch) > 0xFF for ch in text):
        return []
    raw = text.encode("latin-1")
    found = []
    for encoding in ("utf-8", "cp1251", "gb18030"):
        try:
            other = raw.decode(encoding)
        except UnicodeDecodeError:
            continue
        if other != text:
            found.append(other)
    return found


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return list(value) if isinstance(value, MultiValue | list) else [value]


def _one_or_many(values: list[Any]) -> Any:
    if not values:
        return None
    return values if len(values) > 1 else values[0]


class HeaderDeidentifier:
    def __init__(self, secret: Secret, settings: DeidPolicy | None = None) -> None:
        self.secret = secret
        self.settings = settings or DeidPolicy()
        self.profile = Profile(self.settings.options)

    def subject(
        self,
        ds: Dataset,
        issuer: str,
        patient_key: str,
        extra: Iterable[tuple[str, str]] = (),
        handles: Iterable[str] = (),
        own: Iterable[str] = (),
    ) -> Subject:
        """Who ``ds`` is about, read from it as received (before `apply`);
        ``handles`` and ``own`` as `IdentityMatcher.from_dataset` takes them."""
        kept = set()
        if self.settings.keeps_institution:
            kept.add("place")
        return Subject(
            issuer=issuer,
            patient_key=patient_key,
            matcher=IdentityMatcher.from_dataset(ds, extra, handles, own),
            kept_kinds=frozenset(kept),
        )

    def apply(self, ds: Dataset, subject: Subject) -> Dataset:
        """De-identify ``ds`` in place (and return it)."""
        ds.decode()  # every text value to Unicode before anything is compared
        self._keep_characteristics(ds)
        shift = (
            self.secret.date_offset_days(subject.issuer, subject.patient_key)
            if self.settings.shifts_dates
            else None
        )
        sop_class = str(ds.get("SOPClassUID", ""))
        self._walk(ds, subject, shift)
        self._keep_unknown_class(ds, sop_class, subject)
        self._replace_identity(ds, subject)
        self._mark(ds, shifted=shift is not None)
        ds.SpecificCharacterSet = "ISO_IR 192"
        return ds

    @staticmethod
    def _keep_unknown_class(ds: Dataset, sop_class: str, subject: Subject) -> None:
        """The instance's own class, when the standard does not define it (a
        vendor's storage class, unknown_sop_class_accepted), stays what the
        node accepted and serves it as, unless it carries the child's
        identity. Every other UID the standard does not define, class UIDs
        elsewhere included, is remapped."""
        if is_unknown_storage(sop_class) and not subject.matcher.find(sop_class):
            ds.SOPClassUID = sop_class

    def clean_text(self, text: str, subject: Subject) -> str:
        """``text`` with every identity the matcher finds, every person named
        by context or form, and every date, phone, long number or address,
        replaced by the mark. Text that reads as mis-decoded bytes (a sender's
        wrong character set) and names anyone once decoded right is replaced
        whole: its spans cannot be mapped back."""
        spans = self._spans(text, subject)
        if not spans and any(self._spans(other, subject) for other in _redecoded(text)):
            return MARK
        return mark(text, [Hit("name", start, end) for start, end in spans])

    @staticmethod
    def _spans(text: str, subject: Subject) -> list[tuple[int, int]]:
        spans = [
            (h.start, h.end) for h in subject.matcher.find(text) if h.kind not in subject.kept_kinds
        ]
        spans += list(find_names(text))
        spans += [  # letters one by one: "Z H U M A B E K O V"
            (run.start(), run.end())
            for run in SPACED.finditer(text)
            if subject.matcher.find(re.sub(r"[ .\-]", "", run.group()))
        ]
        spans += [
            (start, end)
            for start, end, kind in find_identifiers(text)
            if kind not in subject.kept_kinds
        ]
        return spans

    def _keep_characteristics(self, ds: Dataset) -> None:
        """Birth date goes (Z); device sizing still needs the age at the study,
        but over 89 years an age identifies (HIPAA safe harbour): 090Y. A
        placeholder is not kept as data: no age from a placeholder birth date,
        and a weight or height of 0 or out of bounds (grams, centimetres) is
        emptied (Type 2), so no child is stored as 090Y or 0 kg."""
        if not self.settings.keeps_characteristics:
            return
        for keyword, bounds in (("PatientWeight", WEIGHT_KG), ("PatientSize", HEIGHT_M)):
            if keyword in ds and not in_bounds(ds[keyword].value, bounds):
                ds[keyword].value = None
        if "PatientAge" in ds:
            ds.PatientAge = lived_age(str(ds.PatientAge or ""))
        if not str(ds.get("PatientAge") or "").strip():
            seen = next(
                (str(ds.get(k)) for k in ("StudyDate", "SeriesDate", "ContentDate") if ds.get(k)),
                "",
            )
            age = age_string(str(ds.get("PatientBirthDate") or ""), seen)
            if age:
                ds.PatientAge = age
        if "PatientAge" in ds and not self.settings.keeps_ages_over_89:
            ds.PatientAge = cap_age(str(ds.PatientAge or ""))

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
            if tag == ENCAPSULATED_DOCUMENT:
                if not str(ds.get("SOPClassUID", "")).startswith(ENCAPSULATED_CLASSES):
                    del ds[tag]  # a document smuggled into another kind of instance
                continue  # else kept for review: the pipeline holds every such instance
            if tag not in DicomDictionary and tag & 0xFFFF:
                del ds[tag]  # a public tag the standard does not define: unknown content
                continue
            if tag == TIMEZONE_OFFSET:
                if not self.settings.keeps_timezone:
                    del ds[tag]
                continue
            action = policy.DATE_OVERRIDES.get(tag) or self.profile.action(tag)
            if action is None:
                action = self._beyond_table(ds, element)
            elif action == "C" and element.VR in policy.TEXT_VRS:
                action = self._descriptor(tag)
            standard_vr = DicomDictionary.get(tag, ("",))[0]
            if standard_vr in STRICT_VRS and standard_vr != element.VR:
                element.VR = standard_vr  # StudyTime sent as LO is still a time
            if element.VR == "SQ":
                self._sequence(ds, element, action, subject, shift)
            elif action is not None:
                self._apply(ds, element, _COMBINED.get(action, action), subject, shift)

    def _beyond_table(self, ds: Dataset, element: DataElement) -> str | None:
        """The policy's action for an attribute Table E.1-1 does not list, in
        the walker's codes (None: done here, or nothing to do)."""
        decision = policy.beyond_table(int(element.tag), element.VR)
        if decision == policy.MEANING:
            element.value = self._meaning(ds)
            return None
        return {
            policy.REMOVE: "X",
            policy.REMAP: "U",
            policy.CLEAN: "C",
            policy.KEEP: "KEEP-CLEAN",
        }[decision]

    def _descriptor(self, tag: int) -> str:
        """Clean Descriptors keeps the descriptors a cardiologist reads; the
        others get the Basic Profile's own action."""
        if tag in policy.DESCRIPTORS_KEPT:
            return "C"
        rule = self.profile.rule(tag)
        return rule.basic if rule is not None else "X"

    @staticmethod
    def _standard_code(item: Dataset) -> bool:
        """Whether the item's code value and scheme are in the standard's tables."""
        value = str(item.get("CodeValue") or "")
        return standard_meaning(str(item.get("CodingSchemeDesignator") or ""), value) is not None

    @staticmethod
    def _known_scheme(item: Dataset) -> bool:
        """Whether the item's coding scheme is one the standard's tables hold."""
        return str(item.get("CodingSchemeDesignator") or "").strip() in known_schemes()

    @staticmethod
    def _meaning(item: Dataset) -> str:
        """The standard's meaning for the item's code, never the sender's."""
        value = str(item.get("CodeValue") or item.get("LongCodeValue") or "")
        scheme = str(item.get("CodingSchemeDesignator") or "")
        return standard_meaning(scheme, value) or LOCAL_MEANING

    def _safe_private(self, ds: Dataset, tag: int) -> bool:
        """Allow-listed under Retain Safe Private (creators of kept ones too)."""
        allowed = self.settings.kept_private
        if not allowed:
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
            return
        if int(element.tag) in _CODE_PARTS and self._standard_code(ds):
            return  # a concept of the standard's tables ("121049"), not a record number
        if int(element.tag) == _CODE_PARTS[0] and vr == "SH" and self._known_scheme(ds):
            # A code of a known scheme (UMLS C0034375) has the shape of a record
            # number; only the child's own identity is taken out of it.
            element.value = mark(
                str(element.value or ""),
                [
                    h
                    for h in subject.matcher.find(str(element.value or ""))
                    if h.kind not in subject.kept_kinds
                ],
            )
            return
        if action == "Z":
            element.value = None
        elif action == "D":
            element.value = self._dated(element, shift) if vr in ("DA", "DT") else dummy(vr)
        elif action == "C":
            element.value = self._clean(element, subject, shift)
        elif action in ("KEEP-CLEAN", "K") and vr in policy.TEXT_VRS and vr not in ("CS", "PN"):
            element.value = self._cleaned_text(element, subject)
        elif vr == "CS" and element.value:
            element.value = self._cleaned_label(element, subject)
        elif (
            vr in ("DS", "IS", "AS")
            and element.value not in (None, "")
            and not self._number_kept(element, subject)
        ):
            del ds[element.tag]
            return
        # U, K and KEEP-CLEAN of other VRs: the value stands, but for UIDs;
        # a date or a time stands only as one (each value of a list).
        if vr in STRICT_VRS and element.value:
            element.value = _one_or_many([well_formed(vr, str(v)) for v in _values(element.value)])
        if vr == "UI" and element.value:
            element.value = _one_or_many(
                [self.new_uid(str(v), subject) for v in _values(element.value)]
            )
        elif vr == "DT" and element.value and not self.settings.keeps_timezone:
            element.value = _one_or_many([strip_offset(str(v)) for v in _values(element.value)])

    # -- values -----------------------------------------------------------
    def new_uid(self, value: str, subject: Subject) -> str:
        """What a UID becomes: kept if the standard defines it, else remapped
        (keyed, stable), within the patient's scope if another patient holds it."""
        if value in subject.scoped_uids:
            return self.secret.uid(value, (subject.issuer, subject.patient_key))
        return value if is_well_known_uid(value) else self.secret.uid(value)

    @staticmethod
    def _dated(element: DataElement, shift: int | None) -> Any:
        if shift is None or not element.value:
            return dummy(element.VR)
        # Each value of a list moved, or the dummy when it is not a date.
        return _one_or_many(
            [well_formed(element.VR, str(v), shift) for v in _values(element.value)]
        )

    def _cleaned_text(self, element: DataElement, subject: Subject) -> Any:
        if element.VR == "PN":
            return _one_or_many(
                [PersonName(self.clean_text(str(v), subject)) for v in _values(element.value)]
            )
        cleaned = [self.clean_text(str(v), subject) for v in _values(element.value)]
        return _one_or_many([c for c in cleaned if c])

    @staticmethod
    def _cleaned_label(element: DataElement, subject: Subject) -> Any:
        """A code string that names anyone (a typed label, or a name put where
        a code belongs) is replaced whole (a mark is not a valid CS
        character). Short hits are not names here: "SR" is a modality even
        for a child whose initials are S and R."""
        values = _values(element.value)
        named = any(
            hit.end - hit.start >= 4 and hit.kind in ("name", "id")
            for value in values
            for hit in subject.matcher.find(str(value))
        ) or any(list(find_names(str(v).title())) for v in values if len(str(v)) >= 5)
        # Not a code by its shape: a control character (a forged log line, a
        # terminal escape), or a date, phone or record number anyone's.
        named = named or any(
            _CONTROL.search(str(v))
            or any(kind != "place" for _, _, kind in find_identifiers(str(v)))
            for v in values
        )
        return _one_or_many([LABEL_DUMMY for _ in values]) if named else element.value

    @staticmethod
    def _number_kept(element: DataElement, subject: Subject) -> bool:
        """A number string that is a number, and not the child's ID in digits
        (a sender can write anything into IS, DS and AS)."""
        pattern = _NUMBER_FORMS[element.VR]
        texts = [str(v).strip() for v in _values(element.value)]
        if not all(pattern.fullmatch(t) for t in texts if t):
            return False
        return not any(
            len(t) >= 6 and any(h.kind == "id" for h in subject.matcher.find(t)) for t in texts
        )

    def _clean(self, element: DataElement, subject: Subject, shift: int | None) -> Any:
        vr = element.VR
        if vr in ("DA", "DT"):
            return self._dated(element, shift)
        if vr == "TM":
            return element.value  # whole-day shifts leave the time of day
        if vr in policy.TEXT_VRS and vr != "PN":
            if not self.settings.cleans_descriptors:
                return dummy(vr)
            return self._cleaned_text(element, subject)
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
        applied = self.settings.options | set(_ALWAYS)
        codes = [BASIC_PROFILE_CODE] + [
            (o.code, o.meaning) for o in Option if o in applied and o.code
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
        elif self.settings.keeps_full_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"
