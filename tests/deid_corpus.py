"""An adversarial de-identification corpus: where real devices put identity.

Every case is a generator that returns the instances to send and the identity
strings ("needles") that must not be found anywhere the node writes or answers
afterwards; pixel cases also return, per frame, a mask of where identity text
was drawn. All names, IDs, phone numbers, addresses and hospitals are invented.

The cases are built from where scanners, PACS and reporting systems really put
identity, grouped in classes:

- ``nested``: attributes outside the PS3.15 Table E.1-1 list or deep in
  sequences (SR text at depth 3+, code meanings of a local coding scheme,
  presentation-state text, per-frame labels, issuer qualifiers, retrieve URLs,
  unlisted UID attributes holding the original UIDs, unknown public tags read as
  UN, retired tags, original-attributes history, file meta);
- ``descriptors``: free text where a naive cleaner removes whole tokens only
  (joined names, parts of double surnames, transliterations, inflected forms,
  names without separators in CJK text, dates and phone numbers in other
  formats, staff, station and institution names), in ISO_IR 192, ISO_IR 144,
  GB18030, ISO 2022 IR 87 / IR 13 and ISO_IR 100;
- ``pixels``: text burned into ultrasound, secondary capture, OT and XA
  pixels (native and JPEG baseline), high bits of 16-bit pixel data, overlay
  planes and icon images;
- ``documents``: encapsulated PDF (plain and Flate-compressed, UTF-16 title)
  and CDA;
- ``issuer``: one child sent twice from one hospital with different
  IssuerOfPatientID values, or through two doors.

UIDs are generated under pydicom's root (``1.2.826.0.1.3680043.8.498.``): every
such UID in an input is an automatic needle of kind ``uid`` (the node remaps
UIDs, so no original may survive anywhere).
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)

from tests.deid_scanner import Needle

DOORS = ("cstore", "stow", "import")
ORIGINAL_ROOT = "1.2.826.0.1.3680043.8.498."

US = UID("1.2.840.10008.5.1.4.1.1.6.1")
US_MULTIFRAME = UID("1.2.840.10008.5.1.4.1.1.3.1")
SECONDARY_CAPTURE = UID("1.2.840.10008.5.1.4.1.1.7")
XA = UID("1.2.840.10008.5.1.4.1.1.12.1")
ENHANCED_XA = UID("1.2.840.10008.5.1.4.1.1.12.1.1")
GSPS = UID("1.2.840.10008.5.1.4.1.1.11.1")
COMPREHENSIVE_SR = UID("1.2.840.10008.5.1.4.1.1.88.33")
ENHANCED_SR = UID("1.2.840.10008.5.1.4.1.1.88.22")
ENCAPSULATED_PDF = UID("1.2.840.10008.5.1.4.1.1.104.1")
ENCAPSULATED_CDA = UID("1.2.840.10008.5.1.4.1.1.104.2")

STUDY_DATE = "20260302"
FONT_LATIN = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
FONT_CJK = (
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/noto/NotoSansCJK-Regular.ttc"),
)


# ---- what a case is -----------------------------------------------------------


@dataclass
class Sent:
    """One instance to send; ``door`` overrides the door the case goes through."""

    ds: Dataset
    door: str | None = None
    calling_ae: str = "BISHKEK_ECHO"


@dataclass
class PixelCheck:
    """Where identity was drawn in one instance (found again by Rows x Columns).

    ``what``: "frames" (every frame of Pixel Data must be blank under the
    mask), "highbits" (the bits above Bits Stored must be clear under the
    mask), "overlay" (an overlay plane, if kept, must be clear), "icon" (an
    Icon Image Sequence, if kept, must be blank)."""

    what: str
    masks: list[np.ndarray]
    text: str


@dataclass
class Built:
    """What a generator returns."""

    items: list[Sent]
    needles: dict[str, list[str]]
    pixels: list[tuple[tuple[int, int], PixelCheck]] = field(default_factory=list)
    # (keyword, value): that value must not survive in that attribute, at any depth.
    forbidden: list[tuple[str, str]] = field(default_factory=list)
    # PatientAge values above this must not survive (PS3.15: ages over 89
    # become "090Y" or are removed).
    max_age: str = ""


@dataclass
class Case:
    name: str
    klass: str
    summary: str
    items: list[Sent]
    needles: list[Needle]
    pixels: dict[tuple[int, int], list[PixelCheck]]
    doors: tuple[str, ...]
    core: bool
    same_patient: bool
    forbidden: list[tuple[str, str]]
    max_age: str


@dataclass(frozen=True)
class Spec:
    name: str
    klass: str
    make: Callable[[], Built]
    core: bool = False
    doors: tuple[str, ...] | None = None
    same_patient: bool = False

    @property
    def summary(self) -> str:
        return (self.make.__doc__ or "").strip().splitlines()[0]


REGISTRY: list[Spec] = []


def case(
    klass: str,
    *,
    core: bool = False,
    doors: tuple[str, ...] | None = None,
    same_patient: bool = False,
) -> Callable[[Callable[[], Built]], Callable[[], Built]]:
    def register(make: Callable[[], Built]) -> Callable[[], Built]:
        REGISTRY.append(Spec(make.__name__, klass, make, core, doors, same_patient))
        return make

    return register


def assigned_doors(index: int, spec: Spec) -> tuple[str, ...]:
    """Core cases go through every door; the rest rotate over the three."""
    if spec.doors is not None:
        return spec.doors
    if spec.core:
        return DOORS
    return (DOORS[index % len(DOORS)],)


def build(spec: Spec, doors: tuple[str, ...] = DOORS) -> Case:
    built = spec.make()
    needles = [
        Needle(spec.name, kind, text) for kind, texts in built.needles.items() for text in texts
    ]
    seen = {n.text for n in needles}
    for sent in built.items:
        for uid in original_uids(sent.ds):
            if uid not in seen:
                seen.add(uid)
                needles.append(Needle(spec.name, "uid", uid))
    pixels: dict[tuple[int, int], list[PixelCheck]] = {}
    for key, check in built.pixels:
        pixels.setdefault(key, []).append(check)
    return Case(
        spec.name,
        spec.klass,
        spec.summary,
        built.items,
        needles,
        pixels,
        doors,
        spec.core,
        spec.same_patient,
        built.forbidden,
        built.max_age,
    )


def cases(names: set[str] | None = None) -> list[Case]:
    """Every case (or those named), each with its doors."""
    out = []
    for index, spec in enumerate(REGISTRY):
        if names is None or spec.name in names:
            out.append(build(spec, assigned_doors(index, spec)))
    return out


def original_uids(ds: Dataset) -> set[str]:
    """The UIDs this corpus generated, anywhere in ``ds`` (file meta included)."""
    found: set[str] = set()

    def walk(node: Dataset) -> None:
        for element in node:
            if element.VR == "SQ":
                for item in element.value or []:
                    walk(item)
            elif element.VR in ("UI", "UR", "ST", "LT", "UT", "LO"):
                values = element.value if element.VM > 1 else [element.value]
                for value in values:
                    for token in str(value or "").replace("/", " ").replace("=", " ").split():
                        token = token.strip("?&,;")
                        if token.startswith(ORIGINAL_ROOT) and element.VR == "UI":
                            found.add(token)

    walk(ds)
    if hasattr(ds, "file_meta"):
        walk(ds.file_meta)
    return found


def uid() -> str:
    return generate_uid(ORIGINAL_ROOT)


# ---- building blocks -------------------------------------------------------


def header(
    sop_class: UID,
    modality: str,
    *,
    name: str,
    pid: str,
    charset: str | list[str] = "ISO_IR 192",
    birth: str = "",
    sex: str = "F",
    study: str | None = None,
    series: str | None = None,
    study_description: str = "Echocardiography",
    series_description: str = "",
    accession: str = "",
    syntax: UID = ExplicitVRLittleEndian,
) -> Dataset:
    """Patient, study, series and SOP common modules with the given identity."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SpecificCharacterSet = charset
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyInstanceUID = study or uid()
    ds.SeriesInstanceUID = series or uid()
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = "006Y"
    ds.PatientWeight = "19.5"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = STUDY_DATE
    ds.StudyTime = "101500"
    ds.SeriesTime = ds.ContentTime = "102030"
    ds.AccessionNumber = accession
    ds.StudyID = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    if series_description:
        ds.SeriesDescription = series_description
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "Acme Imaging"
    ds.PatientOrientation = ""
    return ds


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def pixels_module(ds: Dataset, frames: np.ndarray, photometric: str) -> Dataset:
    """Native pixel data from (frames, rows, cols[, 3]) uint8/uint16."""
    ds.Rows, ds.Columns = int(frames.shape[1]), int(frames.shape[2])
    ds.SamplesPerPixel = 3 if frames.ndim == 4 else 1
    ds.PhotometricInterpretation = photometric
    if frames.ndim == 4:
        ds.PlanarConfiguration = 0
    bits = 16 if frames.dtype == np.uint16 else 8
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    ds.PixelRepresentation = 0
    if frames.shape[0] > 1:
        ds.NumberOfFrames = int(frames.shape[0])
        ds.FrameTime = "33.3"
        ds.FrameIncrementPointer = 0x00181063
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    return ds


def us_region(x0: int, y0: int, x1: int, y1: int, data_type: int = 1, fmt: int = 1) -> Dataset:
    region = Dataset()
    region.RegionSpatialFormat = fmt
    region.RegionDataType = data_type
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = x0, y0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = x1, y1
    region.PhysicalUnitsXDirection = region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.03
    return region


def whole_region(ds: Dataset) -> None:
    ds.SequenceOfUltrasoundRegions = [us_region(0, 0, int(ds.Columns) - 1, int(ds.Rows) - 1)]


