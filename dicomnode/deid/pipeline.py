"""The de-identification step of the ingest: header, pixels, linkage.

Takes the encoded data set as received and returns what may be stored: the
de-identified data set, its new encoding, and (when the pixels cannot be
cleaned with confidence) the reason to hold it in quarantine. The original
identity is sealed into the linkage table on the way.

A data set in memory is decoded whole; one in the spool (too large for
memory) has only its header decoded, and its pixel data is streamed through:
untouched, or cleaned a batch of frames at a time (`deid.stream`). Either
way the same rules decide, and what is stored says the same.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from io import BytesIO

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian

from dicomnode.deid import stream
from dicomnode.deid.codes import is_well_known_uid
from dicomnode.deid.header import ENCAPSULATED_CLASSES, HeaderDeidentifier, Subject
from dicomnode.deid.identity import IdentityMatcher
from dicomnode.deid.linkage import LinkageCipher, OriginalIdentity
from dicomnode.deid.options import DeidPolicy, DeidSetup
from dicomnode.deid.pixels import clean, excess_bytes, has_stray_bits, needs_cleaning
from dicomnode.deid.profile import Option
from dicomnode.deid.secret import Secret, load_or_create_key
from dicomnode.deid.verify import OcrSettings, check, may_carry_text, must_read
from dicomnode.media.deflate import deflate, inflate
from dicomnode.media.integrity import Layout, check_structure
from dicomnode.media.spool import Part, Pieces, Spool, SpoolFile
from storage.index import Index

DEID_KEY = "deid.key"
LINKAGE_KEY = "linkage.key"


@dataclass(frozen=True)
class AwaitingOcr:
    """What deferred OCR needs of the ingest: whether a rule blanked areas
    (text inside them then counts), and the identity values of the header as
    received (sealed before they are written anywhere)."""

    cleaned: bool
    identity: tuple[tuple[str, str], ...]


# The hold's reason while deferred OCR has not read the instance.
AWAITING_OCR = "awaiting OCR verification"


@dataclass(frozen=True)
class Deidentified:
    dataset: Dataset
    # The data set encoded in ``transfer_syntax``, without file meta: in
    # memory, or (a spooled instance) pieces that own their spool files.
    data: bytes | Pieces
    transfer_syntax: str
    quarantine: str | None = None
    # Held until OCR has read it (``ocr_deferred``): what the verifier needs.
    awaiting: AwaitingOcr | None = None
    # Levels ("study", "series", "instance") whose UID another patient holds,
    # with its pseudonym: this instance is kept apart under UIDs of its own.
    apart: dict[str, str] = field(default_factory=dict)
    # New UIDs (UID -> level) the store must claim in its transaction
    # (`storage.index.claim_in`): looked at, not yet claimed.
    claims: dict[str, str] = field(default_factory=dict)


# The UIDs an instance is stored under, claimed for its patient.
LEVELS = (
    ("study", "StudyInstanceUID"),
    ("series", "SeriesInstanceUID"),
    ("instance", "SOPInstanceUID"),
)
# UIDs that tie one patient's instances together beyond study and series: a
# frame of reference (a measurement's geometry), a synchronisation, a
# concatenation, an irradiation event. Claimed like the levels above, so a
# child kept apart never shares one with the child who brought it first.
GROUPING = (
    "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID",
    "ConcatenationUID",
    "IrradiationEventUID",
)
GROUP_LEVEL = "group"


def _own_uids(element: DataElement) -> set[str]:
    """The element's UID values the standard does not define."""
    values = element.value if element.VM > 1 else [element.value]
    return {str(v) for v in values if v and not is_well_known_uid(str(v))}


def uids_in(ds: Dataset) -> set[str]:
    """Every UID value of ``ds`` at any depth that is not the standard's
    (private elements aside: the walker removes them unread)."""
    found: set[str] = set()
    for element in ds:
        if element.tag.is_private:
            continue
        if element.VR == "SQ":
            for item in element.value or []:
                found |= uids_in(item)
        elif element.VR == "UI" and element.value:
            found |= _own_uids(element)
    return found


