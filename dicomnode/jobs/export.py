"""Research export: a cohort as a self-describing ZIP that holds no identity.

A second de-identification pass with a key made for this export alone (and
forgotten after it) gives fresh pseudonyms and UIDs, so two exports of the
same children cannot be joined, nor either joined to the archive. Dates stay
as shifted at ingest. Every instance goes through the same descriptor
cleaner as at ingest (with the original identities when the linkage key is
at hand) and, where its pixels may carry text, the same OCR check; the
identity scanner then looks at it for the original identities, the
archive's pseudonyms and UIDs. An instance that fails either is left out and
listed with its reason (``strict``: the whole export is refused instead).
The package is a PS3.10 file set with DICOMDIR, a manifest (CSV and JSON)
and a README; the node's own files in it are scanned too, and a finding
there blocks the export.
"""

from __future__ import annotations

import contextlib
import functools
import getpass
import json
import os
import shutil
import stat
import threading
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.uid import UID
from tqdm import tqdm

from dicomnode import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicomnode.config import Config
from dicomnode.consult.document import REPORT_ROOT
from dicomnode.deid.header import DeidSettings, HeaderDeidentifier
from dicomnode.deid.pipeline import document_reason
from dicomnode.deid.plausible import HEIGHT_M, WEIGHT_KG
from dicomnode.deid.profile import Option
from dicomnode.deid.scanner import scan, scan_text
from dicomnode.deid.secret import Secret, load_or_create_key
from dicomnode.deid.verify import OcrSettings, check
from dicomnode.jobs import manifest_values as checked
from dicomnode.ops.admin import linkage_cipher
from storage.archive import Archive
from storage.keys import Level
from storage.private import open_private, private_dir
from storage.query import Query
from storage.textsafe import csv_text
from storage.values import normalise_issuer

# The given-name component of the node's report observer (viewer.planning.report).
NODE_OBSERVER = "CHD node"
EXPORT_KEY = "export.key"  # in key_dir, only for admin-approved linkable exports
# An export holds one instance decoded at a time, several copies of it on its
# way through de-identification and the OCR check: an instance larger than
# this is left out (it is streamed nowhere yet), and exports run one after
# another in a process, so what one researcher asks cannot take the node's
# memory whatever a sender stored (a deflated instance inflates 1000-fold).
MAX_EXPORT_INSTANCE = 512 << 20
TOO_LARGE = "over 512 MiB of pixels: not exported (memory)"
# Listed when the export began, gone from the index when its turn came.
GONE = "no longer in the archive"
_ONE_AT_A_TIME = threading.Lock()
P = ParamSpec("P")
R = TypeVar("R")
RESEARCH_OPTIONS = frozenset(
    {Option.RETAIN_FULL_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS, Option.CLEAN_DESCRIPTORS}
)


class ExportBlocked(RuntimeError):
    """The scanner found identity in the package; the message says where."""


class ExportCancelled(RuntimeError):
    """Someone cancelled the export."""


class EmptyCohort(ValueError):
    """Nothing matched: an empty package would look like a result."""


@dataclass
class Cohort:
    modality: str = ""
    hospital: str = ""
    sex: str = ""
    date_from: str = ""
    date_to: str = ""
    defect: str = ""  # as on the latest closure worksheet, e.g. "PDA"
    device: str = ""  # a proposed size on that worksheet, e.g. "8/6"
    age_from: float | None = None  # years at the study
    age_to: float | None = None
    # The hospitals (issuers) whose children may be in it, None for all: a
    # web account's scope (`viewer.scope`), kept with the job as asked.
    issuers: list[str] | None = None

    def keys(self) -> dict[str, str]:
        keys = dict.fromkeys(
            (
                "StudyInstanceUID",
                "PatientID",
                "PatientSex",
                "PatientAge",
                "PatientWeight",
                "PatientSize",
                "ModalitiesInStudy",
                "IssuerOfPatientID",
                "StudyDate",
            ),
            "",
        )
        keys.update(
            {
                k: v
                for k, v in {
                    "ModalitiesInStudy": self.modality.upper(),
                    "IssuerOfPatientID": normalise_issuer(self.hospital),
                    "PatientSex": self.sex.upper(),
                    "StudyDate": f"{self.date_from}-{self.date_to}"
                    if self.date_from or self.date_to
                    else "",
                }.items()
                if v
            }
        )
        return keys


@dataclass
class ExportResult:
    studies: int = 0
    instances: int = 0
    bytes: int = 0
    manifest: list[dict[str, Any]] = field(default_factory=list)
    # (archive SOP Instance UID, reason) of each instance left out: for the
    # requester, never inside the package (the archive's UIDs link back).
    left_out: list[tuple[str, str]] = field(default_factory=list)