def tiny_us(ds: Dataset, rows: int = 48, cols: int = 64) -> Dataset:
    """A small blank echo frame laid out as echo machines do: a top banner
    (blank here) above one imaging region, so a careful node can store it."""
    pixels_module(ds, np.zeros((1, rows, cols), np.uint8), "MONOCHROME2")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC"]
    ds.SequenceOfUltrasoundRegions = [us_region(0, max(rows // 6, 4), cols - 1, rows - 1)]
    return ds


def tiny_sc(ds: Dataset, rows: int = 16, cols: int = 16) -> Dataset:
    pixels_module(ds, np.zeros((1, rows, cols), np.uint8), "MONOCHROME2")
    ds.ConversionType = "WSD"
    return ds


def tiny_xa(ds: Dataset, rows: int = 16, cols: int = 16) -> Dataset:
    pixels_module(ds, np.full((1, rows, cols), 90, np.uint8), "MONOCHROME2")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE"]
    ds.PositionerMotion = "STATIC"
    ds.KVP = "70"
    ds.RadiationSetting = "GR"
    ds.PixelIntensityRelationship = "LIN"
    ds.BurnedInAnnotation = "NO"
    return ds


def sr_item(relationship: str, value_type: str, concept: Dataset, **values: object) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    item.ConceptNameCodeSequence = [concept]
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def container(relationship: str, concept: Dataset, children: list[Dataset]) -> Dataset:
    return sr_item(
        relationship,
        "CONTAINER",
        concept,
        ContinuityOfContent="SEPARATE",
        ContentSequence=children,
    )


def sr_document(ds: Dataset, title: Dataset, content: list[Dataset]) -> Dataset:
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [title]
    ds.ContinuityOfContent = "SEPARATE"
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.PerformedProcedureCodeSequence = []
    ds.ContentSequence = content
    return ds


FINDINGS = code("121070", "DCM", "Findings")
HISTORY = code("121060", "DCM", "History")
NOTE = code("121106", "DCM", "Comment")
ECHO_REPORT = code("59282-4", "LN", "Stress cardiac echo study report")


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(int(hashlib.sha256(name.encode()).hexdigest()[:8], 16))


def font(size: int, cjk: bool = False) -> ImageFont.FreeTypeFont:
    candidates = FONT_CJK if cjk else (FONT_LATIN,)
    for path in candidates:
        if path.exists():
            return ImageFont.truetype(str(path), size)
    raise FileNotFoundError(
        f"no {'CJK ' if cjk else ''}font among {[str(p) for p in candidates]}: "
        "apt install fonts-dejavu-core fonts-wqy-zenhei"
    )


def text_mask(
    shape: tuple[int, int], xy: tuple[int, int], text: str, size: int, cjk: bool = False
) -> np.ndarray:
    """Where ``text`` lands (no anti-aliasing, so the mask is exact)."""
    image = Image.new("L", (shape[1], shape[0]), 0)
    draw = ImageDraw.Draw(image)
    draw.fontmode = "1"
    draw.text(xy, text, fill=255, font=font(size, cjk))
    mask = np.asarray(image) > 0
    assert mask.any(), text
    return mask


def paint(frame: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int] | int) -> None:
    if frame.ndim == 3:
        frame[mask] = colour if isinstance(colour, tuple) else (colour,) * 3
    else:
        frame[mask] = colour if isinstance(colour, int) else int(np.mean(colour))


def speckle(rows: int, cols: int, name: str, top: int = 0) -> np.ndarray:
    """A sector of speckle below ``top`` on black (an echo frame, roughly)."""
    rng = rng_for(name)
    y, x = np.mgrid[0:rows, 0:cols]
    apex_x, apex_y = cols / 2, top
    angle = np.abs(np.arctan2(x - apex_x, np.maximum(y - apex_y, 1e-3)))
    radius = np.hypot(x - apex_x, y - apex_y)
    sector = (y > top) & (angle < 0.6) & (radius < rows - top - 4)
    image = np.zeros((rows, cols), np.uint8)
    image[sector] = rng.integers(30, 150, int(sector.sum()), dtype=np.uint8)
    return image


def jpeg_frames(frames: list[np.ndarray], grey: bool = False) -> list[bytes]:
    out = []
    for frame in frames:
        buffer = BytesIO()
        Image.fromarray(frame, "L" if grey else "RGB").save(
            buffer, "JPEG", quality=92, subsampling=1
        )
        out.append(buffer.getvalue())
    return out


def make_jpeg(ds: Dataset, frames: list[np.ndarray], grey: bool = False) -> Dataset:
    """JPEG baseline, as an echo machine sends it (YBR_FULL_422 for colour)."""
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.Rows, ds.Columns = frames[0].shape[:2]
    ds.SamplesPerPixel = 1 if grey else 3
    ds.PhotometricInterpretation = "MONOCHROME2" if grey else "YBR_FULL_422"
    if not grey:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    if len(frames) > 1:
        ds.NumberOfFrames = len(frames)
        ds.FrameTime = "40"
        ds.FrameIncrementPointer = 0x00181063
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(jpeg_frames(frames, grey))
    ds["PixelData"].VR = "OB"
    return ds


def pdf_document(lines: list[str], info: dict[str, str], *, compress: bool) -> bytes:
    """A one-page PDF; Info values starting with non-Latin-1 are UTF-16BE hex."""

    def literal(text: str) -> bytes:
        raw = text.encode("latin-1")
        return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"

    def pdf_string(text: str) -> bytes:
        try:
            return literal(text)
        except UnicodeEncodeError:
            return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode() + b">"

    content = (
        b"BT /F1 11 Tf 50 780 Td 14 TL "
        + b" ".join(literal(line) + b" '" for line in lines)
        + b" ET"
    )
    stream_dict = b""
    if compress:
        content = zlib.compress(content)
        stream_dict = b" /Filter /FlateDecode"
    info_body = b" ".join(b"/" + k.encode() + b" " + pdf_string(v) for k, v in info.items())
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        b"<< /Length " + str(len(content)).encode() + stream_dict + b" >>\nstream\n"
        + content + b"\nendstream",
        b"<< " + info_body + b" >>",
    ]  # fmt: skip
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R /Info 6 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encapsulated(ds: Dataset, document: bytes, mime: str, title: str) -> Dataset:
    ds.Modality = "DOC"
    ds.ConversionType = "SD"
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title
    ds.ConceptNameCodeSequence = []
    ds.AcquisitionDateTime = ""
    ds.MIMETypeOfEncapsulatedDocument = mime
    if len(document) % 2:
        document += b"\n" if mime.startswith("text") else b"\0"
    ds.EncapsulatedDocument = document
    ds.EncapsulatedDocumentLength = len(document)
    return ds


# =============================================================================
# nested: attributes the profile does not list, or deep in sequences
# =============================================================================


@case("nested", core=True)
def sr_text_depth3() -> Built:
    """SR TextValue at depth 3 and 4 naming the child, the mother and the referrer."""
    ds = header(COMPREHENSIVE_SR, "SR", name="Tursunbaev^Aidarbek", pid="KG-310001", sex="M")
    deep = sr_item(
        "CONTAINS",
        "TEXT",
        NOTE,
        TextValue="Referred by Dr. Abdyldaev; mother Kadyrova Gulnara reports cyanosis "
        "in Tursunbaev Aidarbek since birth.",
    )
    deeper = container(
        "CONTAINS",
        HISTORY,
        [sr_item("CONTAINS", "TEXT", NOTE, TextValue="TURSUNBAEV A. tel mother Gulnara")],
    )
    sr_document(
        ds,
        ECHO_REPORT,
        [container("CONTAINS", FINDINGS, [container("CONTAINS", HISTORY, [deep, deeper])])],
    )
    return Built(
        [Sent(ds)],
        {
            "name": ["Tursunbaev", "Aidarbek"],
            "relative": ["Kadyrova", "Gulnara"],
            "staff": ["Abdyldaev"],
            "id": ["KG-310001"],
        },
    )


@case("nested")
def sr_pname_depth5() -> Built:
    """SR PNAME items at depth 5 (observer and subject) below nested containers."""
    ds = header(COMPREHENSIVE_SR, "SR", name="Osmonkulov^Daniyar", pid="KG-310002", sex="M")
    leaf = [
        sr_item(
            "HAS OBS CONTEXT",
            "PNAME",
            code("121008", "DCM", "Person Observer Name"),
            PersonName="Zhumabekova^Saltanat",
        ),
        sr_item(
            "HAS OBS CONTEXT",
            "PNAME",
            code("121029", "DCM", "Subject Name"),
            PersonName="Osmonkulov^Daniyar",
        ),
    ]
    tree = leaf
    for _ in range(4):
        tree = [container("CONTAINS", FINDINGS, tree)]
    sr_document(ds, ECHO_REPORT, tree)
    return Built(
        [Sent(ds)],
        {"name": ["Osmonkulov", "Daniyar"], "staff": ["Zhumabekova", "Saltanat"]},
    )


@case("nested")
def sr_subject_context() -> Built:
    """TID 1007 subject context: Subject Name, Subject ID as content items."""
    ds = header(ENHANCED_SR, "SR", name="Karimova^Aruzhan", pid="KZ-553201", charset="ISO_IR 192")
    sr_document(
        ds,
        ECHO_REPORT,
        [
            sr_item(
                "HAS OBS CONTEXT",
                "CODE",
                code("121024", "DCM", "Subject Class"),
                ConceptCodeSequence=[code("121025", "DCM", "Patient")],
            ),
            sr_item(
                "HAS OBS CONTEXT",
                "PNAME",
                code("121029", "DCM", "Subject Name"),
                PersonName="Karimova^Aruzhan",
            ),
            sr_item(
                "HAS OBS CONTEXT",
                "TEXT",
                code("121030", "DCM", "Subject ID"),
                TextValue="KZ-PD-553201",
            ),
            container(
                "CONTAINS",
                FINDINGS,
                [sr_item("CONTAINS", "TEXT", NOTE, TextValue="Қаримова Аружан, ASD II 6 mm")],
            ),
        ],
    )
    return Built(
        [Sent(ds)],
        {
            "name": ["Karimova", "Aruzhan", "Қаримова", "Аружан"],
            "id": ["KZ-553201", "KZ-PD-553201"],
        },
    )


@case("nested")
def sr_uid_references() -> Built:
    """SR image references, UIDREF items and evidence sequences holding original UIDs."""
    ds = header(COMPREHENSIVE_SR, "SR", name="Ergeshova^Nurzhamal", pid="KG-310004")
    study, series, images = uid(), uid(), [uid(), uid()]
    reference = Dataset()
    reference.ReferencedSOPClassUID = US
    reference.ReferencedSOPInstanceUID = images[0]
    sr_document(
        ds,
        ECHO_REPORT,
        [
            container(
                "CONTAINS",
                FINDINGS,
                [
                    container(
                        "CONTAINS",
                        HISTORY,
                        [
                            sr_item(
                                "CONTAINS",
                                "IMAGE",
                                code("121080", "DCM", "Best illustration of finding"),
                                ReferencedSOPSequence=[reference],
                            ),
                            sr_item(
                                "HAS OBS CONTEXT",
                                "UIDREF",
                                code("110180", "DCM", "Study Instance UID"),
                                UID=study,
                            ),
                        ],
                    )
                ],
            )
        ],
    )
    evidence_image = Dataset()
    evidence_image.ReferencedSOPClassUID = US
    evidence_image.ReferencedSOPInstanceUID = images[1]
    evidence_series = Dataset()
    evidence_series.SeriesInstanceUID = series
    evidence_series.ReferencedSOPSequence = [evidence_image]
    evidence = Dataset()
    evidence.StudyInstanceUID = study
    evidence.ReferencedSeriesSequence = [evidence_series]
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    return Built([Sent(ds)], {"name": ["Ergeshova", "Nurzhamal"]})


@case("nested")
def sr_code_meaning_local_scheme() -> Built:
    """CODE content item at depth 3 whose 99HOSP CodeMeaning names the child and doctor."""
    ds = header(COMPREHENSIVE_SR, "SR", name="Sadykova^Elmira", pid="KG-310005")
    item = sr_item(
        "CONTAINS",
        "CODE",
        code("121071", "DCM", "Finding"),
        ConceptCodeSequence=[
            code("P-KAS-01", "99HOSP", "Follow-up clinic of Prof. Kasymbekov for Sadykova Elmira")
        ],
    )
    sr_document(
        ds,
        ECHO_REPORT,
        [container("CONTAINS", FINDINGS, [container("CONTAINS", HISTORY, [item])])],
    )
    return Built(
        [Sent(ds)],
        {"name": ["Sadykova", "Elmira"], "staff": ["Kasymbekov"]},
    )


@case("nested")
def procedure_codes_local_scheme() -> Built:
    """Procedure and protocol code meanings (99HOSP) naming child and doctor."""
    ds = tiny_us(header(US, "US", name="Nurmatov^Ilyasbek", pid="KG-310006", sex="M"))
    ds.ProcedureCodeSequence = [code("TTE-NUR", "99HOSP", "TTE for Nurmatov Ilyasbek")]
    ds.PerformedProtocolCodeSequence = [
        code("PRT-77", "99HOSP", "Protocol of Dr. Beishenalieva (paeds)")
    ]
    ds.AnatomicRegionSequence = [code("T-32000", "SRT", "Heart")]
    return Built(
        [Sent(ds)],
        {"name": ["Nurmatov", "Ilyasbek"], "staff": ["Beishenalieva"]},
    )


@case("nested")
def institution_code_sequence() -> Built:
    """InstitutionCodeSequence and department codes spelling out the hospital."""
    ds = tiny_us(header(US, "US", name="Tashmatova^Gulzada", pid="KG-310007"))
    ds.InstitutionCodeSequence = [code("JAOCH", "99HOSP", "Jalal-Abad Oblast Children's Hospital")]
    ds.InstitutionalDepartmentTypeCodeSequence = [
        code("CARD-JA", "99HOSP", "Cardiology ward of Jalal-Abad Oblast")
    ]
    return Built(
        [Sent(ds)],
        {"name": ["Tashmatova", "Gulzada"], "institution": ["Jalal-Abad Oblast"]},
    )


@case("nested")
def sr_document_title_code() -> Built:
    """Enhanced SR whose document title (root concept, 99HOSP) names the child."""
    ds = header(ENHANCED_SR, "SR", name="Bekbolotova^Nazgul", pid="KG-310008")
    sr_document(
        ds,
        code("ECHO-BEK", "99HOSP", "Echo report of Bekbolotova Nazgul"),
        [sr_item("CONTAINS", "TEXT", NOTE, TextValue="Small PDA, 2 mm")],
    )
    return Built([Sent(ds)], {"name": ["Bekbolotova", "Nazgul"]})


def _gsps(name: str, pid: str) -> Dataset:
    ds = header(GSPS, "PR", name=name, pid=pid)
    ds.PresentationCreationDate = STUDY_DATE
    ds.PresentationCreationTime = "110000"
    ds.ContentLabel = "ANNOTATION"
    ds.ContentDescription = ""
    ds.ContentCreatorName = ""
    ds.PresentationLUTShape = "IDENTITY"
    referenced = Dataset()
    referenced.ReferencedSOPClassUID = US
    referenced.ReferencedSOPInstanceUID = uid()
    series = Dataset()
    series.SeriesInstanceUID = uid()
    series.ReferencedImageSequence = [referenced]
    ds.ReferencedSeriesSequence = [series]
    area = Dataset()
    area.DisplayedAreaTopLeftHandCorner = [1, 1]
    area.DisplayedAreaBottomRightHandCorner = [640, 480]
    area.PresentationSizeMode = "SCALE TO FIT"
    area.PresentationPixelSpacing = [0.3, 0.3]
    ds.DisplayedAreaSelectionSequence = [area]
    return ds


@case("nested")
def gsps_text_objects() -> Built:
    """Presentation state: text object, layer description, label, description, creator."""
    ds = _gsps("Abdrakhmanov^Timurlan", "KG-310009")
    ds.ContentLabel = "ABDRAKHMANOV_T"
    ds.ContentDescription = "Presentation for Abdrakhmanov Timurlan"
    ds.ContentCreatorName = "Sheraliev^Farrukh"
    text = Dataset()
    text.UnformattedTextValue = "Abdrakhmanov Timurlan 12y PDA 3mm"
    text.BoundingBoxAnnotationUnits = "PIXEL"
    text.BoundingBoxTopLeftHandCorner = [10, 10]
    text.BoundingBoxBottomRightHandCorner = [200, 30]
    text.BoundingBoxTextHorizontalJustification = "LEFT"
    annotation = Dataset()
    annotation.GraphicLayer = "NOTES"
    annotation.TextObjectSequence = [text]
    ds.GraphicAnnotationSequence = [annotation]
    layer = Dataset()
    layer.GraphicLayer = "NOTES"
    layer.GraphicLayerOrder = 1
    layer.GraphicLayerDescription = "Measurements of Dr. Sheraliev"
    ds.GraphicLayerSequence = [layer]
    return Built(
        [Sent(ds)],
        {"name": ["Abdrakhmanov", "Timurlan"], "staff": ["Sheraliev", "Farrukh"]},
    )


@case("nested")
def gsps_referenced_images() -> Built:
    """Presentation state whose referenced image UIDs are the originals."""
    ds = _gsps("Chynybaeva^Asylzat", "KG-310010")
    return Built([Sent(ds)], {"name": ["Chynybaeva", "Asylzat"]})


@case("nested")
def enhanced_xa_frame_labels() -> Built:
    """Enhanced XA per-frame FrameLabel and FrameComments naming the child."""
    ds = header(ENHANCED_XA, "XA", name="Kasymaliev^Eldiyar", pid="KG-310011", sex="M")
    pixels_module(ds, np.full((2, 20, 24), 80, np.uint8), "MONOCHROME2")
    del ds.FrameTime, ds.FrameIncrementPointer
    ds.ImageType = ["ORIGINAL", "PRIMARY", "SINGLE PLANE", "NONE"]
    ds.BurnedInAnnotation = "NO"
    ds.ContentQualification = "PRODUCT"
    per_frame = []
    for number in (1, 2):
        content = Dataset()
        content.FrameLabel = f"Kasymaliev run {number} LAO"
        content.FrameComments = "patient Kasymaliev Eldiyar restless"
        content.FrameAcquisitionNumber = number
        group = Dataset()
        group.FrameContentSequence = [content]
        per_frame.append(group)
    ds.PerFrameFunctionalGroupsSequence = per_frame
    shared = Dataset()
    anatomy = Dataset()
    anatomy.AnatomicRegionSequence = [code("T-32000", "SRT", "Heart")]
    anatomy.FrameLaterality = "U"
    shared.FrameAnatomySequence = [anatomy]
    ds.SharedFunctionalGroupsSequence = [shared]
    return Built([Sent(ds)], {"name": ["Kasymaliev", "Eldiyar"]})


@case("nested")
def contributing_equipment() -> Built:
    """ContributingEquipmentSequence: description, station and hospital of a CD import."""
    ds = tiny_xa(header(XA, "XA", name="Myrzakulova^Aigulbek", pid="KG-310012"))
    equipment = Dataset()
    equipment.Manufacturer = "CD importer"
    equipment.InstitutionName = "Karakol City Hospital"
    equipment.StationName = "KRKL-PACS-01"
    equipment.ContributionDescription = (
        "Burned to CD for Myrzakulova Aigulbek by operator Imanaliev"
    )
    equipment.ContributionDateTime = STUDY_DATE + "120000"
    equipment.PurposeOfReferenceCodeSequence = [code("109103", "DCM", "Modifying Equipment")]
    ds.ContributingEquipmentSequence = [equipment]
    return Built(
        [Sent(ds)],
        {
            "name": ["Myrzakulova", "Aigulbek"],
            "staff": ["Imanaliev"],
            "institution": ["Karakol City Hospital"],
            "station": ["KRKL-PACS-01"],
        },
    )


@case("nested")
def issuer_qualifier_sequences() -> Built:
    """Issuer qualifiers and accession issuer: local namespaces naming people and places."""
    ds = tiny_us(header(US, "US", name="Zhusupova^Kanykei", pid="TL-310013", accession="TL55210"))
    facility = Dataset()
    facility.LocalNamespaceEntityID = "Talas Regional Hospital"
    qualifiers = Dataset()
    qualifiers.UniversalEntityID = "urn:oid:1.2.417.77.1.8812"
    qualifiers.UniversalEntityIDType = "ISO"
    qualifiers.IdentifierTypeCode = "MR"
    qualifiers.AssigningFacilitySequence = [facility]
    ds.IssuerOfPatientIDQualifiersSequence = [qualifiers]
    accession_issuer = Dataset()
    accession_issuer.LocalNamespaceEntityID = "RIS desk of Zhusupova (Talas)"
    ds.IssuerOfAccessionNumberSequence = [accession_issuer]
    return Built(
        [Sent(ds)],
        {
            "name": ["Zhusupova", "Kanykei"],
            "id": ["TL-310013"],
            "accession": ["TL55210"],
            "institution": ["Talas Regional Hospital"],
            "issuer-text": ["1.2.417.77.1.8812"],
        },
    )


@case("nested")
def other_patient_ids() -> Built:
    """Other patient IDs (passport, personal number) in the sequence and the list."""
    ds = tiny_us(header(US, "US", name="Asankulova^Meerimbek", pid="KG-310014"))
    passport = Dataset()
    passport.PatientID = "AN4471193"
    passport.IssuerOfPatientID = "KG Passport Office"
    passport.TypeOfPatientID = "TEXT"
    ds.OtherPatientIDsSequence = [passport]
    ds.OtherPatientIDs = "PIN21108201100477"
    return Built(
        [Sent(ds)],
        {
            "name": ["Asankulova", "Meerimbek"],
            "id": ["AN4471193", "PIN21108201100477"],
            "issuer-text": ["KG Passport Office"],
        },
    )


@case("nested")
def hl7_document_reference() -> Built:
    """HL7 structured document reference: instance identifier and retrieve URI."""
    ds = header(COMPREHENSIVE_SR, "SR", name="Ismailova^Zhamilya", pid="KG-992201")
    reference = Dataset()
    reference.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.2"
    reference.ReferencedSOPInstanceUID = uid()
    reference.HL7InstanceIdentifier = "KG-992201^Ismailova^Zhamilya^^^&2.16.840.1.113883.2.9&ISO"
    reference.RetrieveURI = "https://ehr.osh-children.kg/cda?mrn=KG-992201"
    ds.HL7StructuredDocumentReferenceSequence = [reference]
    sr_document(ds, ECHO_REPORT, [sr_item("CONTAINS", "TEXT", NOTE, TextValue="see CDA")])
    return Built(
        [Sent(ds)],
        {
            "name": ["Ismailova", "Zhamilya"],
            "id": ["KG-992201"],
            "institution": ["ehr.osh-children.kg"],
        },
    )


@case("nested", core=True)
def retrieve_urls() -> Built:
    """Retrieve URL / URI / location UID embedding original UIDs and the MRN."""
    ds = tiny_us(header(US, "US", name="Mambetova^Ayperi", pid="NR-440172"))
    host = "https://pacs.naryn-hosp.kg"
    ds.RetrieveURL = f"{host}/wado-rs/studies/{ds.StudyInstanceUID}?PatientID=NR-440172"
    image = Dataset()
    image.ReferencedSOPClassUID = US
    image.ReferencedSOPInstanceUID = uid()
    image.RetrieveURI = (
        f"{host}/wado?requestType=WADO&studyUID={ds.StudyInstanceUID}"
        f"&objectUID={image.ReferencedSOPInstanceUID}"
    )
    image.RetrieveLocationUID = uid()
    series = Dataset()
    series.SeriesInstanceUID = uid()
    series.RetrieveURL = (
        f"{host}/wado-rs/studies/{ds.StudyInstanceUID}/series/{series.SeriesInstanceUID}"
    )
    series.ReferencedImageSequence = [image]
    ds.ReferencedSeriesSequence = [series]
    return Built(
        [Sent(ds)],
        {
            "name": ["Mambetova", "Ayperi"],
            "id": ["NR-440172"],
            "institution": ["pacs.naryn-hosp.kg"],
        },
    )


@case("nested")
def source_image_references() -> Built:
    """Source, derivation and referenced image sequences (deep) with original UIDs."""
    ds = tiny_xa(header(XA, "XA", name="Orozbekov^Temirlan", pid="KG-310017", sex="M"))
    ds.ImageType = ["DERIVED", "SECONDARY", "SINGLE PLANE"]

    def ref() -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID = XA
        item.ReferencedSOPInstanceUID = uid()
        return item

    ds.SourceImageSequence = [ref()]
    derivation = Dataset()
    derivation.DerivationCodeSequence = [code("113076", "DCM", "Segmentation")]
    derivation.SourceImageSequence = [ref(), ref()]
    ds.DerivationImageSequence = [derivation]
    ds.ReferencedImageSequence = [ref()]
    series = Dataset()
    series.SeriesInstanceUID = uid()
    series.ReferencedInstanceSequence = [ref()]
    study = Dataset()
    study.StudyInstanceUID = uid()
    study.ReferencedSeriesSequence = [series]
    ds.StudiesContainingOtherReferencedInstancesSequence = [study]
    return Built([Sent(ds)], {"name": ["Orozbekov", "Temirlan"]})


@case("nested")
def unlisted_uid_attributes() -> Built:
    """UID attributes the table does not name, holding original instance/study UIDs."""
    ds = tiny_xa(header(XA, "XA", name="Kurmanalieva^Begaiym", pid="KG-310018"))
    ds.MultiFrameSourceSOPInstanceUID = uid()
    ds.ConcatenationUID = uid()
    ds.SOPInstanceUIDOfConcatenationSource = ds.SOPInstanceUID
    ds.IrradiationEventUID = uid()
    ds.SynchronizationFrameOfReferenceUID = uid()
    ds.StorageMediaFileSetUID = uid()
    ds.OriginalSpecializedSOPClassUID = uid()
    return Built([Sent(ds)], {"name": ["Kurmanalieva", "Begaiym"]})


UNKNOWN_TAGS = (0x00669F01, 0x00289F02, 0x0018A0F0)


@case("nested", core=True)
def unknown_public_tags_implicit() -> Built:
    """Even-group tags pydicom does not know, sent in implicit VR (read as UN)."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Kurmanbekova^Elzada",
            pid="KG-310019",
            syntax=ImplicitVRLittleEndian,
        )
    )
    ds.add_new(UNKNOWN_TAGS[0], "UN", b"Kurmanbekova Elzada 2022")
    ds.add_new(UNKNOWN_TAGS[1], "UN", b"KG-310019 ")
    ds.add_new(UNKNOWN_TAGS[2], "UN", "Курманбекова З.".encode())
    return Built(
        [Sent(ds)],
        {"name": ["Kurmanbekova", "Elzada", "Курманбекова"], "id": ["KG-310019"]},
    )


@case("nested")
def retired_text_tags() -> Built:
    """Retired text attributes (Reason for Study, Acquisition Comments, Results Comments)."""
    ds = tiny_us(header(US, "US", name="Tokonova^Aidana", pid="KG-310020"))
    ds.ReasonForStudy = "Cyanosis, sister of Tokonova Aidana"
    ds.AcquisitionComments = "Operator Bolotkanov, child Aidana crying"
    ds.add_new(0x40084000, "ST", "Results reviewed with grandmother Tokonova Rysgul")
    return Built(
        [Sent(ds)],
        {"name": ["Tokonova", "Aidana"], "staff": ["Bolotkanov"], "relative": ["Rysgul"]},
    )


@case("nested")
def timezone_offset() -> Built:
    """TimezoneOffsetFromUTC +0600 (where the child lives) must not survive unchanged."""
    ds = tiny_us(header(US, "US", name="Alybaeva^Nurila", pid="KG-310021"))
    ds.TimezoneOffsetFromUTC = "+0600"
    ds.AcquisitionDateTime = STUDY_DATE + "101700.000000+0600"
    return Built(
        [Sent(ds)],
        {"name": ["Alybaeva", "Nurila"]},
        forbidden=[("TimezoneOffsetFromUTC", "+0600")],
    )


@case("nested", core=True)
def age_over_89() -> Built:
    """An adult with congenital heart disease, 95 years old: PatientAge above 89."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Sultanaliev^Toktobolot",
            pid="KG-310022",
            birth="19310214",
            sex="M",
        )
    )
    ds.PatientAge = "095Y"
    ds.StudyDescription = "GUCH echo (Fontan)"
    return Built(
        [Sent(ds)],
        {
            "name": ["Sultanaliev", "Toktobolot"],
            "birthdate": ["19310214"],
            "age": ["095Y"],
        },
        max_age="090Y",
    )


