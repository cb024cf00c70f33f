"""C-GET and C-MOVE to peers that take only uncompressed data.

Every DICOM application accepts Implicit VR Little Endian (PS3.5 §10.1);
most retrieve clients at their defaults accept nothing compressed. A study
of JPEG baseline echo, RLE and JPEG 2000 angio and an uncompressed run must
reach them whole: decompressed by the node when the peer takes no
compressed syntax, with the pixels the node itself decodes from what it
stores. Failures say what failed (PS3.4 C.4.2.1.5, C.4.3.1.4).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
    XRayAngiographicImageStorage,
)

from dicomnode.config import RemoteAE
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming
from dicomnode.net.retrieve_syntax import (
    MAX_CONTEXTS,
    NO_CONTEXT,
    NOT_MADE_HERE,
    UNCOMPRESSED,
    Plan,
    contexts_for,
    decoded,
    plan,
)
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, sample_file, xa_instance
from tests.conftest import DCMTK_ENV, REMOTES, dcmtk, free_port, incoming, make_config

pytestmark = pytest.mark.peers

DESTINATIONS = ("PYSTORE", "DCMSTORE", "PICKY", "DOWN", "REFUSER")
CALLER = "VIEWER"  # sees NCC Bishkek's patients, may move to DESTINATIONS


@dataclass
class Study:
    node: Node
    study_uid: str
    # SOP Instance UID -> the node's stored file (Part 10 bytes).
    stored: dict[str, bytes]
    ports: dict[str, int]
    syntaxes: dict[str, str] = field(default_factory=dict)

    def uid_of(self, syntax: str) -> list[str]:
        return sorted(uid for uid, ts in self.syntaxes.items() if ts == syntax)


def _echo_sample(name: str, study_uid: str) -> Dataset:
    """A real echo clip of the sample wheels, as a Bishkek child's study."""
    ds = dcmread(sample_file(name))
    patient = PATIENTS[0]
    ds.PatientName, ds.PatientID = patient.name, patient.patient_id
    ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
    ds.SpecificCharacterSet = patient.charset
    ds.StudyInstanceUID = study_uid
    return ds


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Study]:
    tmp = tmp_path_factory.mktemp("peers")
    ports = {name: free_port() for name in (CALLER, "GDCMSCU", *DESTINATIONS)}
    remotes = (
        *REMOTES,
        RemoteAE(
            CALLER,
            "127.0.0.1",
            ports[CALLER],
            "-",
            query_issuers=("NCC Bishkek",),
            move_destinations=(CALLER, *DESTINATIONS),
        ),
        RemoteAE("GDCMSCU", "127.0.0.1", ports["GDCMSCU"], "-", query_issuers=("NCC Bishkek",)),
        *(RemoteAE(name, "127.0.0.1", ports[name], "-") for name in DESTINATIONS),
    )
    config = make_config(tmp, remote_aes=remotes)
    study_uid = generate_uid(UID_ROOT)
    with Node(config, web=False) as node:
        for name in ("examples_ybr_color.dcm", "OBXXXX1A_rle.dcm"):
            ds = _echo_sample(name, study_uid)
            buffer = BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            data, syntax = split_file(buffer.getvalue())
            result = node.ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO"))
            assert result.status == 0, (name, result.comment)
        series = generate_uid(UID_ROOT)
        for number, syntax in enumerate((RLELossless, JPEG2000Lossless, ExplicitVRLittleEndian)):
            xa = xa_instance(
                PATIENTS[0],
                frames=6,
                rows=96,
                cols=128,
                transfer_syntax=syntax,
                study_uid=study_uid,
                series_uid=series,
                instance_number=number + 1,
                seed=number,
            )
            assert node.ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
        stored: dict[str, bytes] = {}
        syntaxes: dict[str, str] = {}
        studies = set()
        for path in node.archive.blobs.root.rglob("*.dcm"):
            header = dcmread(path, stop_before_pixels=True)
            stored[str(header.SOPInstanceUID)] = path.read_bytes()
            syntaxes[str(header.SOPInstanceUID)] = str(header.file_meta.TransferSyntaxUID)
            studies.add(str(header.StudyInstanceUID))
        assert len(stored) == 5 and len(studies) == 1
        assert sorted(syntaxes.values()) == sorted(
            [JPEGBaseline8Bit, RLELossless, RLELossless, JPEG2000Lossless, ExplicitVRLittleEndian]
        )
        yield Study(node, studies.pop(), stored, ports, syntaxes)


