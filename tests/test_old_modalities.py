"""Old modalities: retired storage SOP classes (and, by a setting, unknown
ones) are negotiated, stored de-identified as sent, shown and retrieved.

Older echo machines still send Ultrasound Image Storage (Retired) and its
multi-frame sibling; the node refused them at association.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageDraw, ImageFont
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, Verification
from werkzeug.security import generate_password_hash

from dicomnode.config import Config, ConfigError, RemoteAE, load
from dicomnode.deid.verify import may_carry_text
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.media import sopclasses
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, save, small_instance
from storage.archive import Archive
from tests.conftest import REMOTES, dcmtk, free_port, incoming, make_config, on_free_ports
from tests.test_viewer import PASSWORD, log_in
from viewer import create_app
from viewer.planning import calibration

US_RETIRED = "1.2.840.10008.5.1.4.1.1.6"
US_MF_RETIRED = "1.2.840.10008.5.1.4.1.1.3"
# A private storage class under a test root (as a vendor's would be).
PRIVATE_CLASS = "1.2.826.0.1.3680043.10.1432.7.1"
STANDALONE_CURVE = "1.2.840.10008.5.1.4.1.1.9"
LATIN_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")


def retired_us(patient_index: int = 0, frames: int = 1, sop_class: str | None = None) -> Dataset:
    """A synthetic echo image as an old machine writes it: retired class,
    banner rows above the region, calibration in SequenceOfUltrasoundRegions."""
    ds = small_instance(
        PATIENTS[patient_index],
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
        size=64,
    )
    ds.SOPClassUID = sop_class or (US_RETIRED if frames == 1 else US_MF_RETIRED)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    if frames > 1:
        single = np.frombuffer(ds.PixelData, dtype=np.uint8)
        ds.PixelData = np.concatenate([np.roll(single, i) for i in range(frames)]).tobytes()
        ds.NumberOfFrames = frames
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = "33.3"
    return ds


def planted_unknown(patient_index: int = 3) -> Dataset:
    """A private-class instance with the child's name where a careless
    vendor puts it: a private tag, a sequence item, a nested private tag."""
    ds = retired_us(patient_index, sop_class=PRIVATE_CLASS)
    ds.Modality = "OT"
    name = str(PATIENTS[patient_index].name)
    block = ds.private_block(0x0009, "ACME OLD ECHO", create=True)
    block.add_new(0x10, "LO", name)
    item = Dataset()
    item.PatientName = name
    item.PatientID = PATIENTS[patient_index].patient_id
    inner = item.private_block(0x0011, "ACME OLD ECHO", create=True)
    inner.add_new(0x01, "LO", name.replace("^", " "))
    ds.ReferencedPatientSequence = Sequence([item])
    return ds


def stored(archive: Archive) -> list[Path]:
    return sorted(archive.blobs.root.rglob("*.dcm"))


def assert_no_identity(path: Path, patient_index: int) -> None:
    """Neither the name (any part of it) nor the ID anywhere in the file."""
    patient = PATIENTS[patient_index]
    raw = path.read_bytes()
    ds = dcmread(path)
    for part in [*str(patient.name).split("^"), patient.patient_id]:
        for codec in ("utf-8", "gb18030", "latin-1"):
            try:
                needle = part.encode(codec)
            except UnicodeEncodeError:
                continue
            assert needle not in raw, f"{part!r} left in the stored file"
    assert str(ds.PatientName).startswith("CHD-")
    assert ds.PatientIdentityRemoved == "YES"


@pytest.fixture
def open_node(tmp_path: Path) -> Iterator[Node]:
    with Node(make_config(tmp_path), web=False) as running:
        yield running


@pytest.fixture
def lenient_node(tmp_path: Path) -> Iterator[Node]:
    """unknown_sop_class_accepted on: any storage class, as Orthanc's setting."""
    with Node(make_config(tmp_path, unknown_sop_class_accepted=True), web=False) as running:
        yield running


def associate(node: Node, *contexts: str, calling: str = "BISHKEK_ECHO") -> object:
    ae = AE(ae_title=calling)
    for uid in contexts:
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    return ae.associate("127.0.0.1", node.dicom.port, ae_title="CHDNODE")