def grouping_uids(ds: Dataset) -> set[str]:
    """The instance's own grouping UIDs (`GROUPING`), at the top level."""
    found: set[str] = set()
    for keyword in GROUPING:
        if keyword in ds and ds[keyword].value:
            found |= _own_uids(ds[keyword])
    return found


def encode_plain(ds: Dataset, transfer_syntax: UID) -> bytes:
    """The data set encoded, not deflated (whatever the syntax says)."""
    buffer = DicomBytesIO()
    buffer.is_little_endian = transfer_syntax.is_little_endian
    buffer.is_implicit_VR = transfer_syntax.is_implicit_VR
    write_dataset(buffer, ds)
    return buffer.getvalue()


def around_pixels(ds: Dataset, transfer_syntax: UID) -> tuple[bytes, bytes]:
    """``ds`` (without Pixel Data) encoded as what goes before a Pixel Data
    element and what goes after it."""
    if not any(tag > PIXEL_DATA for tag in list(ds.keys())):
        return encode_plain(ds, transfer_syntax), b""
    ds.add_new(PIXEL_DATA, "OB", b"")  # a marker the structure walk finds
    try:
        data = encode_plain(ds, transfer_syntax)
    finally:
        del ds[PIXEL_DATA]
    layout = check_structure(
        data, implicit=transfer_syntax.is_implicit_VR, little=transfer_syntax.is_little_endian
    )
    assert layout.pixel_offset is not None and layout.pixel_end is not None
    return data[: layout.pixel_offset], data[layout.pixel_end :]


def encode(ds: Dataset, transfer_syntax: UID) -> bytes:
    data = encode_plain(ds, transfer_syntax)
    if transfer_syntax.is_deflated:
        packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
        data += b"\x00" * (len(data) % 2)
    return data


# Bytes per value of the binary VRs pydicom keeps as raw bytes (it converts
# numbers such as US or FL itself when it decodes an element).
_WORD_SIZE = {"OW": 2, "OL": 4, "OF": 4, "OD": 8, "OV": 8}
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
PIXEL_DATA = 0x7FE00010


def to_little_endian(ds: Dataset) -> None:
    """Turn a data set read as Explicit VR Big Endian into one that writes as
    Explicit VR Little Endian with the same values.

    Pixel cleaning, stray-bit clearing and re-encoding work on little-endian
    pixels only (pydicom cannot encode big endian), so a big-endian image is
    decoded once here and the rest of the pipeline never sees big endian.
    pydicom converts numbers when it decodes an element; the word-valued
    binary elements (OW, OL, OF, OD, OV) it keeps as bytes are swapped here,
    at every depth."""
    for elem in ds:  # iterating decodes each raw element with its own byte order
        if elem.VR == "SQ":
            for item in elem.value or []:
                to_little_endian(item)
            continue
        if not isinstance(elem.value, bytes) or not elem.value:
            continue
        size = (
            stream.pixel_word_size(ds, elem.VR)
            if elem.keyword == "PixelData"
            else _WORD_SIZE.get(str(elem.VR), 1)
        )
        if size > 1:
            elem.value = stream.swap_words(elem.value, size)


def has_pixels(ds: Dataset) -> bool:
    return any(keyword in ds for keyword in PIXEL_KEYWORDS)


def own_issuer(ds: Dataset) -> str:
    """The instance's own issuer values (ID, qualifiers), for the sealed record."""
    parts = [str(ds.get("IssuerOfPatientID") or "").strip()]
    for item in ds.get("IssuerOfPatientIDQualifiersSequence") or []:
        parts += [str(item.get(k) or "").strip() for k in ("UniversalEntityID", "TypeOfPatientID")]
    return " ".join(p for p in parts if p)