def pixels_of(data: bytes | Path) -> np.ndarray:
    ds = dcmread(BytesIO(data) if isinstance(data, bytes) else data)
    return ds.pixel_array


def assert_every_instance_decodes_as_stored(received: list[Path], study: Study) -> None:
    """Every stored instance arrived once, with the pixels the node decodes
    from its own file (lossless: the original's; JPEG: the node's decode)."""
    by_uid: dict[str, Path] = {}
    for path in received:
        uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
        assert uid not in by_uid, f"{uid} arrived twice"
        by_uid[uid] = path
    assert sorted(by_uid) == sorted(study.stored), "instances missing or foreign"
    for uid, path in by_uid.items():
        got = dcmread(path)
        kept = dcmread(BytesIO(study.stored[uid]))
        assert np.array_equal(got.pixel_array, kept.pixel_array), study.syntaxes[uid]
        assert got.get("LossyImageCompression") == kept.get("LossyImageCompression"), uid
        if got.file_meta.TransferSyntaxUID != kept.file_meta.TransferSyntaxUID:
            assert not got.file_meta.TransferSyntaxUID.is_compressed
            assert got.PhotometricInterpretation not in ("YBR_FULL_422", "YBR_RCT", "YBR_ICT")


def files_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))


def wait_listening(port: int, process: subprocess.Popen | None = None) -> None:
    """Until something accepts on ``port`` (or the process that should died)."""
    for _ in range(400):
        if process is not None and process.poll() is not None:
            pytest.fail(f"listener exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            threading.Event().wait(0.05)
    pytest.fail(f"nothing listens on {port}")


class Listener:
    """A storage SCP subprocess (pynetdicom's or DCMTK's storescp); what it
    says goes to a file, never to a pipe nobody reads while it runs."""

    def __init__(self, args: list[str], port: int, log: Path) -> None:
        self.log = log.open("w")
        self.process = subprocess.Popen(
            args, env=DCMTK_ENV, stdout=self.log, stderr=subprocess.STDOUT, text=True
        )
        wait_listening(port, self.process)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        self.log.close()


def study_key(study: Study) -> list[str]:
    return ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study.study_uid}"]