# -- the lists -------------------------------------------------------------


def test_every_retired_storage_class_is_decided() -> None:
    """Each retired storage class of PS3.6 is either accepted as an image or
    refused with a reason: none falls through to 'unknown'."""
    from pydicom._uid_dict import UID_dictionary

    retired = {
        uid
        for uid, (name, kind, _, status, _) in UID_dictionary.items()
        if kind == "SOP Class"
        and status
        and (uid.startswith("1.2.840.10008.5.1.4.1.1.") or "Storage" in name)
        and "Commitment" not in name
    }
    decided = set(sopclasses.RETIRED_IMAGE_STORAGE) | set(sopclasses.REFUSED_RETIRED)
    assert retired <= decided, sorted(retired - decided)
    assert not set(sopclasses.RETIRED_IMAGE_STORAGE) & set(sopclasses.REFUSED_RETIRED)
    assert {US_RETIRED, US_MF_RETIRED} <= sopclasses.ACCEPTED_STORAGE


@pytest.mark.parametrize(
    ("uid", "lenient", "accepted"),
    [
        (US_RETIRED, False, True),
        (PRIVATE_CLASS, False, False),
        (PRIVATE_CLASS, True, True),
        ("1.2.840.10008.5.1.4.1.1.999.1", True, True),  # a class newer than pydicom
        (STANDALONE_CURVE, True, False),  # known, and known to be useless here
        (Verification, True, False),  # not storage, whatever the setting
        ("1.2.840.10008.5.1.4.1.2.2.3", True, False),  # a retrieve model
        ("1.2.840.10008.1.2.1", True, False),  # a transfer syntax
        ("1.2.840.10008.9.9.9", True, False),  # standard, outside the storage root
        ("1.2.03.4", True, False),  # malformed
        ("1." + "2" * 70, True, False),  # too long
    ],
)
def test_refusal_decides_by_class_and_setting(uid: str, lenient: bool, accepted: bool) -> None:
    why = sopclasses.refusal(uid, lenient)
    assert (why is None) is accepted
    if why is not None:
        assert uid not in why and len(why) <= 64  # an Error Comment: the rule, not the value


def test_setting_is_validated(tmp_path: Path) -> None:
    """The setting comes from the TOML file and the environment; accepting
    classes of unknown content with OCR off would pass their pixels unread."""
    toml = tmp_path / "node.toml"
    toml.write_text(f'[node]\ndata_dir = "{tmp_path / "v"}"\nunknown_sop_class_accepted = true\n')
    assert load(toml, env={}).unknown_sop_class_accepted is True
    assert load(None, env={}).unknown_sop_class_accepted is False
    with pytest.raises(ConfigError, match="unknown_sop_class_accepted"):
        load(toml, env={"DICOMNODE_OCR": "false"})
    with pytest.raises(ConfigError, match="unknown_sop_class_accepted"):
        load(None, env={"DICOMNODE_UNKNOWN_SOP_CLASS_ACCEPTED": "maybe"})


# -- negotiation and storage over DIMSE -----------------------------------


@pytest.mark.peers
@pytest.mark.parametrize("frames", [1, 12])
def test_dcmtk_storescu_sends_retired_us(open_node: Node, tmp_path: Path, frames: int) -> None:
    path = save(retired_us(0, frames), tmp_path / "old.dcm")
    # -R: the classes of the files only, as an echo machine proposes its own
    # (at its defaults storescu proposes a fixed list without retired US).
    result = dcmtk(
        *("storescu", "-R", "-aec", "CHDNODE", "-aet", "BISHKEK_ECHO"),
        *("127.0.0.1", open_node.dicom.port, path),
    )
    assert result.returncode == 0, result.stderr
    assert "no acceptable presentation contexts" not in (result.stderr + result.stdout).lower()
    (kept,) = stored(open_node.archive)
    ds = dcmread(kept)
    assert ds.SOPClassUID == (US_RETIRED if frames == 1 else US_MF_RETIRED)  # stored as sent
    assert int(ds.get("NumberOfFrames") or 1) == frames
    assert_no_identity(kept, 0)