@case("nested")
def request_attributes() -> Built:
    """Request attributes: procedure descriptions and IDs naming the child and a sibling."""
    ds = tiny_us(header(US, "US", name="Bakirov^Eldos", pid="KG-310023", sex="M"))
    request = Dataset()
    request.RequestedProcedureDescription = "Echo for Bakirov Eldos, sibling of Bakirova Ainura"
    request.ScheduledProcedureStepDescription = "Bakirov A. pre-op"
    request.RequestedProcedureID = "RP-KG-88121"
    request.ScheduledProcedureStepID = "SPS-88121"
    request.ScheduledProtocolCodeSequence = [code("BAK-1", "99HOSP", "Bakirov protocol")]
    ds.RequestAttributesSequence = [request]
    return Built(
        [Sent(ds)],
        {
            "name": ["Bakirov", "Eldos"],
            "relative": ["Ainura"],
            "id": ["RP-KG-88121", "SPS-88121"],
        },
    )


@case("nested")
def performed_procedure_step() -> Built:
    """Performed procedure step description, ID, comments, station and location."""
    ds = tiny_us(header(US, "US", name="Zhanybekov^Ulanbek", pid="KG-310024", sex="M"))
    ds.PerformedProcedureStepDescription = "TTE Zhanybekov Ulanbek (ward 4)"
    ds.PerformedProcedureStepID = "PPS-ZH-5521"
    ds.CommentsOnThePerformedProcedureStep = "Child Zhanybekov Ulanbek sedated by Dr. Kydyralieva"
    ds.PerformedStationName = "ECHO-TOKMOK-1"
    ds.PerformedLocation = "Tokmok district hospital"
    ds.PerformedProcedureStepStartDate = STUDY_DATE
    return Built(
        [Sent(ds)],
        {
            "name": ["Zhanybekov", "Ulanbek"],
            "staff": ["Kydyralieva"],
            "id": ["PPS-ZH-5521"],
            "station": ["ECHO-TOKMOK-1"],
            "institution": ["Tokmok district"],
        },
    )