def clean_and_verify(
    ds: Dataset,
    syntax: UID,
    rectangles: tuple[tuple[int, int, int, int], ...],
    matcher: IdentityMatcher,
    ocr: OcrSettings,
    defer: bool = False,
) -> tuple[bool, UID, str | None]:
    """Clean the pixels by the rules, then verify what will be stored by OCR:
    (cleaned, the syntax it is now in, why it must be held or None). Only
    pixels cleaned and verified are marked BurnedInAnnotation NO and 113101.
    ``defer``: an image OCR must read is not read here, but held for the
    verifier (`AWAITING_OCR`)."""
    pixels = clean(ds, syntax, rectangles)
    target = UID(pixels.transfer_syntax)
    ds.file_meta.TransferSyntaxUID = target
    if not pixels.quarantine and defer and must_read(ds, ocr):
        return pixels.cleaned, target, AWAITING_OCR
    reason = pixels.quarantine or check(
        ds, target, blanked=pixels.blanked, matcher=matcher, settings=ocr
    )
    if pixels.cleaned and reason is None:
        mark_verified(ds)
    return pixels.cleaned, target, reason


def mark_verified(ds: Dataset) -> None:
    """Pixels cleaned by a rule and verified by OCR, and only those, say so:
    BurnedInAnnotation NO and Clean Pixel Data (113101)."""
    ds.BurnedInAnnotation = "NO"
    HeaderDeidentifier.add_method_code(ds, Option.CLEAN_PIXEL_DATA)


def clean_and_verify_spooled(
    ds: Dataset,
    pixels: stream.SpooledPixels,
    syntax: UID,
    rectangles: tuple[tuple[int, int, int, int], ...],
    matcher: IdentityMatcher,
    ocr: OcrSettings,
    spool: Spool,
    defer: bool = False,
) -> tuple[stream.Cleaned, UID, str | None]:
    """`clean_and_verify` for a spooled instance: the header ``ds`` changed
    alike, the Pixel Data element returned as pieces, OCR reading its
    sampled frames back from the spool (or, ``defer``, the verifier reading
    them from the held copy)."""
    cleaned = stream.clean_spooled(ds, pixels, syntax, rectangles, spool)
    try:
        target = UID(cleaned.outcome.transfer_syntax)
        ds.file_meta.TransferSyntaxUID = target
        if not cleaned.outcome.quarantine and defer and must_read(ds, ocr, True):
            return cleaned, target, AWAITING_OCR
        reason = cleaned.outcome.quarantine or check(
            ds,
            target,
            blanked=cleaned.outcome.blanked,
            matcher=matcher,
            settings=ocr,
            frames=cleaned.frame,
        )
    except BaseException:
        for spooled in cleaned.owns:
            spooled.close()
        raise
    if cleaned.outcome.cleaned and reason is None:
        mark_verified(ds)
    return cleaned, target, reason


def document_reason(ds: Dataset) -> str | None:
    """Why an encapsulated document is held: nobody has looked inside it."""
    if not str(ds.get("SOPClassUID", "")).startswith(ENCAPSULATED_CLASSES):
        return None
    kind = str(ds.get("MIMETypeOfEncapsulatedDocument") or "unknown type").strip()[:40]
    return f"encapsulated document ({kind}): held for an administrator's review"


def original_identity(ds: Dataset, issuer: str, sending_ae: str | None) -> OriginalIdentity:
    return OriginalIdentity(
        issuer=issuer,
        patient_id=str(ds.get("PatientID") or ""),
        patient_name=str(ds.get("PatientName") or ""),
        birth_date=str(ds.get("PatientBirthDate") or ""),
        accession_number=str(ds.get("AccessionNumber") or ""),
        study_instance_uid=str(ds.StudyInstanceUID),
        sending_ae=(sending_ae or "").strip(),
        own_issuer=own_issuer(ds),
    )


@dataclass(frozen=True)
class _Sender:
    """Who sent an instance and under which patient key: what the header
    steps need of the caller's arguments, typed (not a keyword dict)."""

    issuer: str
    patient_key: str
    calling_ae: str | None
    # Claim UIDs in the store's transaction when nobody holds them (the
    # caller retries without on `ClaimLost`), not in one of their own.
    optimistic: bool = False
    # OCR after the answer (``ocr_deferred``, unless the door reads now).
    defer_ocr: bool = False