@pytest.mark.peers
def test_pynetdicom_storescu_sends_retired_us(open_node: Node, tmp_path: Path) -> None:
    """pynetdicom's storescu proposes its 128 current classes by default (no
    retired one, whatever the node does): with -cx it proposes the file's."""
    folder = tmp_path / "old"
    save(retired_us(1, 1), folder / "single.dcm")
    save(retired_us(2, 6), folder / "multi.dcm")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pynetdicom", "storescu", "-aet", "DUSHANBE_ECHO"),
            *("-aec", "CHDNODE", "-cx", "--recurse"),
            *("127.0.0.1", str(open_node.dicom.port), str(folder)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Store failed" not in result.stderr, result.stderr
    classes = sorted(
        str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in stored(open_node.archive)
    )
    assert classes == sorted([US_RETIRED, US_MF_RETIRED])
    for path in stored(open_node.archive):
        ds = dcmread(path, stop_before_pixels=True)
        assert_no_identity(path, 1 if ds.SOPClassUID == US_RETIRED else 2)


def test_unknown_class_refused_by_default_with_reason(
    open_node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dicomnode")
    assoc = associate(open_node, Verification, PRIVATE_CLASS, STANDALONE_CURVE)
    try:
        assert assoc.is_established
        refused = {str(cx.abstract_syntax): cx.result for cx in assoc.rejected_contexts}
        assert refused == {PRIVATE_CLASS: 0x03, STANDALONE_CURVE: 0x03}
    finally:
        assoc.release()
    text = caplog.text
    assert "unknown_sop_class_accepted" in text  # says which setting would accept it
    assert "not an image" in text  # the retired one, why it is refused


@pytest.mark.peers
def test_storescu_unknown_class_refused_then_accepted(tmp_path: Path) -> None:
    """pynetdicom's storescu proposing the file's class (DCMTK's storescu
    will not send a class it does not know)."""
    path = save(planted_unknown(), tmp_path / "private.dcm")
    for lenient in (False, True):
        config = make_config(tmp_path / str(lenient), unknown_sop_class_accepted=lenient)
        with Node(config, web=False) as node:
            result = subprocess.run(
                [
                    *(sys.executable, "-m", "pynetdicom", "storescu", "-cx"),
                    *("-aet", "BISHKEK_ECHO", "-aec", "CHDNODE"),
                    *("127.0.0.1", str(node.dicom.port), str(path)),
                ],
                capture_output=True,
                text=True,
                timeout=300,
            )
            kept = stored(node.archive)
            if not lenient:
                assert kept == [] and result.returncode != 0
                assert "No accepted presentation contexts" in result.stderr
                continue
            assert result.returncode == 0 and "Store failed" not in result.stderr, result.stderr
            (one,) = kept
            assert dcmread(one).SOPClassUID == PRIVATE_CLASS
            assert_no_identity(one, 3)


def test_unknown_class_stored_with_planted_identity_removed(lenient_node: Node) -> None:
    assoc = associate(lenient_node, PRIVATE_CLASS)
    try:
        assert assoc.is_established and assoc.accepted_contexts
        status = assoc.send_c_store(planted_unknown())
        assert status.Status in (0x0000, 0xB000), hex(status.Status)
    finally:
        assoc.release()
    (kept,) = stored(lenient_node.archive)
    ds = dcmread(kept)
    assert ds.SOPClassUID == PRIVATE_CLASS
    assert not any(element.tag.is_private for element in ds.iterall())
    assert_no_identity(kept, 3)


def test_unknown_class_carrying_the_childs_id_is_not_kept(lenient_node: Node) -> None:
    """A class UID is kept as sent only when it names no one: one built
    from the child's ID is remapped like any UID the standard does not define."""
    ds = planted_unknown(3)
    ds.PatientID = "4242424242"
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = f"{PRIVATE_CLASS}.4242424242"
    result = lenient_node.ingestor.ingest(incoming(ds))
    assert result.outcome is not Outcome.REJECTED, result
    (kept,) = stored(lenient_node.archive)
    assert b"4242424242" not in kept.read_bytes()


@pytest.mark.slow
def test_unknown_class_with_text_in_its_pixels_is_quarantined(lenient_node: Node) -> None:
    """A class the node does not know says nothing of what its pixels are: a
    header claiming CT without burned-in text does not skip the OCR."""
    ds = planted_unknown(3)
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    del ds.SequenceOfUltrasoundRegions
    image = Image.new("L", (640, 480), 20)
    ImageDraw.Draw(image).text(
        (40, 200), "NAZAROV TIMUR KZ-000404", fill=255, font=ImageFont.truetype(str(LATIN_FONT), 22)
    )
    ds.Rows, ds.Columns = 480, 640
    ds.PixelData = np.asarray(image).tobytes()
    result = lenient_node.ingestor.ingest(incoming(ds))
    assert result.outcome is Outcome.QUARANTINED, result
    assert result.status == 0xB000 and "OCR" in result.comment, result.comment


@pytest.mark.parametrize(
    "uid",
    [
        US_RETIRED,
        US_MF_RETIRED,
        "1.2.840.10008.5.1.4.1.1.12.3",  # XA bi-plane (retired)
        "1.2.840.10008.5.1.4.1.1.77.1",  # VL image (trial)
        "1.2.840.10008.5.1.4.1.1.77.2",  # VL multi-frame (trial)
        PRIVATE_CLASS,
    ],
)
def test_text_bearing_old_and_unknown_classes_are_read_whatever_the_header(uid: str) -> None:
    """A header saying CT without burned-in text does not spare the OCR an
    echo, angio or photograph in a retired class, nor a class nobody knows."""
    ds = Dataset()
    ds.SOPClassUID = uid
    ds.Modality = "CT"
    ds.BurnedInAnnotation = "NO"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert may_carry_text(ds)


def test_unknown_class_refused_at_ingest_by_default(ingestor: Ingestor) -> None:
    """The same rule at every door (STOW-RS, import): refused with a status
    and a comment naming the setting, not the value."""
    result = ingestor.ingest(incoming(planted_unknown()))
    assert result.outcome is Outcome.REJECTED
    assert "unknown_sop_class_accepted" in result.comment
    assert PRIVATE_CLASS not in result.comment


# -- shown -----------------------------------------------------------------


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
    return create_app(config, archive, b"k" * 32).test_client()


@pytest.mark.slow
@pytest.mark.parametrize("frames", [1, 5])
def test_viewer_shows_retired_us_like_us(
    client: FlaskClient, ingestor: Ingestor, archive: Archive, frames: int
) -> None:
    assert ingestor.ingest(incoming(retired_us(4, frames))).status == 0
    (kept,) = stored(archive)
    ds = dcmread(kept)
    uid = str(ds.SOPInstanceUID)
    log_in(client)
    meta = client.get(f"/api/instances/{uid}/meta").json
    assert meta["frames"] == frames and meta["modality"] == "US" and meta["grey"]
    assert meta["pseudonym"].startswith("CHD-")
    response = client.get(f"/api/instances/{uid}/frames/{frames}")
    assert response.status_code == 200
    shown = np.asarray(Image.open(BytesIO(response.data)))
    assert shown.shape[:2] == (64, 64) and shown.max() > 0
    # Calibration from the ultrasound regions, as for a current US image.
    found = calibration.for_image(ds, (10.0, 20.0), (30.0, 20.0))
    assert not isinstance(found, str), found
    measured = calibration.length(ds, (10.0, 20.0), (30.0, 20.0))
    assert measured.unit == "mm" and abs(measured.value - 4.0) < 1e-6


# -- retrieved -------------------------------------------------------------


@pytest.fixture
def stocked(tmp_path: Path) -> Iterator[tuple[Node, Path, str]]:
    """A node holding one retired US single-frame and one multi-frame of one study."""
    config = make_config(tmp_path, unknown_sop_class_accepted=True)
    with Node(config, web=False) as node:
        first, second = retired_us(0, 1), retired_us(0, 4)
        second.StudyInstanceUID = first.StudyInstanceUID
        for ds in (first, second):
            assert node.ingestor.ingest(incoming(ds)).status == 0
        yield node, tmp_path, str(first.StudyInstanceUID)  # as sent, not as stored


def study_of(node: Node) -> str:
    return str(dcmread(stored(node.archive)[0], stop_before_pixels=True).StudyInstanceUID)


@pytest.mark.peers
def test_dcmtk_getscu_retrieves_retired_us(stocked: tuple[Node, Path, str]) -> None:
    node, tmp_path, _ = stocked
    out = tmp_path / "got"
    out.mkdir()
    result = dcmtk(
        "getscu",
        "-S",
        "+B",
        "-aet",
        "BISHKEK_ECHO",
        "-aec",
        "CHDNODE",
        "-od",
        out,
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_of(node)}",
        "127.0.0.1",
        node.dicom.port,
    )
    assert result.returncode == 0, result.stderr
    got = sorted(str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in out.iterdir())
    assert got == sorted([US_RETIRED, US_MF_RETIRED])


def test_pynetdicom_get_retrieves_retired_and_unknown(stocked: tuple[Node, Path, str]) -> None:
    """C-GET with SCP role selection for the retired classes (and a private one)."""
    node, _, sent_study = stocked
    private = planted_unknown(0)
    private.StudyInstanceUID = sent_study
    assert node.ingestor.ingest(incoming(private)).status in (0x0000, 0xB000)
    received: list[str] = []

    def on_store(event: evt.Event) -> int:
        received.append(str(event.request.AffectedSOPClassUID))
        return 0x0000

    ae = AE(ae_title="BISHKEK_ECHO")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    roles = []
    for uid in (US_RETIRED, US_MF_RETIRED, PRIVATE_CLASS):
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        roles.append(build_role(uid, scp_role=True))
    assoc = ae.associate(
        "127.0.0.1",
        node.dicom.port,
        ae_title="CHDNODE",
        ext_neg=roles,
        evt_handlers=[(evt.EVT_C_STORE, on_store)],
    )
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_of(node)
    try:
        statuses = [
            s.Status
            for s, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet)
            if s
        ]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    assert sorted(received) == sorted([US_RETIRED, US_MF_RETIRED, PRIVATE_CLASS])