@case("nested")
def acquisition_context() -> Built:
    """Acquisition context items with text and person name values."""
    ds = tiny_us(header(US, "US", name="Shamshieva^Aidaikul", pid="KG-310025"))
    note = Dataset()
    note.ValueType = "TEXT"
    note.ConceptNameCodeSequence = [NOTE]
    note.TextValue = "Shamshieva Aidaikul held by aunt Sarygulova"
    person = Dataset()
    person.ValueType = "PNAME"
    person.ConceptNameCodeSequence = [code("121008", "DCM", "Person Observer Name")]
    person.PersonName = "Sarygulova^Venera"
    ds.AcquisitionContextSequence = [note, person]
    return Built(
        [Sent(ds)],
        {"name": ["Shamshieva", "Aidaikul"], "relative": ["Sarygulova", "Venera"]},
    )


@case("nested")
def patient_relations_and_contacts() -> Built:
    """Responsible person, mother's name, address, telephone and comments."""
    ds = tiny_us(header(US, "US", name="Asanova^Kulpunai", pid="KG-310026"))
    ds.ResponsiblePerson = "Asanova^Kulzhan"
    ds.ResponsiblePersonRole = "MOTHER"
    ds.PatientMotherBirthName = "Dzhusupbekova^Kulzhan"
    ds.PatientAddress = "Mira 12-34, Balykchy"
    ds.PatientTelephoneNumbers = "+996 700 44 81 92"
    ds.PatientTelecomInformation = "mailto:kulzhan.asanova@mail.kg"
    ds.PatientComments = "Lives with grandmother; call +996700448192"
    ds.MedicalAlerts = "Allergic to penicillin (mother Kulzhan)"
    return Built(
        [Sent(ds)],
        {
            "name": ["Kulpunai"],
            "relative": ["Kulzhan", "Dzhusupbekova"],
            "address": ["Mira 12-34", "Balykchy", "kulzhan.asanova@mail.kg"],
            "phone": ["700448192"],
        },
    )