def pynetdicom_app(app: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pynetdicom", app, *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


# --- the clients nobody here wrote, at their defaults ----------------------


def test_pynetdicom_getscu_gets_every_instance(study: Study, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = pynetdicom_app(
        "getscu", "-S", "-aet", CALLER, "-aec", "CHDNODE", "-od", out, *study_key(study),
        "127.0.0.1", study.node.dicom.port,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_every_instance_decodes_as_stored(files_in(out), study)


@pytest.mark.parametrize("only", [[], ["-xi"]], ids=["default", "implicit-only"])
def test_pynetdicom_movescu_to_pynetdicom_storescp(
    study: Study, tmp_path: Path, only: list[str]
) -> None:
    out = tmp_path / "moved"
    out.mkdir()
    port = study.ports["PYSTORE"]
    scp = Listener(
        [sys.executable, "-m", "pynetdicom", "storescp", "-aet", "PYSTORE", *only,
         "-od", str(out), str(port)],
        port,
        tmp_path / "storescp.log",
    )  # fmt: skip
    try:
        result = pynetdicom_app(
            "movescu", "-S", "-aet", CALLER, "-aec", "CHDNODE", "-aem", "PYSTORE",
            *study_key(study), "127.0.0.1", study.node.dicom.port,
        )  # fmt: skip
    finally:
        scp.stop()
    assert result.returncode == 0, result.stderr
    assert_every_instance_decodes_as_stored(files_in(out), study)
    if only:  # what arrived in Implicit VR is read back as Implicit VR
        assert {
            dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID for p in files_in(out)
        } == {ImplicitVRLittleEndian}


def test_dcmtk_getscu_defaults_gets_every_instance(study: Study, tmp_path: Path) -> None:
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu", "-S", "-aet", CALLER, "-aec", "CHDNODE", "-od", out, *study_key(study),
        "127.0.0.1", str(study.node.dicom.port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_every_instance_decodes_as_stored(files_in(out), study)


def move_to_dcmstore(
    study: Study, tmp_path: Path, *options: str
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """movescu moves the study to a DCMTK storescp (``options`` its own):
    movescu's result and the folder the instances arrived in."""
    out = tmp_path / "moved"
    out.mkdir()
    port = study.ports["DCMSTORE"]
    scp = Listener(
        ["storescp", *options, "-aet", "DCMSTORE", "-od", str(out), str(port)],
        port,
        tmp_path / "scp.log",
    )
    try:
        result = dcmtk(
            "movescu", "-S", "-aet", CALLER, "-aec", "CHDNODE", "-aem", "DCMSTORE",
            *study_key(study), "127.0.0.1", str(study.node.dicom.port),
        )  # fmt: skip
    finally:
        scp.stop()
    return result, out


def test_dcmtk_movescu_to_dcmtk_storescp_defaults(study: Study, tmp_path: Path) -> None:
    result, out = move_to_dcmstore(study, tmp_path)
    assert result.returncode == 0, result.stderr
    assert_every_instance_decodes_as_stored(files_in(out), study)


def test_dcmtk_movescu_as_its_own_destination(study: Study, tmp_path: Path) -> None:
    out = tmp_path / "moved"
    out.mkdir()
    result = dcmtk(
        "movescu", "-S", "-aet", CALLER, "-aem", CALLER, "-aec", "CHDNODE",
        "--port", str(study.ports[CALLER]), "-od", out, *study_key(study),
        "127.0.0.1", str(study.node.dicom.port),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert_every_instance_decodes_as_stored(files_in(out), study)


def gdcmscu(*args: str | Path) -> subprocess.CompletedProcess[str]:
    if shutil.which("gdcmscu") is None:
        pytest.fail("gdcmscu is not installed: Debian package libgdcm-tools (`make peers`)")
    return subprocess.run(["gdcmscu", *map(str, args)], capture_output=True, text=True, timeout=300)


def gdcm_done(result: subprocess.CompletedProcess[str]) -> bool:
    """gdcmscu 3.0.21 (Debian 12) aborts on every A-RELEASE-RP, whoever the
    peer (DCMTK's storescp too): "ProtocolStream as nullptr is invalid"
    after the final response. A failed move exits 1 ("Move failed.")."""
    released = result.returncode == -6 and "ProtocolStream as nullptr" in result.stderr
    return result.returncode == 0 or released


def test_gdcmscu_move_destination(study: Study, tmp_path: Path) -> None:
    # gdcmscu is its own move destination (its calling AE title). Its C-GET
    # is not implemented in 3.0.21 (`--get` exits 1 before connecting).
    out = tmp_path / "moved"
    out.mkdir()
    result = gdcmscu(
        "--move", "--studyroot", "--study", "--aetitle", "GDCMSCU", "--call", "CHDNODE",
        "--port-scp", study.ports["GDCMSCU"], "-o", out,
        "--key", f"0020,000d={study.study_uid}",
        "127.0.0.1", study.node.dicom.port,
    )  # fmt: skip
    assert gdcm_done(result), result.stdout + result.stderr
    assert_every_instance_decodes_as_stored(files_in(out), study)


# --- what a failure says ----------------------------------------------------


@dataclass
class Final:
    status: int
    comment: str | None
    completed: int | None
    failed: int | None
    warning: int | None
    failed_uids: list[str]


def final_of(responses: Iterator[tuple[Dataset, Dataset | None]]) -> Final:
    last: tuple[Dataset, Dataset | None] | None = None
    for status, identifier in responses:
        if status and status.Status not in (0xFF00, 0xFF01):
            last = (status, identifier)
    assert last is not None, "no final response"
    status, identifier = last
    listed = identifier.get("FailedSOPInstanceUIDList", []) if identifier else []
    listed = [listed] if isinstance(listed, str) else list(listed)
    return Final(
        status.Status,
        status.get("ErrorComment"),
        status.get("NumberOfCompletedSuboperations"),
        status.get("NumberOfFailedSuboperations"),
        status.get("NumberOfWarningSuboperations"),
        sorted(str(u) for u in listed if u),
    )


def study_identifier(study: Study) -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study.study_uid
    return query


def move(study: Study, destination: str) -> Final:
    client = AE(ae_title=CALLER)
    client.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = client.associate("127.0.0.1", study.node.dicom.port, ae_title="CHDNODE")
    assert assoc.is_established
    try:
        return final_of(
            assoc.send_c_move(
                study_identifier(study), destination, StudyRootQueryRetrieveInformationModelMove
            )
        )
    finally:
        assoc.release()


class Picky:
    """A real storage SCP (pynetdicom, in process) that takes only the SOP
    classes it is given, in Implicit VR Little Endian only, and may refuse
    every association (a wrong calling AE title)."""

    def __init__(self, port: int, classes: tuple[str, ...], refuse: bool = False) -> None:
        self.received: dict[str, Dataset] = {}
        ae = AE(ae_title="PICKY")
        for sop_class in classes:
            ae.add_supported_context(sop_class, ImplicitVRLittleEndian)
        if refuse:
            ae.require_calling_aet = ["NOT_THE_NODE"]
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.store)]
        )

    def store(self, event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        self.received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    def stop(self) -> None:
        self.server.shutdown()


ECHO_CLASSES = (UltrasoundImageStorage, UltrasoundMultiFrameImageStorage)


def echo_uids(study: Study) -> list[str]:
    return sorted(
        uid
        for uid, blob in study.stored.items()
        if dcmread(BytesIO(blob), stop_before_pixels=True).SOPClassUID in ECHO_CLASSES
    )


@pytest.mark.parametrize(
    ("why", "said"),
    [
        ("down", "DOWN could not be reached"),  # configured, nothing listens
        ("refuses", "REFUSER rejected the association"),  # A-ASSOCIATE-RJ
        ("takes-nothing", "REFUSER accepted no presentation context"),  # only CT
    ],
)
def test_a_known_destination_that_is_down_is_not_unknown(study: Study, why: str, said: str) -> None:
    if why == "down":
        final = move(study, "DOWN")
    else:
        classes = (CTImageStorage,) if why == "takes-nothing" else (XRayAngiographicImageStorage,)
        scp = Picky(study.ports["REFUSER"], classes, refuse=why == "refuses")
        try:
            final = move(study, "REFUSER")
        finally:
            scp.stop()
    assert final.status == 0xC000, hex(final.status)  # never A801 "unknown"
    assert final.comment == said
    assert (final.completed, final.failed, final.warning) == (0, 5, 0)
    assert final.failed_uids == sorted(study.stored)


def test_move_to_a_peer_without_a_context_for_one_class(study: Study) -> None:
    scp = Picky(study.ports["PICKY"], (XRayAngiographicImageStorage,))
    try:
        final = move(study, "PICKY")
    finally:
        scp.stop()
    assert final.status == 0xB000, hex(final.status)
    assert (final.completed, final.failed, final.warning) == (3, 2, 0)
    assert final.failed_uids == echo_uids(study)
    assert final.comment == "2 not sent: no presentation context for the SOP class"
    assert sorted(scp.received) == sorted(set(study.stored) - set(echo_uids(study)))
    for uid, ds in scp.received.items():  # decompressed, as Implicit VR
        assert ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert np.array_equal(ds.pixel_array, pixels_of(study.stored[uid]))


def get(study: Study, classes: tuple[str, ...], syntax: str = ImplicitVRLittleEndian):
    """C-GET by a pynetdicom SCU that takes ``classes`` in ``syntax`` only."""
    received: dict[str, Dataset] = {}

    def store(event: evt.Event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        received[str(ds.SOPInstanceUID)] = ds
        return 0x0000

    client = AE(ae_title=CALLER)
    client.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in classes:
        client.add_requested_context(sop_class, syntax)
    assoc = client.associate(
        "127.0.0.1",
        study.node.dicom.port,
        ae_title="CHDNODE",
        ext_neg=[build_role(c, scp_role=True) for c in classes],
        evt_handlers=[(evt.EVT_C_STORE, store)],
    )
    assert assoc.is_established
    try:
        final = final_of(
            assoc.send_c_get(study_identifier(study), StudyRootQueryRetrieveInformationModelGet)
        )
    finally:
        assoc.release()
    return final, received


def test_get_by_a_peer_without_a_context_for_one_class(study: Study) -> None:
    final, received = get(study, (XRayAngiographicImageStorage,))
    assert final.status == 0xB000, hex(final.status)
    assert (final.completed, final.failed, final.warning) == (3, 2, 0)
    assert final.failed_uids == echo_uids(study)
    assert final.comment == "2 not sent: no presentation context for the SOP class"
    assert sorted(received) == sorted(set(study.stored) - set(echo_uids(study)))
    for uid, ds in received.items():
        assert np.array_equal(ds.pixel_array, pixels_of(study.stored[uid]))


def test_get_where_nothing_can_be_sent(study: Study) -> None:
    final, received = get(study, (CTImageStorage,))
    assert received == {}
    assert final.status == 0xA702, hex(final.status)
    assert (final.completed, final.failed, final.warning) == (0, 5, 0)
    assert final.failed_uids == sorted(study.stored)
    assert final.comment and len(final.comment) <= 64


# --- what arrives decompressed is still a valid object ---------------------


def dciodvfy_errors(path: Path) -> set[str]:
    result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return {
        line.strip()
        for line in (result.stdout + result.stderr).splitlines()
        if line.startswith("Error")
    }


def test_decompressed_instances_are_as_valid_as_stored(study: Study, tmp_path: Path) -> None:
    """dciodvfy finds no error in what a peer received decompressed that it
    did not find in the node's stored file."""
    final, received = get(study, (*ECHO_CLASSES, XRayAngiographicImageStorage))
    assert final.status == 0x0000, final
    (jpeg,) = study.uid_of(JPEGBaseline8Bit)
    echo = received[jpeg]
    assert echo.PhotometricInterpretation == "RGB" and echo.PlanarConfiguration == 0
    assert echo.LossyImageCompression == "01"
    compressed = [*study.uid_of(JPEGBaseline8Bit), *study.uid_of(RLELossless)]
    for uid in [*compressed, *study.uid_of(JPEG2000Lossless)]:
        kept = tmp_path / f"{uid}-stored.dcm"
        kept.write_bytes(study.stored[uid])
        sent = tmp_path / f"{uid}-received.dcm"
        received[uid].save_as(sent, enforce_file_format=True)
        assert dcmread(sent).file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        new = dciodvfy_errors(sent) - dciodvfy_errors(kept)
        assert not new, (study.syntaxes[uid], new)


def test_get_by_a_requestor_that_takes_no_scp_role(study: Study) -> None:
    """A careless C-GET SCU: storage contexts proposed, but no SCP/SCU Role
    Selection, so the node may not send on them (PS3.4 C.4.3.3)."""
    client = AE(ae_title=CALLER)
    client.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for sop_class in (*ECHO_CLASSES, XRayAngiographicImageStorage):
        client.add_requested_context(sop_class, ImplicitVRLittleEndian)
    assoc = client.associate("127.0.0.1", study.node.dicom.port, ae_title="CHDNODE")
    assert assoc.is_established
    try:
        final = final_of(
            assoc.send_c_get(study_identifier(study), StudyRootQueryRetrieveInformationModelGet)
        )
    finally:
        assoc.release()
    assert final.status == 0xA702, hex(final.status)
    assert (final.completed, final.failed) == (0, 5)
    assert final.comment == "5 not sent: requestor took no SCP role for the SOP class"


# --- the choices, without a network ----------------------------------------


def test_every_class_gets_an_uncompressed_context_within_the_limit() -> None:
    instances = [
        {"SOPClassUID": f"1.2.840.10008.5.1.4.1.1.{n}", "AvailableTransferSyntaxUID": syntax}
        for n in range(130)
        for syntax in (RLELossless, ExplicitVRLittleEndian)
    ]
    contexts = contexts_for(instances)
    assert len(contexts) == MAX_CONTEXTS
    assert all(cx.transfer_syntax == UNCOMPRESSED for cx in contexts)
    few = [
        {"SOPClassUID": XRayAngiographicImageStorage, "AvailableTransferSyntaxUID": RLELossless},
        {"SOPClassUID": XRayAngiographicImageStorage, "AvailableTransferSyntaxUID": RLELossless},
        {
            "SOPClassUID": XRayAngiographicImageStorage,
            "AvailableTransferSyntaxUID": JPEG2000Lossless,
        },
        {
            "SOPClassUID": UltrasoundImageStorage,
            "AvailableTransferSyntaxUID": ImplicitVRLittleEndian,
        },
    ]
    proposed = [(cx.abstract_syntax, tuple(cx.transfer_syntax)) for cx in contexts_for(few)]
    assert proposed == [  # classes in UID order
        (XRayAngiographicImageStorage, tuple(UNCOMPRESSED)),
        (UltrasoundImageStorage, tuple(UNCOMPRESSED)),
        (XRayAngiographicImageStorage, (RLELossless,)),  # most instances first
        (XRayAngiographicImageStorage, (JPEG2000Lossless,)),
    ]


@pytest.mark.parametrize(
    ("stored", "accepted", "expected"),
    [
        (RLELossless, {RLELossless, ExplicitVRLittleEndian}, Plan(send=True)),
        (RLELossless, {ImplicitVRLittleEndian}, Plan(send=True, decode=True)),
        (ImplicitVRLittleEndian, {ExplicitVRLittleEndian}, Plan(send=True)),
        (RLELossless, set(), Plan(send=False, reason=NO_CONTEXT)),
        (RLELossless, {JPEGLSLossless}, Plan(send=False, reason=NOT_MADE_HERE)),
        (ExplicitVRLittleEndian, {ExplicitVRBigEndian}, Plan(send=False, reason=NOT_MADE_HERE)),
        (ExplicitVRBigEndian, {ExplicitVRLittleEndian}, Plan(send=False, reason=NOT_MADE_HERE)),
    ],
)
def test_plan(stored: str, accepted: set[str], expected: Plan) -> None:
    assert plan(stored, accepted) == expected


def test_a_lossy_history_told_only_by_the_syntax_is_kept() -> None:
    """A JPEG baseline file without Lossy Image Compression: once decoded,
    only the attribute can say the pixels were lossy compressed."""
    ds = dcmread(sample_file("examples_ybr_color.dcm"))
    for keyword in ("LossyImageCompression", "LossyImageCompressionMethod"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.pop("LossyImageCompressionRatio", None)
    expected = ds.pixel_array.copy()
    out = decoded(ds, limit=None)  # a small sample: no limit at stake
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert (out.LossyImageCompression, out.LossyImageCompressionMethod) == ("01", "ISO_10918_1")
    assert float(out.LossyImageCompressionRatio) > 1
    assert out.PhotometricInterpretation == "RGB"
    assert np.array_equal(out.pixel_array, expected)


def _data_set_bytes(part10: bytes) -> bytes:
    from dicomnode.ingest.importer import split_file

    return split_file(part10)[0]


def test_moved_instances_are_the_stored_bytes_and_no_file_stays_open(
    study: Study, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer that accepts every syntax gets each instance's data set byte
    for byte as stored (sent from the file: nothing is decoded, nor encoded
    again), and every file the node opened to send is closed again."""

    def no_decoding(*_: object, **__: object) -> None:
        raise AssertionError("decoded to send as stored")

    monkeypatch.setattr("dicomnode.dimse.retrieve.dcmread", no_decoding)
    open_before = len(os.listdir("/proc/self/fd"))
    result, out = move_to_dcmstore(study, tmp_path, "+B", "+xa")
    assert result.returncode == 0, result.stderr
    received = {str(dcmread(p).SOPInstanceUID): p.read_bytes() for p in files_in(out)}
    assert set(received) == set(study.stored)
    for uid, part10 in received.items():
        assert _data_set_bytes(part10) == _data_set_bytes(study.stored[uid]), uid
    # The associations end a moment after the move returns: then every file
    # and socket opened for it is closed again.
    deadline = time.monotonic() + 60
    while len(os.listdir("/proc/self/fd")) > open_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= open_before


def test_a_stored_file_sends_what_was_opened_after_its_name_is_gone(tmp_path: Path) -> None:
    from dicomnode.dimse.stored import StoredFile

    path = tmp_path / "blob.dcm"
    path.write_bytes(b"first version")
    sent = StoredFile(path.open("rb"), "1.2.3", "1.2.3.4")
    path.unlink()  # a replacement committed meanwhile
    path.write_bytes(b"second version")
    assert sent.path.read_bytes() == b"first version"
    assert isinstance(sent, Dataset) and sent.SOPInstanceUID == "1.2.3.4"
