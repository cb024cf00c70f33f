"""The node against DCMTK's echoscu, dcmsend and findscu, over real sockets."""

from __future__ import annotations

import logging
import subprocess
import threading
import time
import zipfile
from collections import defaultdict
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian
from pynetdicom import AE

from dicomnode.config import Config
from dicomnode.deid.pixels import (
    clear_stray_bits,
    has_stray_bits,
    needs_cleaning,
    trim_excess,
)
from dicomnode.deid.values import shift_date
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, inspect
from dicomnode.ingest.validate import Rejection
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, SyntheticPatient, sample_dirs, save, xa_instance
from storage.keys import Level
from storage.query import Query
from tests.conftest import dcmtk, make_config

pytestmark = pytest.mark.peers


def send(node: Node, *paths: Path, calling: str = "BISHKEK_ECHO") -> subprocess.CompletedProcess:
    result = dcmtk(
        "dcmsend",
        "-aet",
        calling,
        "-aec",
        node.config.ae_title,
        "--no-halt",
        "127.0.0.1",
        str(node.dicom.port),
        *paths,
    )
    return result


def test_echo(node: Node) -> None:
    result = dcmtk("echoscu", "-aec", "CHDNODE", "127.0.0.1", str(node.dicom.port))
    assert result.returncode == 0, result.stderr
    wrong = dcmtk("echoscu", "-aec", "NOT_US", "127.0.0.1", str(node.dicom.port))
    assert wrong.returncode != 0  # called AE title is checked


def wheel_instances(tmp_path: Path) -> list[Path]:
    """Every file of the sample wheels that is a valid storage instance."""
    files = [p for folder in sample_dirs() for p in sorted(folder.rglob("*.dcm"))]
    for folder in sample_dirs():
        for archive in sorted(folder.rglob("*.zip")):
            with zipfile.ZipFile(archive) as z:
                files += [
                    Path(z.extract(m, tmp_path / archive.stem))
                    for m in z.namelist()
                    if m.endswith(".dcm")
                ]
    valid = []
    for path in files:
        try:
            meta = read_file_meta_info(path)
            data, syntax = split_file(path.read_bytes())
            inspect(
                Incoming(
                    data,
                    syntax,
                    expected_sop_class=meta.MediaStorageSOPClassUID,
                    expected_sop_instance=meta.MediaStorageSOPInstanceUID,
                )
            )
        except (Rejection, InvalidDicomError, AttributeError, ValueError, OSError):
            continue  # not a valid Part 10 storage instance
        valid.append(path)
    return valid


def sop_uid(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True, force=True).SOPInstanceUID)


def dcmtk_can_read(path: Path) -> bool:
    element = dcmread(path, stop_before_pixels=True, force=True).get_item(0x00080016)
    return getattr(element, "VR", None) != "UN"


def pynetdicom_send(node: Node, paths: list[Path]) -> list[int]:
    if not paths:
        return []
    ae = AE(ae_title="BISHKEK_ECHO")
    for path in paths:
        meta = read_file_meta_info(path)
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title="CHDNODE")
    assert assoc.is_established
    try:
        return [assoc.send_c_store(path).Status for path in paths]
    finally:
        assoc.release()


def pixel_array(path: Path):
    return dcmread(path, force=True).pixel_array


def pixel_bytes(path: Path) -> bytes | None:
    """Pixel Data as stored, less the bits outside BitsStored and the bytes
    after the last declared frame: the node clears and cuts those (overlays
    and hidden frames live there), everything else must be bit-identical."""
    ds = dcmread(path, force=True)
    if ds.get("PixelData") is None:
        return None
    syntax = ds.file_meta.TransferSyntaxUID
    trim_excess(ds, syntax)
    if has_stray_bits(ds, ds.PixelData, syntax):
        clear_stray_bits(ds, syntax)
    return ds.PixelData