@case("nested")
def original_attributes_history() -> Built:
    """OriginalAttributesSequence keeping the name and ID before a PACS correction."""
    ds = tiny_us(header(US, "US", name="Sultanbekova^Elnura^Talantovna", pid="KG-771100"))
    modified = Dataset()
    modified.PatientName = "Sultanbekova^Elnura"
    modified.PatientID = "KG-77110"
    modified.AccessionNumber = "OSH-ACC-5512"
    original = Dataset()
    original.ModifiedAttributesSequence = [modified]
    original.AttributeModificationDateTime = STUDY_DATE + "130000"
    original.ModifyingSystem = "PACS-FIX-OSH"
    original.SourceOfPreviousValues = "Osh registry"
    original.ReasonForTheAttributeModification = "COERCE"
    ds.OriginalAttributesSequence = [original]
    return Built(
        [Sent(ds)],
        {
            "name": ["Sultanbekova", "Elnura", "Talantovna"],
            "id": ["KG-771100", "OSH-ACC-5512"],
        },
    )


@case("nested")
def private_tags_with_name() -> Built:
    """Private elements (text, bytes, nested sequence) carrying the name."""
    ds = tiny_us(header(US, "US", name="Ismanova^Dinara", pid="KG-310028"))
    block = ds.private_block(0x0019, "ACME_ECHO_1", create=True)
    block.add_new(0x10, "LO", "Patient: Ismanova Dinara")
    block.add_new(0x11, "OB", b"ISMANOVA^DINARA|KG-310028")
    inner = Dataset()
    inner.add_new(0x00091010, "LO", "ACME")  # no creator: read as unknown private
    inner.PatientName = "Ismanova^Dinara"
    block.add_new(0x12, "SQ", [inner])
    return Built([Sent(ds)], {"name": ["Ismanova", "Dinara"], "id": ["KG-310028"]})


@case("nested", doors=("import", "stow"))
def file_meta_identity() -> Built:
    """File meta: source AE of a laptop named after its owner, private information."""
    ds = tiny_us(header(US, "US", name="Kochkorbaeva^Aselia", pid="KG-310029"))
    ds.file_meta.SourceApplicationEntityTitle = "KOCHKORBAEV-PC"
    ds.file_meta.ImplementationVersionName = "KOCHKORBAEV1"
    ds.file_meta.PrivateInformationCreatorUID = uid()
    ds.file_meta.PrivateInformation = b"owner Kochkorbaeva Aselia"
    return Built([Sent(ds)], {"name": ["Kochkorbaeva", "Aselia", "KOCHKORBAEV"]})


@case("nested")
def media_and_clinical_trial() -> Built:
    """Storage media file-set ID and clinical trial subject/site attributes."""
    ds = tiny_us(header(US, "US", name="Omurova^Begimai", pid="KG-310030"))
    ds.StorageMediaFileSetID = "CD-OMUROVA-26"
    ds.ClinicalTrialSponsorName = "CHD registry"
    ds.ClinicalTrialProtocolID = "CHD-2026"
    ds.ClinicalTrialSiteID = "NRN"
    ds.ClinicalTrialSiteName = "Site Naryn (Dr. Sooronbaev)"
    ds.ClinicalTrialSubjectID = "CHD-KG-TRIAL-0931"
    return Built(
        [Sent(ds)],
        {
            "name": ["Omurova", "Begimai"],
            "staff": ["Sooronbaev"],
            "id": ["CHD-KG-TRIAL-0931"],
        },
    )


@case("nested")
def visit_and_admission() -> Built:
    """Visit comments, admitting diagnosis text, admission ID and its issuer."""
    ds = tiny_us(header(US, "US", name="Kubanova^Nurperi", pid="KG-310031"))
    ds.VisitComments = "Admitted with mother Kubanova Saadat"
    ds.AdmittingDiagnosesDescription = "VSD, admitted by Dr. Kubatbekov"
    ds.AdmissionID = "ADM-2026-4471"
    issuer = Dataset()
    issuer.LocalNamespaceEntityID = "Bishkek Emergency Dept Kubatbekov"
    ds.IssuerOfAdmissionIDSequence = [issuer]
    return Built(
        [Sent(ds)],
        {
            "name": ["Kubanova", "Nurperi"],
            "relative": ["Saadat"],
            "staff": ["Kubatbekov"],
            "id": ["ADM-2026-4471"],
        },
    )


@case("nested")
def device_and_station_identity() -> Built:
    """Station name, device serial number, performing AE title, capture device ID."""
    ds = tiny_us(header(US, "US", name="Abdykerimova^Tolgonai", pid="KG-310032"))
    ds.StationName = "ECHOSUITE-OSH-3"
    ds.DeviceSerialNumber = "VIVID-SN-88412"
    ds.DeviceUID = uid()
    ds.PerformedStationAETitle = "OSH_EPIQ7"
    ds.SecondaryCaptureDeviceID = "GRABBER-OSH-9"
    return Built(
        [Sent(ds)],
        {
            "name": ["Abdykerimova", "Tolgonai"],
            "station": ["ECHOSUITE-OSH-3", "VIVID-SN-88412", "OSH_EPIQ7", "GRABBER-OSH-9"],
        },
    )


# =============================================================================
# descriptors: names a whole-token cleaner misses, in every character set
# =============================================================================


@case("descriptors", core=True)
def underscore_joined_name() -> Built:
    """Name joined by underscores in study and series descriptions."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Toktogulov^Alibek",
            pid="KG-320001",
            sex="M",
            study_description="ECHO_TOKTOGULOV_ALIBEK_FU",
            series_description="toktogulov_alibek 4CH",
        )
    )
    return Built([Sent(ds)], {"name": ["Toktogulov", "Alibek", "Toktogulov Alibek"]})


@case("descriptors")
def camelcase_joined_name() -> Built:
    """Name written together (ErmekovNurlanbek) in series description and protocol name."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Ermekov^Nurlanbek",
            pid="KG-320002",
            sex="M",
            series_description="ErmekovNurlanbek_PLAX",
        )
    )
    ds.ProtocolName = "Kids-ErmekovN"
    return Built([Sent(ds)], {"name": ["Ermekov", "Nurlanbek"]})


@case("descriptors")
def double_surname_part() -> Built:
    """One part of a double surname on its own in descriptions."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Rakhimova-Sharipova^Zarinabonu",
            pid="TJ-320003",
            study_description="TTE Sharipova Z.",
        )
    )
    ds.ImageComments = "Rakhimova, follow-up"
    return Built(
        [Sent(ds, calling_ae="DUSHANBE_ECHO")],
        {"name": ["Rakhimova", "Sharipova", "Zarinabonu"]},
    )


@case("descriptors", core=True)
def cyrillic_header_latin_text() -> Built:
    """Cyrillic name in the header, Latin spellings in descriptions and comments."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Жолдошев^Нурбек",
            pid="KG-320004",
            sex="M",
            study_description="TTE Zholdoshev Nurbek",
            series_description="ZHOLDOSHEV N",
        )
    )
    ds.ImageComments = "Jol'doshev, 2nd visit"
    return Built([Sent(ds)], {"name": ["Жолдошев", "Нурбек", "Zholdoshev"]})


@case("descriptors")
def latin_header_cyrillic_text() -> Built:
    """Latin name in the header, Cyrillic in series description and comments."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Mamatkulova^Dilnoza",
            pid="TJ-320005",
            series_description="ЭхоКГ Маматкулова Д.",
        )
    )
    ds.ImageComments = "Дильноза после операции"
    return Built(
        [Sent(ds, calling_ae="DUSHANBE_ECHO")],
        {"name": ["Mamatkulova", "Dilnoza", "Маматкулова", "Дильноза"]},
    )


@case("descriptors")
def cyrillic_inflected_iso_ir_144() -> Built:
    """ISO_IR 144: the surname declined (Бекмуратовой) in descriptions."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Бекмуратова^Айжамал",
            pid="KZ-320006",
            charset="ISO_IR 144",
            study_description="ЭхоКГ у Бекмуратовой Айжамал",
        )
    )
    ds.ImageComments = "мать Айжамал, сестра"
    return Built([Sent(ds)], {"name": ["Бекмуратов", "Айжамал"]})


@case("descriptors")
def chinese_header_pinyin_text() -> Built:
    """GB18030 Chinese name in the header, pinyin in descriptions."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="欧阳^思睿",
            pid="CN-320007",
            charset="GB18030",
            study_description="TTE OUYANG SIRUI",
            series_description="Ouyang_Sirui PLAX",
        )
    )
    return Built([Sent(ds)], {"name": ["欧阳思睿", "思睿", "Ouyang", "Ouyang Sirui"]})


@case("descriptors")
def pinyin_header_chinese_text() -> Built:
    """Pinyin (with ideographic group) in the header, characters inside Chinese text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Zhao^Yutong=赵^雨桐",
            pid="CN-320008",
            charset="GB18030",
            study_description="室间隔缺损 赵雨桐",
        )
    )
    ds.ImageComments = "患儿赵雨桐术后复查"
    return Built([Sent(ds)], {"name": ["赵雨桐", "雨桐", "Yutong", "Zhao Yutong"]})