def select(archive: Archive, cohort: Cohort) -> list[dict[str, Any]]:
    """Studies matching the DICOM keys, then the plan and age filters."""
    chosen = []
    within = None if cohort.issuers is None else frozenset(cohort.issuers)
    for study in archive.index.find(Query(level=Level.STUDY, keys=cohort.keys(), issuers=within)):
        plans = _latest_plans(archive, study["StudyInstanceUID"])
        if cohort.defect and cohort.defect.lower() not in {
            p.get("defect", "").lower() for p in plans
        }:
            continue
        if cohort.device and not any(cohort.device in _proposed(p) for p in plans):
            continue
        if cohort.age_from is not None or cohort.age_to is not None:
            age = age_years(study.get("PatientAge") or "")
            low = cohort.age_from if cohort.age_from is not None else 0.0
            high = cohort.age_to if cohort.age_to is not None else float("inf")
            if age is None or not low <= age <= high:
                continue
        chosen.append(study)
    return chosen


def age_years(age_string: str) -> float | None:
    """A DICOM AS value ("004Y", "018M", "030W", "010D") in years."""
    per_year = {"Y": 1.0, "M": 12.0, "W": 52.1775, "D": 365.25}
    if len(age_string) != 4 or age_string[3] not in per_year or not age_string[:3].isdigit():
        return None
    return int(age_string[:3]) / per_year[age_string[3]]


@dataclass
class Preview:
    patients: int
    studies: int
    series: int
    instances: int
    bytes: int


def preview(archive: Archive, cohort: Cohort) -> Preview:
    """What an export of ``cohort`` would hold, before it is run."""
    studies = select(archive, cohort)
    rows = _instances(archive, studies)
    series = len({r["SeriesInstanceUID"] for r in rows})
    size = archive.index.total_size([r["SOPInstanceUID"] for r in rows])
    patients = len({s["PatientID"] for s in studies})
    return Preview(patients, len(studies), series, len(rows), size)