@pytest.mark.peers
def test_dcmtk_movescu_receives_retired_us(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(
        tmp_path, remote_aes=(*REMOTES, RemoteAE("MOVESCU", "127.0.0.1", port, "NCC Bishkek"))
    )
    with Node(config, web=False) as node:
        first, second = retired_us(0, 1), retired_us(0, 4)
        second.StudyInstanceUID = first.StudyInstanceUID
        for ds in (first, second):
            assert node.ingestor.ingest(incoming(ds)).status == 0
        out = tmp_path / "moved"
        out.mkdir()
        result = dcmtk(
            "movescu",
            "-S",
            "-aet",
            "MOVESCU",
            "-aec",
            "CHDNODE",
            "-aem",
            "MOVESCU",
            "--port",
            port,
            "-od",
            out,
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"StudyInstanceUID={study_of(node)}",
            "127.0.0.1",
            node.dicom.port,
        )
        assert result.returncode == 0, result.stderr
        got = sorted(str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in out.iterdir())
        assert got == sorted([US_RETIRED, US_MF_RETIRED])


# -- Orthanc as sender -----------------------------------------------------


@pytest.mark.peers
@pytest.mark.slow
def test_orthanc_sends_retired_us(tmp_path: Path) -> None:
    from tests.test_orthanc_peer import Orthanc

    orthanc_port = free_port()  # reserved: Orthanc cannot bind port 0 and say so
    config = make_config(
        tmp_path / "node",
        remote_aes=(*REMOTES, RemoteAE("ORTHANC", "127.0.0.1", orthanc_port, "Orthanc peer")),
    )
    with Node(config, web=False) as node:  # on port 0: asked which it bound
        # Its HTTP port is probed (reserved) inside: again on another if taken.
        orthanc = on_free_ports(
            lambda: Orthanc(tmp_path / "orthanc", orthanc_port, node.dicom.port), count=0
        )
        try:
            path = save(retired_us(2, 3), tmp_path / "old.dcm")
            uploaded = orthanc.call("POST", "/instances", path.read_bytes())
            orthanc.call("POST", "/modalities/chdnode/store", {"Resources": [uploaded["ID"]]})
        finally:
            orthanc.stop()
        (kept,) = stored(node.archive)
        assert dcmread(kept, stop_before_pixels=True).SOPClassUID == US_MF_RETIRED
        assert_no_identity(kept, 2)
