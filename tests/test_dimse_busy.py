"""A node slower than its network timeout on a loaded machine: pynetdicom
counts the peer's silence from its last PDU, and a peer waiting for the
node's answer is silent, so an ingest (or a retrieve) that took longer than
``network_timeout`` used to be aborted right after its Success. The peer
then saw its next instance fail. Here each instance takes longer than the
timeout to ingest (the ingestor made slow, as a loaded machine makes it),
and the association must carry every instance to Success and release."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import XRayAngiographicImageStorage  # type: ignore[attr-defined]

from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, xa_instance
from tests.conftest import make_config

TIMEOUT = 1  # seconds: network_timeout's least
SLOWER = 1.6  # seconds each ingest takes: longer than the timeout


@pytest.fixture
def slow_node(tmp_path: Path) -> Iterator[Node]:
    with Node(make_config(tmp_path, network_timeout=TIMEOUT)) as node:
        ingest = node.ingestor.ingest

        def loaded(*args: Any, **kwargs: Any) -> Any:
            time.sleep(SLOWER)  # a machine busy elsewhere
            return ingest(*args, **kwargs)

        node.ingestor.ingest = loaded  # type: ignore[method-assign]
        yield node


def test_a_slow_ingest_keeps_the_association(slow_node: Node) -> None:
    ae = AE(ae_title="CATHLAB")
    ae.add_requested_context(XRayAngiographicImageStorage, ExplicitVRLittleEndian)
    ae.network_timeout = 30  # the peer waits for the node's answers
    ae.acse_timeout = ae.dimse_timeout = 60
    assoc = ae.associate("127.0.0.1", slow_node.dicom.port, ae_title=slow_node.config.ae_title)
    assert assoc.is_established
    statuses = []
    for n in range(3):
        ds = xa_instance(
            PATIENTS[0],
            frames=2,
            rows=32,
            cols=32,
            instance_number=n + 1,
            transfer_syntax=ExplicitVRLittleEndian,
        )
        status = assoc.send_c_store(ds)
        statuses.append(status.Status if status else None)
    assert statuses == [0, 0, 0]
    assert assoc.is_established and not assoc.is_aborted
    assoc.release()
    assert assoc.is_released