def stored_copy(node: Node, original_uid: str, tmp_path: Path) -> Path | None:
    """The node's copy of an instance sent with ``original_uid``: stored, or
    held in quarantine; None if it has neither."""
    uid = node.ingestor.deidentify.secret.uid(original_uid)
    blob = node.archive.read(uid)
    if blob is None:
        blob = node.archive.read_held(uid)  # decrypted
        if blob is None:
            return None
    path = tmp_path / "stored.dcm"
    path.write_bytes(blob)
    return path


@pytest.mark.slow
def test_every_wheel_sample_comes_back_with_identical_pixels(tmp_path: Path) -> None:
    """Every valid instance is kept; pixels are bit-identical unless the
    ultrasound banner rule had to clean them."""
    files = wheel_instances(tmp_path)
    assert len(files) >= 80, "the sample wheels should give at least 80 valid instances"
    # Some samples are the same instance in other encodings: one node per round
    # so that each file is compared with its own stored copy.
    rounds: dict[int, list[Path]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)
    for path in files:
        uid = sop_uid(path)
        rounds[seen[uid]].append(path)
        seen[uid] += 1
    checked = 0
    for number, batch in rounds.items():
        # The node's default: OCR after the answer. DCMTK gives up on an
        # answer after 60 s (its socket's receive timeout, at dcmsend's
        # defaults), which reading a 16 MB radiograph before answering could
        # take on a loaded machine.
        config = make_config(tmp_path / f"round{number}", ocr_deferred=True)
        with Node(config, web=False) as node:
            # DCMTK cannot read a header whose elements are all UN (it then
            # sends a garbled SOP class, and pynetdicom aborts): pynetdicom,
            # a second real SCU, sends those few.
            by_dcmtk = [p for p in batch if dcmtk_can_read(p)]
            output = send(node, *by_dcmtk).stderr
            verified(node)
            unsent = [p.name for p in by_dcmtk if stored_copy(node, sop_uid(p), tmp_path) is None]
            assert unsent == [], output[-3000:]
            others = [p for p in batch if p not in by_dcmtk]
            assert len(others) <= 3
            assert pynetdicom_send(node, others) == [0] * len(others)
            verified(node)
            for path in batch:
                stored = stored_copy(node, sop_uid(path), tmp_path)
                assert stored is not None, f"{path.name} not stored: {output[-2000:]}"
                checked += 1
                if needs_cleaning(dcmread(path, stop_before_pixels=True, force=True)):
                    continue  # banner blacked out (test_ingest), or quarantined
                sent = read_file_meta_info(path).TransferSyntaxUID
                got = read_file_meta_info(stored).TransferSyntaxUID
                if sent == got or ExplicitVRBigEndian not in (sent, got):
                    assert pixel_bytes(stored) == pixel_bytes(path), path.name
                # The node prefers explicit little endian among uncompressed
                # syntaxes, so DCMTK may convert between those (never compressed).
                assert sent == got or not (sent.is_compressed or got.is_compressed), path.name
                if sent == ExplicitVRBigEndian:
                    assert (pixel_array(stored) == pixel_array(path)).all(), path.name
    assert checked == len(files)


def verified(node: Node) -> None:
    """Wait (for a condition, with a generous ceiling) until the node's
    verifier has read every instance held for OCR."""
    deadline = time.monotonic() + 1200
    while node.archive.index.ocr_queue.waiting() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert node.archive.index.ocr_queue.waiting() == 0


def test_angio_runs_stored_in_the_syntax_they_were_sent(
    node: Node, xa_files: dict[str, Path]
) -> None:
    send(node, *xa_files.values(), calling="BISHKEK_CATH")
    for name, path in xa_files.items():
        sent = dcmread(path)
        blob = node.archive.read(node.ingestor.deidentify.secret.uid(str(sent.SOPInstanceUID)))
        assert blob is not None, name
        _, stored_syntax = split_file(blob)
        assert stored_syntax == sent.file_meta.TransferSyntaxUID, name
        assert dcmread(BytesIO(blob)).PixelData == sent.PixelData, name
    rows = list(
        node.archive.index.find(
            Query(level=Level.IMAGE, keys={"NumberOfFrames": "", "AvailableTransferSyntaxUID": ""})
        )
    )
    assert len(rows) == 5 and {r["NumberOfFrames"] for r in rows} == {12}
    assert len({r["AvailableTransferSyntaxUID"] for r in rows}) == 5