def _instances(archive: Archive, studies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Series and SOP Instance UIDs of every instance of ``studies``, but the
    consultation reports: the centre's answer to a hospital (its message,
    who decided) is case work, not research data."""
    keys = {
        "SeriesInstanceUID": "",
        "SOPInstanceUID": "",
        "Rows": "",
        "Columns": "",
        "NumberOfFrames": "",
    }
    return [
        row
        for study in studies
        for row in archive.index.find(
            Query(level=Level.IMAGE, keys={**keys, "StudyInstanceUID": study["StudyInstanceUID"]})
        )
        if not str(row["SOPInstanceUID"]).startswith(REPORT_ROOT)
    ]


def decoded_size(row: dict[str, Any]) -> int:
    """What an instance's pixels may take in memory, from the index (three
    bytes a pixel: 8-bit colour, or grey of any depth with room to spare).
    The stored size says nothing: deflate shrinks 300 MB to 300 kB."""
    rows, columns = int(row.get("Rows") or 0), int(row.get("Columns") or 0)
    return rows * columns * max(1, int(row.get("NumberOfFrames") or 1)) * 3


def _blob(archive: Archive, sop_instance_uid: str) -> BytesIO | None:
    """The stored instance, or None when its index row went since it was listed."""
    key = archive.index.instance_blob(sop_instance_uid)
    return None if key is None else BytesIO(archive.blobs.read(key))


def _latest_plans(archive: Archive, study_uid: str) -> list[dict[str, Any]]:
    """The latest version of each plan of the study (a child may have an
    ASD plan and a PDA plan): filters match any of them."""
    return archive.index.plans.latest(study_uid)


def _proposed(plan: dict[str, Any]) -> list[str]:
    proposal = (plan.get("content") or {}).get("proposal") or {}
    return list(proposal.get("sizes", []))


Needles = tuple[set[str], set[str]]


@dataclass
class Identities:
    """What must not be in the package: the archive's own handles (anywhere)
    and, with the linkage key, who the children are (names and IDs as whole
    words, so "MARY" is not found in "PRIMARY"); per study, the originals as
    (kind, value) for the descriptor cleaner."""

    needles: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)
    by_study: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def scan_terms(self) -> Needles:
        return (
            {n for n in self.needles if len(n) >= 4},
            {w for w in self.words if len(w.strip()) >= 3},
        )


def _identities(
    config: Config, archive: Archive, studies: list[dict], uids: list[str]
) -> Identities:
    found = Identities()
    found.needles = {s["PatientID"] for s in studies if s.get("PatientID")}
    found.needles |= {s["StudyInstanceUID"] for s in studies} | set(uids)
    try:
        cipher = linkage_cipher(config)
    except RuntimeError:
        return found
    for study in studies:
        values: list[tuple[str, str]] = []
        for study_uid, pseudonym, sealed in archive.index.linkage_for(study["StudyInstanceUID"]):
            original = cipher.open(sealed, pseudonym, study_uid)
            found.needles |= {original.patient_name, original.study_instance_uid}
            found.words |= {original.patient_id, original.accession_number}
            found.words |= set(original.patient_name.replace("=", "^").split("^"))
            values += original.values()
        found.by_study[study["StudyInstanceUID"]] = values
    return found


def _one_at_a_time(run: Callable[P, R]) -> Callable[P, R]:
    """Exports run one after another in a process (see MAX_EXPORT_INSTANCE)."""

    @functools.wraps(run)
    def serialised(*args: P.args, **kwargs: P.kwargs) -> R:
        with _ONE_AT_A_TIME:
            return run(*args, **kwargs)

    return serialised


@_one_at_a_time
def export(
    config: Config,
    archive: Archive,
    cohort: Cohort,
    out: Path,
    *,
    progress: bool = True,
    actor: str = "",
    source: str = "cli",
    on_instance: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
    linkable: bool = False,
    strict: bool = False,
) -> ExportResult:
    """Write the package to ``out``; ``on_instance(done, total)`` reports
    progress, and setting ``cancel`` stops it with nothing written.
    ``linkable`` (an admin's choice) uses the node's standing export key, so
    pseudonyms and UIDs agree across linkable exports (never the archive's).
    An instance that fails the checks is left out (``result.left_out``), or
    with ``strict`` the export is refused with nothing written."""
    studies = select(archive, cohort)
    if not studies:
        raise EmptyCohort("no study matches the cohort filters; nothing written")
    rows = _instances(archive, studies)
    instances = [row["SOPInstanceUID"] for row in rows]
    too_large = {r["SOPInstanceUID"] for r in rows if decoded_size(r) > MAX_EXPORT_INSTANCE}
    result = ExportResult(studies=len(studies))
    # This export's own key: never written anywhere, so nothing links back.
    deid = HeaderDeidentifier(
        Secret(
            load_or_create_key(config.key_dir / EXPORT_KEY, config.data_dir)
            if linkable
            else os.urandom(32)
        ),
        DeidSettings(options=RESEARCH_OPTIONS, method_text="CHD node research export"),
    )
    with _staging(out) as tmp:
        fileset = FileSet()
        staged = Path(tmp) / "staged"
        staged.mkdir()
        new_pseudonyms: dict[str, str] = {}
        study_numbers: dict[str, str] = {}
        identities = _identities(config, archive, studies, instances)
        terms = identities.scan_terms()
        ocr = OcrSettings.of(config)
        for uid in tqdm(instances, unit="inst", disable=not progress, desc="export"):
            if cancel is not None and cancel.is_set():
                raise ExportCancelled("export cancelled; nothing written")
            blob = None if uid in too_large else _blob(archive, uid)
            if blob is None:
                why = TOO_LARGE if uid in too_large else GONE
                if strict:
                    raise ExportBlocked(f"instance {uid}: {why}")
                result.left_out.append((uid, why))
                continue
            ds = dcmread(blob)
            study_uid, pseudonym = str(ds.StudyInstanceUID), str(ds.PatientID)
            subject = deid.subject(
                ds,
                "export",
                pseudonym,
                identities.by_study.get(study_uid, ()),
                {pseudonym},
                _own(ds),
            )
            deid.apply(ds, subject)
            ds.file_meta = _package_file_meta(ds)
            reason = _refusal(ds, subject, ocr, terms) or _enter(
                fileset, ds, staged / f"{result.instances}.dcm", study_numbers
            )
            if reason is not None:
                if strict:
                    raise ExportBlocked(f"instance {uid}: {reason}")
                result.left_out.append((uid, reason))
                continue
            new_pseudonyms[pseudonym] = str(ds.PatientID)
            result.instances += 1
            if on_instance is not None:
                on_instance(result.instances + len(result.left_out), len(instances))
        if not result.instances:
            raise ExportBlocked(f"every instance was left out ({result.left_out[0][1]})")
        package = Path(tmp) / "package"
        fileset.write(package)
        for study in studies:
            result.manifest.append(_manifest_row(archive, study, new_pseudonyms))
        _write_text(package, result, cohort, linkable)
        _scan_all(package, *terms)
        result.bytes = _zip(package, out)
    archive.index.audit.record(
        "export",
        user=actor or getpass.getuser(),
        source=source,
        obj=json.dumps({k: v for k, v in cohort.__dict__.items() if v not in ("", None)}),
        detail=f"{result.studies} studies, {result.instances} instances, "
        f"{len(result.left_out)} left out; profile: "
        f"{', '.join(sorted(o.name for o in RESEARCH_OPTIONS))}, "
        f"{'linkable key' if linkable else 'fresh key'}; {out.name}",
    )
    return result


def _own(ds: Dataset) -> set[str]:
    """The node's own observer names in its plan reports ("Cardiologist^CHD
    node"): the node, not a person, so their words are no one's name."""
    return {
        str(e.value)
        for e in ds.iterall()
        if e.VR == "PN" and str(e.value or "").split("^")[1:2] == [NODE_OBSERVER]
    }


def left_out_summary(left_out: list[tuple[str, str]]) -> str:
    """One line for the requester: how many were left out, by reason."""
    parts = [f"{n} x {reason}" for reason, n in _reasons(left_out)]
    return f"{len(left_out)} instances left out: " + "; ".join(parts)


def _package_file_meta(ds: Dataset) -> FileMetaDataset:
    """A File Meta Information group of the package's own: the stored one
    names the sending station (Source AE = the calling AE) and may carry
    sending, receiving or private values, so only what PS3.10 requires to
    read the file is kept (an allow-list, so no future meta element leaks)."""
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID  # the new one
    meta.TransferSyntaxUID = ds.file_meta.TransferSyntaxUID
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    return meta


def _enter(fileset: FileSet, ds: Dataset, path: Path, study_numbers: dict[str, str]) -> str | None:
    """Stage ``ds`` at ``path`` and list it in the DICOMDIR, or say why it
    cannot be listed: one instance the DICOMDIR cannot take (an SR without
    its completion flag) must not cost the cohort every other one."""
    _fill_directory_keys(ds, study_numbers)
    ds.save_as(path, enforce_file_format=True)
    try:
        fileset.add(path)
    except ValueError as exc:  # names attributes only, never values
        path.unlink()
        return f"cannot enter the DICOMDIR: {exc}"
    return None


def _reasons(left_out: list[tuple[str, str]]) -> list[tuple[str, int]]:
    """Reasons for leaving instances out, each with how many, in order."""
    return sorted(Counter(reason for _, reason in left_out).items())


def _refusal(ds: Any, subject: Any, ocr: OcrSettings, terms: Needles) -> str | None:
    """Why an instance may not enter the package (None: it may)."""
    document = document_reason(ds)
    if document:
        return document
    syntax = ds.file_meta.TransferSyntaxUID
    reason = check(ds, syntax, blanked=None, matcher=subject.matcher, settings=ocr)
    if reason:
        return reason
    if scan(ds, *terms):
        return "identity found in its attributes after cleaning"
    return None


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A private folder beside the package, emptied first: a run that a crash
    cut short leaves its files there, and the next run of the job (same
    package name) clears them, instead of leaving them in the system temp."""
    folder = out.parent / f".{out.name}.staging"
    shutil.rmtree(folder, ignore_errors=True)
    private_dir(folder)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _fill_directory_keys(ds: Any, study_numbers: dict[str, str]) -> None:
    """DICOMDIR records need Study ID, Date and Time, Series and Instance
    Number, and for SR, waveform and other non-image records Content Date and
    Time (type 1). Ingest emptied Study ID, so studies are numbered within
    the package; a missing study date or time is taken from the series,
    acquisition or content one, a missing content date or time from the
    series, acquisition or study one (the README says so)."""
    if not ds.get("StudyID"):
        ds.StudyID = study_numbers.setdefault(str(ds.StudyInstanceUID), str(len(study_numbers) + 1))
    for kind in ("Date", "Time"):
        if not ds.get(f"Study{kind}"):
            found = [ds.get(f"{k}{kind}") for k in ("Series", "Acquisition", "Content")]
            fallback = "000000" if kind == "Time" else "19000101"
            setattr(ds, f"Study{kind}", next((v for v in found if v), fallback))
    if "PixelData" not in ds:  # image records need no content date
        for kind in ("Date", "Time"):
            if not ds.get(f"Content{kind}"):
                found = [ds.get(f"{k}{kind}") for k in ("Series", "Acquisition", "Study")]
                setattr(ds, f"Content{kind}", next(v for v in found if v))
    if ds.get("SeriesNumber") in (None, ""):
        ds.SeriesNumber = 1
    if ds.get("InstanceNumber") in (None, ""):
        ds.InstanceNumber = 1


def _manifest_row(archive: Archive, study: dict, pseudonyms: dict[str, str]) -> dict[str, Any]:
    """One study's line. The sender's values are checked against their VR
    (`manifest_values`: an invalid or placeholder value is empty), so a
    manifest never repeats what a device or an attacker wrote there."""
    plans = _latest_plans(archive, study["StudyInstanceUID"])
    slots = [s for p in plans for s in (p.get("content") or {}).get("slots", [])]
    return {
        "patient": pseudonyms.get(study["PatientID"], ""),
        "age": checked.age(study.get("PatientAge")),
        "sex": checked.sex(study.get("PatientSex")),
        "weight_kg": checked.number(study.get("PatientWeight"), WEIGHT_KG),
        "height_m": checked.number(study.get("PatientSize"), HEIGHT_M),
        "modalities": checked.codes(study.get("ModalitiesInStudy")),
        "hospital": study.get("IssuerOfPatientID") or "",
        "defect": ";".join(p.get("defect", "") for p in plans),
        "key_measurements_mm": json.dumps({s["code"]: s["value_mm"] for s in slots}),
        "proposed_devices": ",".join(size for p in plans for size in _proposed(p)),
    }


def _write_text(package: Path, result: ExportResult, cohort: Cohort, linkable: bool) -> None:
    keying = (
        "then again with the node's standing export key: pseudonyms and UIDs\n"
        "here match other linkable exports from this node, never the archive.\n"
        if linkable
        else "then again for this export with a key made for it alone and\n"
        "discarded: pseudonyms and UIDs here match no other export and not the\n"
        "archive.\n"
    )
    fields = list(result.manifest[0]) if result.manifest else ["patient"]
    # Every cell through csv_cell: a hospital or defect name is typed text.
    (package / "manifest.csv").write_text(csv_text(result.manifest, fields), encoding="utf-8")
    (package / "manifest.json").write_text(
        json.dumps(result.manifest, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    left_out = "".join(f"  {n} x {reason}\n" for reason, n in _reasons(result.left_out))
    (package / "README.txt").write_text(
        "CHD imaging exchange node: research export\n\n"
        f"{result.studies} studies, {result.instances} instances.\n"
        + (
            f"{len(result.left_out)} instances were left out, by reason:\n{left_out}"
            "(the requester's report names them; this package does not).\n"
            if left_out
            else ""
        )
        + f"Cohort filters: {json.dumps(cohort.__dict__)}\n\n"
        "De-identified at ingest with the DICOM PS3.15 Basic Application Level\n"
        "Confidentiality Profile (Retain Longitudinal Temporal Information with\n"
        "Modified Dates, Retain Patient Characteristics, Clean Descriptors, Clean\n"
        "Pixel Data where text may be burned in, verified by OCR),\n"
        f"{keying}"
        "Dates are as shifted at ingest (intervals per patient are true).\n"
        "No linkage key is included.\n"
        "Study ID is the study's number in this package; a study date or time\n"
        "missing from an instance is taken from its series, acquisition or content\n"
        "date/time, and a missing content date or time of a report or waveform from\n"
        "its series, acquisition or study date/time, as the DICOMDIR requires one.\n",
        encoding="utf-8",
    )


def _scan_all(package: Path, needles: set[str], words: set[str]) -> None:
    for path in sorted(package.rglob("*")):
        if not path.is_file():
            continue
        if path.suffix in (".csv", ".json", ".txt"):
            findings = scan_text(path.read_text(encoding="utf-8"), needles, words)
        else:
            findings = scan(dcmread(path, force=True), needles, words)
        if findings:
            raise ExportBlocked(f"{path.relative_to(package)} {findings[0].path}: identity found")


def _zip(package: Path, out: Path) -> int:
    """Stream the package into a ZIP, one file at a time. The ZIP is 0600
    from its first byte, and its members say 0600 too, so unzip does not
    leave the children's images readable by every account either."""
    partial = out.with_suffix(out.suffix + ".part")
    with (
        os.fdopen(open_private(partial), "wb") as handle,
        zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive_zip,
    ):
        for path in sorted(package.rglob("*")):
            if path.is_file():
                member = zipfile.ZipInfo.from_file(path, path.relative_to(package).as_posix())
                member.external_attr = (stat.S_IFREG | 0o600) << 16
                with path.open("rb") as source, archive_zip.open(member, "w") as target:
                    shutil.copyfileobj(source, target, 1 << 20)
    os.replace(partial, out)
    return out.stat().st_size


__all__ = [
    "Cohort",
    "EmptyCohort",
    "ExportBlocked",
    "ExportCancelled",
    "Preview",
    "export",
    "left_out_summary",
    "preview",
    "select",
]