@case("descriptors")
def chinese_name_without_separators() -> Built:
    """A compound Chinese surname written into running text without separators."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="司马^昭阳",
            pid="CN-320009",
            charset="GB18030",
            study_description="房间隔缺损封堵术后司马昭阳复查",
            series_description="司马昭阳心超",
        )
    )
    return Built([Sent(ds)], {"name": ["司马昭阳", "司马", "昭阳"]})


@case("descriptors", core=True)
def japanese_iso2022_pn_groups() -> Built:
    """ISO 2022 IR 87: alphabetic, ideographic and phonetic name groups, kanji in text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Takahashi^Haruto=高橋^陽翔=たかはし^はると",
            pid="JP-320010",
            sex="M",
            charset=["", "ISO 2022 IR 87"],
            study_description="心エコー 高橋陽翔",
        )
    )
    return Built(
        [Sent(ds)],
        {"name": ["Takahashi", "Haruto", "高橋", "陽翔", "たかはし", "はると"]},
    )


@case("descriptors")
def japanese_ir13_katakana() -> Built:
    """ISO 2022 IR 13 half-width katakana with IR 87 kanji and hiragana groups."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="ﾔﾏﾓﾄ^ｿｳﾀ=山本^颯太=やまもと^そうた",
            pid="JP-320011",
            sex="M",
            charset=["ISO 2022 IR 13", "ISO 2022 IR 87"],
        )
    )
    ds.ImageComments = "山本颯太"
    return Built([Sent(ds)], {"name": ["ﾔﾏﾓﾄ", "山本", "颯太", "やまもと", "そうた"]})


@case("descriptors")
def latin1_umlauts_and_eszett() -> Built:
    """ISO_IR 100 name with ß and ü, written as SS and UE in descriptions."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Weißhäupl^Jürgen",
            pid="RU-320012",
            sex="M",
            charset="ISO_IR 100",
            study_description="Echo WEISSHAEUPL JUERGEN",
        )
    )
    ds.ImageComments = "Jurgen Weisshaupl, Kaliningrad"
    return Built([Sent(ds)], {"name": ["Weißhäupl", "Jürgen"]})


@case("descriptors")
def kazakh_letters() -> Built:
    """Kazakh letters (ә, і, қ, ұ) in the header, Latin spelling in text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Әбдіқадыров^Нұрсұлтанбек",
            pid="KZ-320013",
            sex="M",
            study_description="Abdikadyrov Nursultanbek EchoCG",
        )
    )
    return Built([Sent(ds)], {"name": ["Әбдіқадыров", "Нұрсұлтанбек", "Abdikadyrov"]})


@case("descriptors")
def tajik_letters() -> Built:
    """Tajik letters (ҷ, ӯ, ҳ) in the header, two Latin spellings in text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Ҷӯраев^Ҳусейнҷон",
            pid="TJ-320014",
            sex="M",
            series_description="Juraev H. PSAX",
        )
    )
    ds.ImageComments = "Dzhuraev Khuseinjon"
    return Built(
        [Sent(ds, calling_ae="DUSHANBE_ECHO")],
        {"name": ["Ҷӯраев", "Ҳусейнҷон", "Juraev", "Khuseinjon"]},
    )


@case("descriptors")
def birth_date_formats() -> Built:
    """Birth date written as 2.8.11, 02.08.2011, 2011-08-02, 02/08/2011 in text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Baitikova^Umutai",
            pid="KG-320015",
            birth="20110802",
            study_description="DOB 02.08.2011",
            series_description="b. 2.8.11",
        )
    )
    ds.ImageComments = "born 2011-08-02 / 02/08/2011"
    return Built(
        [Sent(ds)],
        {
            "name": ["Baitikova", "Umutai"],
            # Only this case and age_over_89 have birth dates as needles: no
            # other original date lies within ten years after them, so no date
            # the node shifts back (by up to 3650 days) can land on them.
            "birthdate": ["20110802", "02.08.2011", "2.8.11", "2011-08-02", "02/08/2011"],
        },
    )


@case("descriptors")
def phone_numbers() -> Built:
    """Telephone numbers with and without spaces, in header and text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Duishenova^Asemai",
            pid="KG-320016",
            study_description="call 0555123456",
        )
    )
    ds.PatientTelephoneNumbers = "+996 (555) 12-34-56"
    ds.ImageComments = "mother tel 996555123456"
    return Built(
        [Sent(ds)],
        {"name": ["Duishenova", "Asemai"], "phone": ["555123456", "+996 (555) 12-34-56"]},
    )


@case("descriptors", core=True)
def staff_names_in_descriptions() -> Built:
    """Referring, performing, reading, requesting physicians and operators in text."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Mukashev^Erbolot",
            pid="KG-320017",
            sex="M",
            study_description="TTE ref Usenov, perf Sydykova",
            series_description="ASANALIEV B",
        )
    )
    ds.ReferringPhysicianName = "Usenov^Kanatbek"
    ds.PerformingPhysicianName = "Sydykova^Meerim"
    ds.OperatorsName = "Asanaliev^Bolot"
    ds.NameOfPhysiciansReadingStudy = "Omurzakov^Erlan"
    ds.RequestingPhysician = "Temirbekova^Saule"
    ds.PhysiciansOfRecord = "Kozhomkulov^Adilet"
    ds.ImageComments = "read by Omurzakov E.; req Temirbekova; PoR Kozhomkulov"
    return Built(
        [Sent(ds)],
        {
            "name": ["Mukashev", "Erbolot"],
            "staff": [
                "Usenov",
                "Kanatbek",
                "Sydykova",
                "Asanaliev",
                "Omurzakov",
                "Temirbekova",
                "Kozhomkulov",
            ],
        },
    )


@case("descriptors")
def staff_identification_sequences() -> Built:
    """Physician and operator identification sequences: codes, address, telephone."""
    ds = tiny_us(header(US, "US", name="Sagynbaev^Aktilek", pid="KG-320018", sex="M"))

    def person(meaning: str) -> Dataset:
        item = Dataset()
        item.PersonIdentificationCodeSequence = [code("ID-1", "99HOSP", meaning)]
        item.InstitutionName = "Republican Cardiology Centre Tynystanov"
        item.PersonAddress = "Tynystanov 44, Bishkek"
        item.PersonTelephoneNumbers = "+996 312 661010"
        return item

    ds.PhysiciansOfRecordIdentificationSequence = [person("Dr. Alymkulov Temir")]
    ds.OperatorIdentificationSequence = [person("Nurse Sooronova Zhyldyz")]
    ds.PerformingPhysicianIdentificationSequence = [person("Dr. Alymkulov Temir")]
    return Built(
        [Sent(ds)],
        {
            "name": ["Sagynbaev", "Aktilek"],
            "staff": ["Alymkulov", "Sooronova"],
            "address": ["Tynystanov"],
            "phone": ["312661010"],
        },
    )


@case("descriptors")
def station_and_institution_in_text() -> Built:
    """Station and institution names repeated in descriptions and comments."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Kalykova^Asel",
            pid="KG-320019",
            study_description="Osh Interregional Children's Hospital TTE",
            series_description="OSHECHO2 A4C",
        )
    )
    ds.StationName = "OSHECHO2"
    ds.InstitutionName = "Osh Interregional Children's Hospital"
    ds.InstitutionAddress = "Lenin 311, Osh"
    ds.InstitutionalDepartmentName = "Cardiology-2 Osh"
    ds.ImageComments = "scanned at Lenin 311"
    return Built(
        [Sent(ds)],
        {
            "name": ["Kalykova"],
            "station": ["OSHECHO2"],
            "institution": ["Osh Interregional"],
            "address": ["Lenin 311"],
        },
    )


@case("descriptors")
def ids_in_text() -> Built:
    """Patient ID and accession number repeated in descriptions, protocol, comments."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Abylova^Zhibek",
            pid="KG-778812",
            accession="A26KG004471",
            study_description="Acc A26KG004471",
        )
    )
    ds.StudyID = "ST4471"
    ds.ProtocolName = "KG-778812_TTE"
    ds.ImageComments = "MRN KG778812"
    return Built(
        [Sent(ds)],
        {"name": ["Abylova", "Zhibek"], "id": ["KG-778812"], "accession": ["A26KG004471"]},
    )


@case("descriptors")
def uppercase_cyrillic() -> Built:
    """Upper-case Cyrillic name in the series description, lower case in comments."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Токтосунова^Айгуль",
            pid="KG-320021",
            series_description="ТОКТОСУНОВА АЙГУЛЬ ЭХО",
        )
    )
    ds.ImageComments = "токтосунова"
    return Built([Sent(ds)], {"name": ["Токтосунова", "Айгуль"]})


@case("descriptors")
def patronymic_and_initials() -> Built:
    """Three-part name: surname with initials in text, patronymic alone."""
    ds = tiny_us(
        header(
            US,
            "US",
            name="Abdraimov^Azamat^Kubanychbekovich",
            pid="KG-320022",
            sex="M",
            study_description="Abdraimov A.K.",
        )
    )
    ds.ImageComments = "Kubanychbekovich, father present"
    return Built([Sent(ds)], {"name": ["Abdraimov", "Azamat", "Kubanychbekovich"]})


@case("descriptors")
def name_in_other_text_fields() -> Built:
    """Derivation description, protocol name and comments carrying the name."""
    ds = tiny_us(header(US, "US", name="Ivanenko^Evelina", pid="RU-320023"))
    ds.DerivationDescription = "exported from IVANENKO_E_ECHO.avi"
    ds.ProtocolName = "Ivanenko Eva paeds"
    ds.ImageComments = "Evelina, 6 y"
    return Built([Sent(ds)], {"name": ["Ivanenko", "Evelina"]})


@case("descriptors")
def name_in_device_fields() -> Built:
    """Model name and software version strings naming the machine's owner."""
    ds = tiny_us(header(US, "US", name="Turdubaeva^Aizirek", pid="KG-320024"))
    ds.ManufacturerModelName = "Vivid (owner Dr. Raimbekov)"
    ds.SoftwareVersions = "v3 Raimbekov build"
    return Built([Sent(ds)], {"name": ["Turdubaeva", "Aizirek"], "staff": ["Raimbekov"]})


@case("descriptors")
def ideographic_and_phonetic_only() -> Built:
    """PN with an empty alphabetic group: ideographic and phonetic groups only."""
    ds = tiny_us(
        header(US, "US", name="=李^明轩=Lǐ^Míngxuān", pid="CN-320025", charset="ISO_IR 192")
    )
    ds.ImageComments = "李明轩"
    return Built([Sent(ds)], {"name": ["明轩", "李明轩", "Míngxuān"]})