class ClosedAssociations(logging.Handler):
    """Collects the node's per-association summaries; an event marks the n-th."""

    def __init__(self, expected: int) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.expected = expected
        self.done = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "closed" in record.getMessage():
            self.lines.append(record.getMessage())
            if len(self.lines) == self.expected:
                self.done.set()


def test_duplicates_are_acknowledged_and_counted(node: Node, xa_files: dict[str, Path]) -> None:
    logger = logging.getLogger("dicomnode.dimse.server")
    watcher = ClosedAssociations(expected=3)
    logger.addHandler(watcher)
    logger.setLevel(logging.INFO)
    try:
        for _ in range(3):
            result = send(node, xa_files["rle"], xa_files["j2k"])
            assert result.returncode == 0, result.stderr
        assert watcher.done.wait(timeout=30)
    finally:
        logger.removeHandler(watcher)
    stats = node.archive.index.stats()
    assert (stats["instances"], stats["duplicates_received"]) == (2, 4)
    assert watcher.lines == [
        "association from BISHKEK_ECHO closed: 2 stored",
        "association from BISHKEK_ECHO closed: 2 duplicate",
        "association from BISHKEK_ECHO closed: 2 duplicate",
    ]


def test_storescu_plain_uncompressed(node: Node, tmp_path: Path) -> None:
    path = save(
        xa_instance(
            PATIENTS[4], frames=3, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian
        ),
        tmp_path / "plain.dcm",
    )
    result = dcmtk(
        "storescu",
        "-aec",
        "CHDNODE",
        "-aet",
        "DUSHANBE_ECHO",
        "127.0.0.1",
        str(node.dicom.port),
        path,
    )
    assert result.returncode == 0, result.stderr
    rows = list(
        node.archive.index.find(
            Query(level=Level.PATIENT, keys={"IssuerOfPatientID": "", "PatientName": ""})
        )
    )
    pseudonym = node.ingestor.deidentify.secret.pseudonym("RCC Dushanbe", PATIENTS[4].patient_id)
    assert rows == [{"IssuerOfPatientID": "RCC Dushanbe", "PatientName": pseudonym}]


@pytest.fixture
def named_patients(node: Node, tmp_path: Path) -> Node:
    """One angio run per synthetic patient from Bishkek, in four scripts and charsets."""
    paths = [
        save(xa_instance(p, frames=2, rows=64, cols=64, seed=i), tmp_path / f"p{i}.dcm")
        for i, p in enumerate(PATIENTS)
    ]
    send(node, *paths)
    assert node.archive.index.stats()["patients"] == len(PATIENTS)
    return node


def pseudonym(node: Node, patient: SyntheticPatient) -> str:
    return node.ingestor.deidentify.secret.pseudonym("NCC Bishkek", patient.patient_id)