class Deidentifier:
    """Per node: the keys, the linkage table, and each sender's policy
    (resolved once, by `dicomnode.config.deid_setup`)."""

    def __init__(self, setup: DeidSetup, index: Index) -> None:
        self.setup = setup
        self.index = index
        self.secret = Secret(load_or_create_key(setup.key_dir / DEID_KEY, setup.data_dir))
        self.cipher = LinkageCipher(load_or_create_key(setup.key_dir / LINKAGE_KEY, setup.data_dir))
        self._headers: dict[DeidPolicy, HeaderDeidentifier] = {}
        self.ocr = OcrSettings.of(setup)

    def policy_for(self, calling_ae: str | None) -> DeidPolicy:
        return self.setup.policies.of(calling_ae)

    def header_for(self, calling_ae: str | None) -> HeaderDeidentifier:
        policy = self.policy_for(calling_ae)
        if policy not in self._headers:
            self._headers[policy] = HeaderDeidentifier(self.secret, policy)
        return self._headers[policy]

    def reference(self, sop_instance_uid: str) -> str:
        """A keyed tag for log lines: correlates events, reveals nothing."""
        return self.secret.token("log", sop_instance_uid, length=10)

    def __call__(
        self,
        data: bytes | SpoolFile,
        transfer_syntax: str,
        *,
        issuer: str,
        patient_key: str,
        calling_ae: str | None,
        header: Dataset | None = None,
        layout: Layout | None = None,
        inflated: bool = False,
        spool: Spool | None = None,
        optimistic: bool = False,
        defer_ocr: bool = True,
    ) -> Deidentified:
        """``header`` and ``layout`` (from `ingest.inspect`) let pixels that no
        rule touches pass through without decoding the data set again.
        ``inflated``: deflated data already inflated (`deflate.inflate`).
        A spool file needs both, and the ``spool`` its output goes to."""
        syntax = UID(transfer_syntax)
        rectangles = self.policy_for(calling_ae).blank_rectangles
        sender = _Sender(
            issuer, patient_key, calling_ae, optimistic, defer_ocr and self.ocr.deferred
        )
        if isinstance(data, SpoolFile):
            if header is None or layout is None or spool is None:
                raise ValueError("a spooled data set needs its header, layout and a spool")
            if layout.pixel_offset is None:  # no pixels: the header is all (and bounded)
                return self(
                    data.getvalue(),
                    transfer_syntax,
                    issuer=issuer,
                    patient_key=patient_key,
                    calling_ae=calling_ae,
                    inflated=True,
                    optimistic=optimistic,
                    defer_ocr=defer_ocr,
                )
            return self._spooled(data, syntax, header, layout, rectangles, spool, sender)
        if syntax.is_deflated and not inflated:
            inflated_data = inflate(data, limit=self.setup.max_instance_mb << 20)
            assert isinstance(inflated_data, bytes)  # no spool: never spilled
            data = inflated_data
        defer = sender.defer_ocr
        ds, kept_pixels = self._read(data, syntax, header, layout, rectangles, defer)
        if kept_pixels is None and syntax == ExplicitVRBigEndian and has_pixels(ds):
            to_little_endian(ds)
            syntax = ExplicitVRLittleEndian
            ds.file_meta.TransferSyntaxUID = syntax
        subject, apart = self._header(ds, sender)
        if kept_pixels is not None:
            # No rule touches these pixels: the element goes on exactly as sent.
            reason = AWAITING_OCR if defer and must_read(ds, self.ocr, True) else None
            encoded = encode(ds, syntax) + kept_pixels
            return self._result(ds, encoded, syntax, reason, apart, subject, False)
        document = document_reason(ds)
        if document:
            return self._result(ds, encode(ds, syntax), syntax, document, apart, subject)
        cleaned, target, reason = clean_and_verify(
            ds, syntax, rectangles, subject.matcher, self.ocr, defer
        )
        return self._result(ds, encode(ds, target), target, reason, apart, subject, cleaned)

    @staticmethod
    def _result(
        ds: Dataset,
        data: bytes | Pieces,
        syntax: UID,
        reason: str | None,
        apart: dict[str, str],
        subject: Subject,
        cleaned: bool = False,
    ) -> Deidentified:
        """What the step returns, with the UIDs the store is to claim; one
        held for deferred OCR carries what the verifier will need."""
        awaiting = AwaitingOcr(cleaned, subject.matcher.values) if reason == AWAITING_OCR else None
        return Deidentified(
            ds, data, syntax, reason, awaiting=awaiting, apart=apart, claims=subject.claims
        )

    def _header(self, ds: Dataset, sender: _Sender) -> tuple[Subject, dict[str, str]]:
        """Seal the identity, claim the UIDs, de-identify the header in place."""
        original = original_identity(ds, sender.issuer, sender.calling_ae)
        header = self.header_for(sender.calling_ae)
        subject = header.subject(ds, sender.issuer, sender.patient_key)
        study, apart = self._claim(ds, header, subject, original, sender.optimistic)
        header.apply(ds, subject)
        if str(ds.StudyInstanceUID) != study:  # the walker must agree with the claim
            raise RuntimeError("study UID differs from the one claimed")
        return subject, apart

    def _spooled(
        self,
        body: SpoolFile,
        syntax: UID,
        header: Dataset,
        layout: Layout,
        rectangles: tuple[tuple[int, int, int, int], ...],
        spool: Spool,
        sender: _Sender,
    ) -> Deidentified:
        """The same steps for a data set in the spool: everything but the
        Pixel Data decoded (bounded by `ingest.read_header`), the pixels
        streamed."""
        pixels = stream.SpooledPixels(body, layout, syntax)
        # The verifier reads a held clip from a spool file, not deflated data.
        defer = sender.defer_ocr and not syntax.is_deflated
        untouched = self._untouched(header, layout, syntax, rectangles, defer) and not (
            pixels.length is not None and pixels.stray_bits(header)
        )
        ds = header if untouched else self._all_but_pixels(body, syntax, layout)
        if not untouched and syntax == ExplicitVRBigEndian:
            to_little_endian(ds)  # the header here, the pixels batch by batch
            syntax = ExplicitVRLittleEndian
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = syntax
        subject, apart = self._header(ds, sender)
        if untouched:
            # No rule touches these pixels: the element goes on exactly as sent.
            kept = self._assemble(ds, syntax, [(body, pixels.start, pixels.end)], [], spool)
            reason = AWAITING_OCR if defer and must_read(ds, self.ocr, True) else None
            return self._result(ds, kept, syntax, reason, apart, subject)
        document = document_reason(ds)
        if document and pixels.syntax == syntax:
            encoded = self._assemble(ds, syntax, pixels.as_sent(ds, syntax), [], spool)
            return self._result(ds, encoded, syntax, document, apart, subject)
        cleaned, target, reason = clean_and_verify_spooled(
            ds,
            pixels,
            syntax,
            () if document else rectangles,
            subject.matcher,
            self.ocr,
            spool,
            defer and not document,
        )
        encoded = self._assemble(ds, target, cleaned.element, cleaned.owns, spool)
        reason = document or reason
        return self._result(ds, encoded, target, reason, apart, subject, cleaned.outcome.cleaned)

    @staticmethod
    def _all_but_pixels(body: SpoolFile, syntax: UID, layout: Layout) -> Dataset:
        """What a whole decode in memory holds but Pixel Data: all elements
        before it (the header read stops at the first tag past Pixel Data,
        one out of order included) and all after it."""
        assert layout.pixel_offset is not None and layout.pixel_end is not None
        implicit, little = syntax.is_implicit_VR, syntax.is_little_endian
        reader = body.reader()
        ds = read_dataset(reader, implicit, little, bytelength=layout.pixel_offset)
        if layout.pixel_end < body.size:
            reader.seek(layout.pixel_end)
            after = read_dataset(reader, implicit, little)
            for tag in list(after.keys()):
                ds[tag] = after.get_item(tag)
        return ds

    @staticmethod
    def _assemble(
        ds: Dataset, syntax: UID, element: list[Part], owns: list[SpoolFile], spool: Spool
    ) -> Pieces:
        """Header, Pixel Data element, what follows: deflated when the syntax is."""
        head, tail = around_pixels(ds, syntax)
        pieces = Pieces([head, *element, tail], owns)
        if not syntax.is_deflated:
            return pieces
        try:
            packed = deflate(pieces.chunks(), spool)
        finally:
            pieces.close()
        return Pieces([packed], [packed])

    def _claim(
        self,
        ds: Dataset,
        header: HeaderDeidentifier,
        subject: Subject,
        original: OriginalIdentity,
        optimistic: bool = False,
    ) -> tuple[str, dict[str, str]]:
        """Claim the new study, series and instance UIDs for the patient
        before anything is written; a UID
        another patient holds (claimed first, by any process) is remapped
        within this patient's scope instead (``subject.scoped_uids``), as is
        any reference to one, so all this patient's instances of a shared
        study land together and their references agree. Returns the new
        study UID and, by level, who held the UIDs remapped.

        Grouping UIDs (frame of reference and the like) are claimed too, and
        scoped whenever the instance is kept apart at all, even where nobody
        claimed them (an index from before they were claimed): two children's
        studies never share one, so no measurement or registration links them."""
        pseudonym = self.secret.pseudonym(subject.issuer, subject.patient_key)
        primary = {level: str(ds[keyword].value) for level, keyword in LEVELS}
        grouping = grouping_uids(ds)
        everything = uids_in(ds) | set(primary.values()) | grouping
        apart: dict[str, str] = {}
        for _ in range(3):  # the second round finds nothing taken: scoped UIDs are its own
            new = {uid: header.new_uid(uid, subject) for uid in everything}
            study = new[primary["study"]]
            claims = {new[uid]: GROUP_LEVEL for uid in grouping}
            claims |= {new[uid]: level for level, uid in reversed(primary.items())}
            if optimistic:  # a look first: nearly always the patient's own or nobody's
                optimistic = False
                owners = self.index.uid_owners(new.values())
                if all(owner == pseudonym for owner in owners.values()):
                    subject.claims = {u: lv for u, lv in claims.items() if u not in owners}
                    return study, apart
            # The sealed identity is written with the instance (`Archive.store`).
            taken = self.index.claim_uids(pseudonym, claims, new.values())
            if not taken:
                return study, apart
            subject.scoped_uids |= {uid for uid in everything if new[uid] in taken}
            apart |= {level: taken[new[uid]] for level, uid in primary.items() if new[uid] in taken}
            if apart:
                subject.scoped_uids |= grouping
        raise RuntimeError("the instance's UIDs could not be claimed")

    def _read(
        self,
        data: bytes,
        syntax: UID,
        header: Dataset | None,
        layout: Layout | None,
        rectangles: tuple,
        defer: bool,
    ) -> tuple[Dataset, bytes | None]:
        """The already decoded header and the encoded Pixel Data element when
        the pixels can pass through untouched (no rule cleans them, OCR need
        not read them, no bits hide above the stored ones), else the whole
        data set. Big-endian pixels never pass through: their stray bits can
        only be found once they are little endian. Deflated data comes inflated."""
        if (
            header is not None
            and layout is not None
            and self._untouched(header, layout, syntax, rectangles, defer)
            and not (
                layout.pixel_length is not None
                and layout.pixel_end is not None
                and has_stray_bits(
                    header,
                    data[layout.pixel_end - layout.pixel_length : layout.pixel_end],
                    syntax,
                )
            )
        ):
            assert layout.pixel_offset is not None and layout.pixel_end is not None
            return header, data[layout.pixel_offset : layout.pixel_end]
        ds = read_dataset(BytesIO(data), syntax.is_implicit_VR, syntax.is_little_endian)
        ds.file_meta = FileMetaDataset()  # pixel decoding needs the syntax
        ds.file_meta.TransferSyntaxUID = syntax
        return ds, None

    def _untouched(
        self,
        header: Dataset,
        layout: Layout,
        syntax: UID,
        rectangles: tuple[tuple[int, int, int, int], ...],
        deferred: bool,
    ) -> bool:
        """Whether Pixel Data may pass through as sent, stray bits aside (the
        caller looks for those where the pixels are); ``deferred``: OCR
        reads them later, from what is held."""
        return (
            syntax != ExplicitVRBigEndian
            and layout.pixel_offset is not None
            and layout.pixel_end is not None
            and layout.pixels_last
            and not syntax.is_deflated
            and not rectangles
            and not needs_cleaning(header)
            and not (self.ocr.enabled and not deferred and may_carry_text(header))
            and not (
                layout.pixel_length is not None
                and excess_bytes(header, layout.pixel_length, syntax)
            )
        )