@case("descriptors")
def name_in_accession_and_study_id() -> Built:
    """Accession number and study ID built from the surname."""
    ds = tiny_us(
        header(US, "US", name="Osmonova^Zhyldyzkan", pid="KG-320026", accession="OSMONOVA-0412")
    )
    ds.StudyID = "OSMONOVA1"
    return Built([Sent(ds)], {"name": ["Osmonova", "Zhyldyzkan"]})


# =============================================================================
# pixels: identity burned into the image
# =============================================================================


def _us_colour(rows: int, cols: int, name: str, banner: int) -> np.ndarray:
    grey = speckle(rows, cols, name, top=banner)
    return np.repeat(grey[..., None], 3, axis=2)


@case("pixels", core=True)
def us_rgb_region_whole_image() -> Built:
    """RGB ultrasound whose one region covers the whole image; name in the top banner."""
    rows, cols = 200, 300
    ds = header(US, "US", name="Kenzhebaeva^Altynai", pid="KG-650021")
    frame = _us_colour(rows, cols, "us1", 28)
    text = "Kenzhebaeva Altynai 14.03.2022 KG-650021"
    mask = text_mask((rows, cols), (4, 6), text, 13)
    paint(frame, mask, (255, 255, 255))
    pixels_module(ds, frame[None], "RGB")
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC"]
    whole_region(ds)
    return Built(
        [Sent(ds)],
        {"name": ["Kenzhebaeva", "Altynai"], "id": ["KG-650021"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def us_grey_region_whole_image() -> Built:
    """Grey ultrasound, whole-image region, name and ID at the bottom left."""
    rows, cols = 210, 280
    ds = header(US, "US", name="Sadyrbekov^Ulukbek", pid="KG-650022", sex="M")
    frame = speckle(rows, cols, "us2", 10)
    text = "SADYRBEKOV ULUKBEK  ID 650022"
    mask = text_mask((rows, cols), (4, rows - 20), text, 12)
    paint(frame, mask, 255)
    pixels_module(ds, frame[None], "MONOCHROME2")
    whole_region(ds)
    return Built(
        [Sent(ds)],
        {"name": ["Sadyrbekov", "Ulukbek"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def us_extra_regions_over_banner() -> Built:
    """Small extra regions (grey bar, ECG trace) lying over the banner with the name."""
    rows, cols = 220, 300
    ds = header(US, "US", name="Moldobaeva^Kyial", pid="KG-650023")
    frame = _us_colour(rows, cols, "us3", 30)
    text = "Moldobaeva Kyial 650023"
    mask = text_mask((rows, cols), (6, 6), text, 14)
    paint(frame, mask, (255, 255, 0))
    pixels_module(ds, frame[None], "RGB")
    ds.SequenceOfUltrasoundRegions = [
        us_region(0, 30, cols - 1, rows - 1),
        us_region(0, 0, 150, 27, data_type=0x0C, fmt=5),
        us_region(151, 0, cols - 1, 27, data_type=0x09, fmt=4),
    ]
    return Built(
        [Sent(ds)],
        {"name": ["Moldobaeva"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def us_jpeg_multiframe_region_whole_image() -> Built:
    """JPEG baseline multi-frame echo, whole-image region, name on every frame."""
    rows, cols = 192, 256
    ds = header(US_MULTIFRAME, "US", name="Beishenbekova^Aigerim", pid="KG-650024")
    text = "BEISHENBEKOVA AIGERIM"
    mask = text_mask((rows, cols), (8, 4), text, 14)
    frames = []
    for index in range(3):
        frame = _us_colour(rows, cols, f"us4-{index}", 24)
        paint(frame, mask, (255, 255, 255))
        frames.append(frame)
    make_jpeg(ds, frames)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC"]
    whole_region(ds)
    return Built(
        [Sent(ds)],
        {"name": ["Beishenbekova"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask] * 3, text))],
    )


@case("pixels")
def us_jpeg_banner_outside_region() -> Built:
    """Control: JPEG echo with the name in a banner outside the one region."""
    rows, cols = 200, 256
    ds = header(US, "US", name="Toktorova^Nazira", pid="KG-650025")
    frame = _us_colour(rows, cols, "us5", 32)
    text = "Toktorova Nazira 650025"
    mask = text_mask((rows, cols), (6, 8), text, 14)
    paint(frame, mask, (255, 255, 255))
    make_jpeg(ds, [frame])
    ds.ImageType = ["ORIGINAL", "PRIMARY", "CARDIAC"]
    ds.SequenceOfUltrasoundRegions = [us_region(0, 32, cols - 1, rows - 1)]
    return Built(
        [Sent(ds)],
        {"name": ["Toktorova", "Nazira"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def us_name_inside_region() -> Built:
    """The name typed by the sonographer inside the imaging region."""
    rows, cols = 216, 288
    ds = header(US, "US", name="Zhaparova^Elnaz", pid="KG-650026")
    frame = speckle(rows, cols, "us6", 30)
    text = "Zhaparova E. VSD"
    mask = text_mask((rows, cols), (150, rows - 40), text, 13)
    paint(frame, mask, 250)
    pixels_module(ds, frame[None], "MONOCHROME2")
    ds.SequenceOfUltrasoundRegions = [us_region(0, 30, cols - 1, rows - 1)]
    return Built(
        [Sent(ds)],
        {"name": ["Zhaparova", "Elnaz"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


def _sc(name: str, pid: str, rows: int, cols: int, **kw: object) -> Dataset:
    ds = header(SECONDARY_CAPTURE, "OT", name=name, pid=pid, **kw)  # type: ignore[arg-type]
    ds.ConversionType = "WSD"
    return ds


@case("pixels", core=True)
def sc_no_burned_in_flag() -> Built:
    """Secondary capture, BurnedInAnnotation absent, name and birth date drawn."""
    rows, cols = 180, 240
    ds = _sc("Kochkonbaeva^Aigerimai", "KG-650027", rows, cols)
    ds.Modality = "US"
    frame = np.zeros((rows, cols), np.uint8)
    frame[40:170, 20:220] = speckle(130, 200, "sc1")
    text = "KOCHKONBAEVA AIGERIMAI 05.06.2020"
    mask = text_mask((rows, cols), (6, 8), text, 12)
    paint(frame, mask, 255)
    pixels_module(ds, frame[None], "MONOCHROME2")
    return Built(
        [Sent(ds)],
        {"name": ["Kochkonbaeva", "Aigerimai"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def sc_flag_no_cjk_text() -> Built:
    """Secondary capture, BurnedInAnnotation NO, Chinese name drawn in yellow."""
    rows, cols = 170, 230
    ds = _sc("诸葛^明远", "CN-650028", rows, cols, charset="GB18030")
    ds.BurnedInAnnotation = "NO"
    frame = np.zeros((rows, cols, 3), np.uint8)
    frame[50:160, 30:200] = 60
    text = "诸葛明远 2019-05-07"
    mask = text_mask((rows, cols), (6, 8), text, 16, cjk=True)
    paint(frame, mask, (255, 255, 0))
    pixels_module(ds, frame[None], "RGB")
    return Built(
        [Sent(ds)],
        {"name": ["诸葛明远", "诸葛", "明远"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def ot_cyrillic_text() -> Built:
    """OT image with a Cyrillic name drawn (DejaVu), no burned-in flag."""
    rows, cols = 160, 250
    ds = _sc("Медерова^Санобар", "KG-650029", rows, cols)
    frame = np.zeros((rows, cols), np.uint8)
    frame[40:150, 10:240] = 70
    text = "Медерова Санобар 2020"
    mask = text_mask((rows, cols), (8, 10), text, 15)
    paint(frame, mask, 240)
    pixels_module(ds, frame[None], "MONOCHROME2")
    return Built(
        [Sent(ds)],
        {"name": ["Медерова", "Санобар"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def xa_banner_no_flag() -> Built:
    """Angio run, BurnedInAnnotation NO, name burned top-left on every frame."""
    rows, cols = 160, 200
    ds = tiny_xa(header(XA, "XA", name="Bolotbekova^Ainagul", pid="KG-650030"))
    text = "Bolotbekova Ainagul"
    mask = text_mask((rows, cols), (4, 4), text, 13)
    frames = np.full((4, rows, cols), 120, np.uint8)
    for frame in frames:
        paint(frame, mask, 255)
    pixels_module(ds, frames, "MONOCHROME2")
    ds.FrameTime = "66.7"
    return Built(
        [Sent(ds, calling_ae="BISHKEK_CATH")],
        {"name": ["Bolotbekova", "Ainagul"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask] * 4, text))],
    )


@case("pixels")
def xa_rle_burned_in_yes() -> Built:
    """RLE angio marked BurnedInAnnotation YES, from a sender with no blanking rule."""
    rows, cols = 150, 190
    ds = tiny_xa(header(XA, "XA", name="Rakhmonov^Firuzjon", pid="TJ-650031", sex="M"))
    text = "RAKHMONOV FIRUZJON"
    mask = text_mask((rows, cols), (4, 4), text, 12)
    frames = np.full((2, rows, cols), 110, np.uint8)
    for frame in frames:
        paint(frame, mask, 255)
    pixels_module(ds, frames, "MONOCHROME2")
    ds.BurnedInAnnotation = "YES"
    ds.compress(RLELossless, generate_instance_uid=False)
    return Built(
        [Sent(ds, calling_ae="DUSHANBE_ECHO")],
        {"name": ["Rakhmonov", "Firuzjon"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask] * 2, text))],
    )


def _high_bits(name: str, pid: str, rows: int, cols: int, text: str) -> tuple[Dataset, np.ndarray]:
    ds = tiny_xa(header(XA, "XA", name=name, pid=pid))
    mask = text_mask((rows, cols), (4, 4), text, 12)
    image = (rng_for(text).integers(200, 3000, (rows, cols))).astype(np.uint16)
    image[mask] |= 0x8000  # the overlay bit, above Bits Stored
    pixels_module(ds, image[None], "MONOCHROME2")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.WindowCenter, ds.WindowWidth = "1600", "3000"
    return ds, mask


@case("pixels")
def overlay_in_high_bits_with_60xx() -> Built:
    """Name in bit 15 of 16-bit pixels (12 stored), 6000 group pointing at it."""
    rows, cols = 128, 160
    text = "Sharshenova A."
    ds, mask = _high_bits("Sharshenova^Aizada", "KG-650032", rows, cols, text)
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 16)
    ds.add_new(0x60000102, "US", 15)
    ds.add_new(0x60000022, "LO", "Patient name overlay")
    return Built(
        [Sent(ds)],
        {"name": ["Sharshenova", "Aizada"]},
        pixels=[((rows, cols), PixelCheck("highbits", [mask], text))],
    )


@case("pixels")
def overlay_in_high_bits_without_60xx() -> Built:
    """Name in bit 15 of 16-bit pixels (12 stored), no overlay group at all."""
    rows, cols = 136, 170
    text = "Temirova Zhanyl"
    ds, mask = _high_bits("Temirova^Zhanylai", "KG-650033", rows, cols, text)
    return Built(
        [Sent(ds)],
        {"name": ["Temirova", "Zhanylai"]},
        pixels=[((rows, cols), PixelCheck("highbits", [mask], text))],
    )


@case("pixels")
def overlay_plane_with_name() -> Built:
    """A separate overlay plane (60xx,3000) spelling the name."""
    rows, cols = 120, 176
    ds = tiny_xa(header(XA, "XA", name="Usubalieva^Dariga", pid="KG-650034"))
    pixels_module(ds, np.full((1, rows, cols), 100, np.uint8), "MONOCHROME2")
    text = "Usubalieva S. 650034"
    mask = text_mask((rows, cols), (4, 4), text, 13)
    packed = np.packbits(mask.astype(np.uint8).ravel(), bitorder="little").tobytes()
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60003000, "OW", packed + (b"\0" if len(packed) % 2 else b""))
    return Built(
        [Sent(ds)],
        {"name": ["Usubalieva"]},
        pixels=[((rows, cols), PixelCheck("overlay", [mask], text))],
    )


@case("pixels")
def icon_image_with_name() -> Built:
    """Clean echo frame, but its Icon Image Sequence thumbnail shows the name."""
    rows, cols = 140, 180
    ds = header(US, "US", name="Abdysheva^Mirana", pid="KG-650035")
    pixels_module(ds, speckle(rows, cols, "icon", top=20)[None], "MONOCHROME2")
    ds.SequenceOfUltrasoundRegions = [us_region(0, 20, cols - 1, rows - 1)]
    icon = Dataset()
    icon_rows, icon_cols = 64, 96
    text = "ABDYSHEVA M"
    mask = text_mask((icon_rows, icon_cols), (2, 2), text, 11)
    thumb = np.zeros((icon_rows, icon_cols), np.uint8)
    paint(thumb, mask, 255)
    icon.SamplesPerPixel = 1
    icon.PhotometricInterpretation = "MONOCHROME2"
    icon.Rows, icon.Columns = icon_rows, icon_cols
    icon.BitsAllocated, icon.BitsStored, icon.HighBit, icon.PixelRepresentation = 8, 8, 7, 0
    icon.PixelData = thumb.tobytes()
    ds.IconImageSequence = [icon]
    return Built(
        [Sent(ds)],
        {"name": ["Abdysheva", "Mirana"]},
        pixels=[((rows, cols), PixelCheck("icon", [mask], text))],
    )


@case("pixels")
def sc_small_text_bottom_right() -> Built:
    """Secondary capture with a 12 px ID and name in the bottom-right corner."""
    rows, cols = 190, 250
    ds = _sc("Usenbaeva^Kunduz", "KG-123987", rows, cols)
    frame = np.zeros((rows, cols), np.uint8)
    frame[10:150, 10:240] = speckle(140, 230, "sc5")
    text = "ID KG-123987 Usenbaeva"
    mask = text_mask((rows, cols), (96, rows - 18), text, 12)
    paint(frame, mask, 230)
    pixels_module(ds, frame[None], "MONOCHROME2")
    return Built(
        [Sent(ds)],
        {"name": ["Usenbaeva", "Kunduz"], "id": ["KG-123987"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


@case("pixels")
def sc_jpeg_grey_name() -> Built:
    """Grey JPEG baseline secondary capture, no flag, name across the top."""
    rows, cols = 176, 232
    ds = _sc("Ryskulova^Meerimai", "KG-650037", rows, cols)
    frame = np.zeros((rows, cols), np.uint8)
    frame[40:170, 16:216] = speckle(130, 200, "sc6")
    text = "Ryskulova Meerimai"
    mask = text_mask((rows, cols), (8, 8), text, 16)
    paint(frame, mask, 255)
    make_jpeg(ds, [frame], grey=True)
    return Built(
        [Sent(ds)],
        {"name": ["Ryskulova", "Meerimai"]},
        pixels=[((rows, cols), PixelCheck("frames", [mask], text))],
    )


# =============================================================================
# documents: encapsulated PDF and CDA
# =============================================================================


@case("documents", core=True)
def encapsulated_pdf_plain() -> Built:
    """PDF with the name in its text and Info, and in DocumentTitle."""
    ds = header(ENCAPSULATED_PDF, "DOC", name="Kudaibergenova^Aruuke", pid="KG-200931")
    document = pdf_document(
        [
            "Discharge summary",
            "Patient: Kudaibergenova Aruuke, MRN KG-200931",
            "PDA closed with 6/4 occluder. Dr. Tashiev Marat",
        ],
        {"Title": "Discharge Kudaibergenova", "Author": "Dr. Tashiev Marat"},
        compress=False,
    )
    encapsulated(ds, document, "application/pdf", "Discharge Kudaibergenova Aruuke")
    return Built(
        [Sent(ds)],
        {"name": ["Kudaibergenova", "Aruuke"], "id": ["KG-200931"], "staff": ["Tashiev"]},
    )


@case("documents")
def encapsulated_pdf_flate_utf16() -> Built:
    """PDF with a Flate-compressed page and a UTF-16 Cyrillic title; flag NO."""
    ds = header(ENCAPSULATED_PDF, "DOC", name="Abylkasymova^Cholponai", pid="KG-200932")
    document = pdf_document(
        ["Echo report for Abylkasymova Cholponai", "ASD II 9 mm, rims adequate"],
        {"Title": "Абылкасымова Чолпонай", "Author": "Echo lab"},
        compress=True,
    )
    encapsulated(ds, document, "application/pdf", "Echo report")
    ds.BurnedInAnnotation = "NO"
    return Built(
        [Sent(ds)],
        {"name": ["Abylkasymova", "Cholponai", "Абылкасымова"]},
    )


@case("documents")
def encapsulated_cda() -> Built:
    """HL7 CDA with recordTarget name, ID, birth time and author; title and HL7 ID."""
    ds = header(ENCAPSULATED_CDA, "DOC", name="Saparaliev^Bakytbek", pid="KG-44120", sex="M")
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
  <title>Cardiology consult</title>
  <recordTarget><patientRole>
    <id root="2.16.840.1.113883.2.9" extension="KG-CDA-44120"/>
    <addr>Chui 150, Kant</addr>
    <patient><name><given>Bakytbek</given><family>Saparaliev</family></name>
      <birthTime value="20200419"/></patient>
  </patientRole></recordTarget>
  <author><assignedAuthor><assignedPerson><name>Dr. Abdrasulova Gulshat</name>
  </assignedPerson></assignedAuthor></author>
  <component><nonXMLBody><text>VSD 4 mm; {ds.StudyInstanceUID}</text></nonXMLBody></component>
</ClinicalDocument>
""".encode()
    encapsulated(ds, xml, "text/XML", "CDA Saparaliev")
    ds.HL7InstanceIdentifier = "KG-CDA-44120^^^&2.16.840.1.113883.2.9&ISO"
    return Built(
        [Sent(ds)],
        {
            "name": ["Saparaliev", "Bakytbek"],
            "id": ["KG-CDA-44120"],
            "staff": ["Abdrasulova"],
            "address": ["Chui 150"],
        },
    )


# =============================================================================
# issuer: one child, two issuer values or two doors: one pseudonym
# =============================================================================


def _child_image(name: str, pid: str, rows: int, cols: int, issuer: str | None) -> Dataset:
    ds = tiny_us(header(US, "US", name=name, pid=pid), rows=rows, cols=cols)
    if issuer is not None:
        ds.IssuerOfPatientID = issuer
    return ds


@case("issuer", core=True, same_patient=True)
def issuer_two_values_one_hospital() -> Built:
    """One child, one hospital, two IssuerOfPatientID texts: one pseudonym, texts unseen."""
    first = _child_image("Ryskeldieva^Aikokul", "NCC-900212", 44, 52, "MRN-NCC-Kard")
    second = _child_image("Ryskeldieva^Aikokul", "NCC-900212", 46, 54, "НЦКиВХ MRN")
    return Built(
        [Sent(first), Sent(second)],
        {
            "name": ["Ryskeldieva", "Aikokul"],
            "id": ["NCC-900212"],
            "issuer-text": ["MRN-NCC-Kard", "НЦКиВХ"],
        },
    )


@case("issuer", doors=("stow",), same_patient=True)
def issuer_cstore_and_stow() -> Built:
    """One child of one hospital sent by C-STORE and by STOW-RS: one pseudonym."""
    first = _child_image("Beishenova^Saikal", "NCC-900377", 48, 56, None)
    second = _child_image("Beishenova^Saikal", "NCC-900377", 50, 58, None)
    return Built(
        [Sent(first, door="cstore"), Sent(second, door="stow")],
        {"name": ["Beishenova", "Saikal"], "id": ["NCC-900377"]},
    )


@case("issuer")
def issuer_text_with_person() -> Built:
    """IssuerOfPatientID naming a polyclinic and its doctor: never shown as the hospital."""
    ds = _child_image("Tilekova^Asylgul", "NCC-900410", 52, 60, "Polyclinic No.7 (Dr. Sarybaev)")
    return Built(
        [Sent(ds)],
        {
            "name": ["Tilekova", "Asylgul"],
            "id": ["NCC-900410"],
            "issuer-text": ["Polyclinic No.7", "Sarybaev"],
        },
    )


@case("issuer", same_patient=True)
def issuer_two_devices_one_hospital() -> Built:
    """Echo and cath lab of one hospital, each with its own IssuerOfPatientID text."""
    echo = _child_image("Zhoroeva^Bermet", "NCC-900533", 54, 62, "ECHO-LAB-NCC")
    cath = _child_image("Zhoroeva^Bermet", "NCC-900533", 56, 64, "CATH-LAB-NCC")
    return Built(
        [Sent(echo, calling_ae="BISHKEK_ECHO"), Sent(cath, calling_ae="BISHKEK_CATH")],
        {
            "name": ["Zhoroeva", "Bermet"],
            "id": ["NCC-900533"],
            "issuer-text": ["ECHO-LAB-NCC", "CATH-LAB-NCC"],
        },
    )