def findscu(node: Node, out: Path, *args: str, query: Path | None = None) -> list[Dataset]:
    out.mkdir(exist_ok=True)
    result = dcmtk(
        "findscu",
        "-aet",
        "BISHKEK_ECHO",  # an AE sees its own hospital's patients: these were sent by it
        "-aec",
        "CHDNODE",
        "-X",
        "-od",
        out,
        *args,
        "127.0.0.1",
        str(node.dicom.port),
        *([query] if query else []),
    )
    assert result.returncode == 0, result.stderr
    return [dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_findscu_study_root_returns_only_requested_keys(
    named_patients: Node, tmp_path: Path
) -> None:
    responses = findscu(
        named_patients,
        tmp_path / "r1",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"PatientID={pseudonym(named_patients, PATIENTS[0])}",
        "-k",
        "StudyInstanceUID",
        "-k",
        "PatientName",
        "-k",
        "StudyDescription",
        "-k",
        "ModalitiesInStudy",
        "-k",
        "NumberOfStudyRelatedInstances",
    )
    assert len(responses) == 1
    (rsp,) = responses
    assert str(rsp.PatientName) == pseudonym(named_patients, PATIENTS[0])
    assert rsp.StudyDescription == PATIENTS[0].description
    assert rsp.ModalitiesInStudy == "XA" and int(rsp.NumberOfStudyRelatedInstances) == 1
    assert rsp.SpecificCharacterSet == "ISO_IR 192"
    assert "StudyDate" not in rsp and "PatientBirthDate" not in rsp


@pytest.mark.parametrize(
    ("charset", "pattern", "patient"),
    [
        ("ISO_IR 192", "Пӯшидани*", PATIENTS[1]),
        ("GB18030", "房间隔*", PATIENTS[2]),
        ("ISO_IR 144", "Закрытие ОАП*", PATIENTS[4]),
        ("ISO_IR 100", "Catheterisation*", PATIENTS[3]),
    ],
)
def test_text_comes_back_intact_whatever_the_query_charset(
    named_patients: Node, tmp_path: Path, charset: str, pattern: str, patient: SyntheticPatient
) -> None:
    # Names are pseudonyms by now; the study description (free text cleaned of
    # identity) still carries each hospital's script through the archive.
    query = Dataset()
    query.SpecificCharacterSet = charset
    query.QueryRetrieveLevel = "STUDY"
    query.StudyDescription = pattern
    query.PatientName = ""
    query.StudyDate = ""
    path = tmp_path / "query.dcm"
    query.save_as(path, implicit_vr=False, little_endian=True)
    responses = findscu(named_patients, tmp_path / "out", "-S", query=path)
    assert [r.StudyDescription for r in responses] == [patient.description]
    assert str(responses[0].PatientName) == pseudonym(named_patients, patient)
    assert responses[0].StudyDate  # a requested key that has a value


def test_findscu_patient_root_levels(named_patients: Node, tmp_path: Path) -> None:
    patients = findscu(
        named_patients,
        tmp_path / "p",
        "-P",
        "-k",
        "QueryRetrieveLevel=PATIENT",
        "-k",
        "PatientID=*",
        "-k",
        "NumberOfPatientRelatedInstances",
    )
    assert len(patients) == len(PATIENTS)
    series = findscu(
        named_patients,
        tmp_path / "s",
        "-P",
        "-k",
        "QueryRetrieveLevel=SERIES",
        "-k",
        f"PatientID={pseudonym(named_patients, PATIENTS[2])}",
        "-k",
        "SeriesInstanceUID",
        "-k",
        "Modality",
    )
    assert [s.Modality for s in series] == ["XA"]
    offset = named_patients.ingestor.deidentify.secret.date_offset_days(
        "NCC Bishkek", PATIENTS[3].patient_id
    )
    shifted = shift_date("20261103", offset)
    images = findscu(
        named_patients,
        tmp_path / "i",
        "-S",
        "-k",
        "QueryRetrieveLevel=IMAGE",
        "-k",
        "SOPInstanceUID",
        "-k",
        "NumberOfFrames",
        "-k",
        f"StudyDate={shifted}-{shifted}",
        "-k",
        "PatientID",
    )
    assert {i.PatientID for i in images} >= {pseudonym(named_patients, PATIENTS[3])}
    assert {int(i.NumberOfFrames) for i in images} == {2}


def test_require_known_ae_refuses_strangers(tmp_path: Path, xa_files: dict[str, Path]) -> None:
    config: Config = make_config(tmp_path, require_known_ae=True)
    with Node(config, web=False) as node:
        result = send(node, xa_files["rle"], calling="STRANGER")
        assert result.returncode != 0 and "reject" in result.stderr.lower(), result.stderr
        assert node.archive.index.stats()["instances"] == 0
        send(node, xa_files["rle"], calling="DUSHANBE_ECHO")
        assert node.archive.index.stats()["instances"] == 1
