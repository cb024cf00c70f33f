"""Forwarding survives a destination that is down and a node restart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import XRayAngiographicImageStorage

from dicomnode.config import ConfigError, RemoteAE, RouteRule, load
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.jobs.forwarding import Forwarder, backoff
from dicomnode.node import open_archive
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query
from tests.conftest import REMOTES, free_port, incoming, make_config
from tests.test_retrieve_peers import Listener, _echo_sample, files_in


class Destination:
    """A real storage SCP (pynetdicom) that records what it receives."""

    def __init__(self, port: int, contexts: dict[str, list[str]] | None = None) -> None:
        self.received: list[str] = []
        ae = AE(ae_title="RESEARCH")
        if contexts is None:
            syntaxes = ["1.2.840.10008.1.2.5", "1.2.840.10008.1.2.1"]
            contexts = {cx.abstract_syntax: syntaxes for cx in AllStoragePresentationContexts}
        for sop_class, syntaxes in contexts.items():
            ae.add_supported_context(sop_class, syntaxes)
        self.server = ae.start_server(
            ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, self.store)]
        )

    def store(self, event: evt.Event) -> int:
        self.received.append(str(event.dataset.SOPInstanceUID))
        return 0x0000


@pytest.mark.slow
def test_down_destination_restart_then_everything_arrives_once(tmp_path: Path) -> None:
    port = free_port()
    config = make_config(
        tmp_path, remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", port, "research archive"))
    )
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    study = generate_uid(UID_ROOT)
    for seed in range(3):
        xa = xa_instance(
            PATIENTS[0],
            frames=2,
            rows=32,
            cols=32,
            study_uid=study,
            seed=seed,
            instance_number=seed + 1,
        )
        assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
    (row,) = archive.index.find(Query(level=Level.STUDY, keys={"StudyInstanceUID": ""}))
    stored_study = row["StudyInstanceUID"]
    forwarder = Forwarder(config, archive)
    assert forwarder.enqueue_study(stored_study, "RESEARCH") == 3
    assert forwarder.enqueue_study(stored_study, "RESEARCH") == 0  # already waiting
    assert forwarder.run_once() == {"sent": 0, "waiting": 3}  # destination down
    assert forwarder.run_once() == {"sent": 0, "waiting": 0}  # not due again yet
    archive.close()

    # The node restarts; the destination comes back.
    destination = Destination(port)
    try:
        archive = open_archive(config)
        later = datetime.now(UTC) + backoff(1) + timedelta(seconds=1)
        assert Forwarder(config, archive).run_once(now=later) == {"sent": 3, "waiting": 0}
        assert Forwarder(config, archive).run_once(now=later) == {"sent": 0, "waiting": 0}
        assert len(destination.received) == len(set(destination.received)) == 3
        assert archive.index.forwarding.counts() == {("RESEARCH", "done"): 3}
        archive.close()
    finally:
        destination.server.shutdown()


def test_backoff_grows_and_is_capped() -> None:
    assert [backoff(n).total_seconds() for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff(20) == timedelta(hours=1)


def test_routing_rules_queue_what_matches(tmp_path: Path) -> None:
    config = make_config(
        tmp_path,
        remote_aes=(*REMOTES, RemoteAE("RESEARCH", "127.0.0.1", free_port(), "research")),
        routes=(RouteRule("RESEARCH", issuer="NCC Bishkek", modalities="XA"),),
    )
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    xa = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16)
    assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0  # routed
    assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0  # duplicate
    other = xa_instance(PATIENTS[1], frames=2, rows=16, cols=16)
    assert ingestor.ingest(incoming(other, calling_ae="DUSHANBE_ECHO")).status == 0  # other issuer
    # Queued from the change feed by the forwarder's pass, not by the door.
    assert archive.index.forwarding.counts() == {}
    assert Forwarder(config, archive).drain() == 2  # two stored, one change each
    assert archive.index.forwarding.counts() == {("RESEARCH", "pending"): 1}
    assert Forwarder(config, archive).drain() == 0  # the cursor moved: nothing twice
    assert archive.index.forwarding.counts() == {("RESEARCH", "pending"): 1}
    archive.close()


def test_a_route_to_an_unknown_ae_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "node.toml"
    path.write_text('[[route]]\ndestination = "NOWHERE"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="NOWHERE"):
        load(path, env={})


# --- peers that take only uncompressed data ----------------------------------------------


def _echo_and_angio(tmp_path: Path, port: int) -> tuple[Forwarder, Archive, str, dict[str, str]]:
    """A node holding a JPEG baseline echo clip (the sample wheel's, YBR_FULL_422)
    and an RLE angio run of one study, forwarding to WARD on ``port``; returns
    its forwarder, archive, stored study and each stored instance's transfer
    syntax by SOP Instance UID."""
    ward = RemoteAE("WARD", "127.0.0.1", port, "ward archive")
    config = make_config(tmp_path, remote_aes=(*REMOTES, ward))
    archive = open_archive(config)
    ingestor = Ingestor(config, archive)
    study = generate_uid(UID_ROOT)
    echo = _echo_sample("examples_ybr_color.dcm", study)
    assert ingestor.ingest(incoming(echo, calling_ae="BISHKEK_ECHO")).status == 0
    xa = xa_instance(PATIENTS[0], frames=4, rows=48, cols=64, study_uid=study, seed=7)
    assert ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
    keys = {"StudyInstanceUID": "", "SOPInstanceUID": "", "AvailableTransferSyntaxUID": ""}
    rows = list(archive.index.find(Query(level=Level.IMAGE, keys=keys)))
    syntaxes = {r["SOPInstanceUID"]: r["AvailableTransferSyntaxUID"] for r in rows}
    assert sorted(syntaxes.values()) == sorted([JPEGBaseline8Bit, RLELossless])
    (stored_study,) = {r["StudyInstanceUID"] for r in rows}
    return Forwarder(config, archive), archive, stored_study, syntaxes


def _stored(archive: Archive, uid: str) -> bytes:
    key = archive.index.instance_blob(uid)
    assert key is not None
    return archive.blobs.read(key)


@pytest.mark.peers
def test_dcmtk_storescp_at_its_defaults_receives_jpeg_echo_and_rle_angio(tmp_path: Path) -> None:
    """DCMTK's storescp at its defaults accepts only uncompressed syntaxes:
    both instances arrive decoded, with the pixels the node decodes from its
    own files, still marked lossy where they were."""
    port = free_port()
    forwarder, archive, study, syntaxes = _echo_and_angio(tmp_path, port)
    assert forwarder.enqueue_study(study, "WARD") == 2
    out = tmp_path / "received"
    out.mkdir()
    scp = Listener(["storescp", "-aet", "WARD", "-od", str(out), str(port)], port, tmp_path / "s")
    try:
        outcome = forwarder.run_once()
    finally:
        scp.stop()
    assert outcome == {"sent": 2, "waiting": 0}, archive.index.forwarding.due_or_later()
    assert archive.index.forwarding.counts() == {("WARD", "done"): 2}
    received = {str(dcmread(p).SOPInstanceUID): dcmread(p) for p in files_in(out)}
    assert sorted(received) == sorted(syntaxes)
    for uid, got in received.items():
        kept = dcmread(BytesIO(_stored(archive, uid)))
        assert got.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert np.array_equal(got.pixel_array, kept.pixel_array), syntaxes[uid]
        assert got.get("LossyImageCompression") == kept.get("LossyImageCompression")
        assert got.PhotometricInterpretation not in ("YBR_FULL_422", "YBR_RCT", "YBR_ICT")
        assert got.PatientID == kept.PatientID  # what left is what the node holds (de-identified)
    archive.close()


@pytest.mark.slow
def test_what_cannot_be_made_for_the_peer_waits_with_its_reason(tmp_path: Path) -> None:
    """A peer that takes the angio class only uncompressed and the echo class
    not at all; the angio file in the archive damaged: nothing is marked
    sent that did not arrive, and each waiting row says why, naming syntaxes
    only (never a value of the data set)."""
    port = free_port()
    forwarder, archive, study, syntaxes = _echo_and_angio(tmp_path, port)
    (angio,) = (uid for uid, ts in syntaxes.items() if ts == RLELossless)
    key = archive.index.instance_blob(angio)
    assert key is not None
    damaged = dcmread(BytesIO(archive.blobs.read(key)))
    damaged.PixelData = encapsulate([b"\x07" * 64] * int(damaged.NumberOfFrames))
    buffer = BytesIO()
    damaged.save_as(buffer, enforce_file_format=True)
    archive.blobs.path(key).write_bytes(buffer.getvalue())

    assert forwarder.enqueue_study(study, "WARD") == 2
    destination = Destination(port, {XRayAngiographicImageStorage: [ImplicitVRLittleEndian]})
    try:
        assert forwarder.run_once() == {"sent": 0, "waiting": 2}
    finally:
        destination.server.shutdown()
    assert destination.received == []
    waiting = {r["sop_instance_uid"]: r for r in archive.index.forwarding.due_or_later()}
    assert sorted(waiting) == sorted(syntaxes)
    (echo,) = (uid for uid in syntaxes if uid != angio)
    assert "no presentation context" in waiting[echo]["last_error"]
    assert "JPEG Baseline" in waiting[echo]["last_error"]
    assert "could not be decompressed" in waiting[angio]["last_error"]
    assert all(r["attempts"] == 1 for r in waiting.values())
    for row in waiting.values():
        assert PATIENTS[0].patient_id not in row["last_error"]
        assert row["sop_instance_uid"] not in row["last_error"]
    archive.close()
