"""Queued P-DATA PDUs leave in one send (`dicomnode.dimse.batching`).

Over a real association to a pynetdicom storage SCP that takes 16 KiB PDUs
(DCMTK's default): a clip sent by the node's requestor arrives byte for
byte, in far fewer socket sends than PDUs, and a release right after the
last PDU still finds every byte sent before it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from io import BytesIO

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import UltrasoundMultiFrameImageStorage

from dicomnode.dimse.stored import NodeAE
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance

MAX_PDU = 16384


@pytest.fixture
def scp() -> Iterator[tuple[int, list[bytes]]]:
    """A storage SCP keeping what it receives, encoded as received."""
    received: list[bytes] = []
    lock = threading.Lock()

    def stored(event: evt.Event) -> int:
        with lock:
            received.append(event.encoded_dataset(include_meta=True))
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.maximum_pdu_size = MAX_PDU
    ae.add_supported_context(UltrasoundMultiFrameImageStorage, ExplicitVRLittleEndian)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, stored)]
    )
    try:
        yield server.server_address[1], received
    finally:
        server.shutdown()


def clip(frames: int) -> Dataset:
    ds = small_instance(
        PATIENTS[0], study_uid=f"{UID_ROOT}.1", series_uid=f"{UID_ROOT}.2", instance_number=1
    )
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage
    ds.Rows, ds.Columns, ds.NumberOfFrames = 240, 320, frames
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    rng = np.random.default_rng(7)
    ds.PixelData = rng.integers(0, 255, (frames, 240, 320), dtype=np.uint8).tobytes()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def test_a_clip_arrives_whole_in_fewer_sends_than_pdus(scp: tuple[int, list[bytes]]) -> None:
    port, received = scp
    ds = clip(30)  # 2.3 MB: some 140 PDUs of 16 KiB
    counts = {"pdus": 0, "sends": 0}

    def pdu(_: evt.Event) -> None:
        counts["pdus"] += 1

    def sent(_: evt.Event) -> None:
        counts["sends"] += 1

    ae = NodeAE(ae_title="CHDNODE")
    ae.add_requested_context(UltrasoundMultiFrameImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(
        "127.0.0.1", port, ae_title="DEST",
        evt_handlers=[(evt.EVT_PDU_SENT, pdu), (evt.EVT_DATA_SENT, sent)],
    )  # fmt: skip
    assert assoc.is_established
    for _ in range(2):
        status = assoc.send_c_store(ds)
        assert status.Status == 0x0000
    assoc.release()
    assert assoc.is_released
    assert len(received) == 2
    for data in received:
        back = dcmread(BytesIO(data), force=True)
        assert back.PixelData == ds.PixelData
        assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert counts["pdus"] > 2 * 130
    assert counts["sends"] < counts["pdus"] // 4, counts
