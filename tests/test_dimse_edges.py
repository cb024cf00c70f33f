"""Edge cases driven by a pynetdicom SCU: cancel, limits, bad data, concurrency."""

from __future__ import annotations

import logging
import threading
from io import BytesIO
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    UltrasoundImageStorage,
    Verification,
)

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, small_instance
from tests.conftest import incoming, make_config


def associate(node: Node, *contexts, ae_title: str = "BISHKEK_ECHO"):
    ae = AE(ae_title=ae_title)
    for context in contexts:
        ae.add_requested_context(context)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title=node.config.ae_title)
    assert assoc.is_established
    return assoc


def fill(ingestor: Ingestor, studies: int) -> None:
    for number in range(studies):
        ds = small_instance(
            PATIENTS[number % len(PATIENTS)],
            study_uid=generate_uid(UID_ROOT),
            series_uid=generate_uid(UID_ROOT),
            instance_number=1,
        )
        assert ingestor.ingest(incoming(ds)).status == 0


def study_query(level: str = "STUDY") -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = level
    query.StudyInstanceUID = ""
    query.PatientName = ""
    return query


@pytest.mark.slow
def test_c_cancel_stops_the_matches(node: Node) -> None:
    # Enough matches that the node is still sending when the cancel arrives.
    fill(node.ingestor, 400)
    assoc = associate(node, StudyRootQueryRetrieveInformationModelFind)
    responses = assoc.send_c_find(
        study_query(), StudyRootQueryRetrieveInformationModelFind, msg_id=7
    )
    statuses = []
    for status, _identifier in responses:
        statuses.append(status.Status)
        if len(statuses) == 2:
            context_id = assoc._get_valid_context(
                StudyRootQueryRetrieveInformationModelFind, "", "scu"
            ).context_id
            assoc.send_c_cancel(7, context_id)
    assoc.release()
    assert statuses[-1] == 0xFE00, [hex(s) for s in statuses]
    assert len(statuses) < 400


def test_result_limit(tmp_path: Path) -> None:
    config: Config = make_config(tmp_path, max_find_results=3)
    with Node(config, web=False) as node:
        fill(node.ingestor, 5)
        assoc = associate(node, StudyRootQueryRetrieveInformationModelFind)
        statuses = [
            s.Status
            for s, _ in assoc.send_c_find(study_query(), StudyRootQueryRetrieveInformationModelFind)
        ]
        assoc.release()
    assert statuses == [0xFF00, 0xFF00, 0xFF00, 0x0000]


@pytest.mark.parametrize(
    ("model", "level"),
    [
        (StudyRootQueryRetrieveInformationModelFind, "PATIENT"),
        (PatientRootQueryRetrieveInformationModelFind, "FRAME"),
        (StudyRootQueryRetrieveInformationModelFind, ""),
    ],
)
def test_invalid_query_level_is_a_failure_with_comment(node: Node, model, level: str) -> None:
    assoc = associate(node, model)
    ((status, _),) = list(assoc.send_c_find(study_query(level), model))
    assoc.release()
    assert status.Status == 0xA900 and "level" in status.ErrorComment


def test_bad_range_is_a_failure_not_an_abort(node: Node) -> None:
    fill(node.ingestor, 1)
    query = study_query()
    query.StudyDate = "2026-"
    assoc = associate(node, StudyRootQueryRetrieveInformationModelFind, Verification)
    statuses = [
        s.Status for s, _ in assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)
    ]
    assert statuses == [0xA900]
    assert assoc.send_c_echo().Status == 0  # same association still works
    assoc.release()


def test_truncated_c_store_fails_cleanly_and_the_server_stays_up(
    node: Node, tmp_path: Path
) -> None:
    ds = small_instance(
        PATIENTS[0],
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
    )
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(buffer.getvalue()[:-1000])
    assoc = associate(node, UltrasoundImageStorage, Verification)
    # Send the file's bytes as they are, without pydicom re-encoding them.
    chunked = pynetdicom_config.STORE_SEND_CHUNKED_DATASET
    pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
    try:
        status = assoc.send_c_store(truncated)
    finally:
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET = chunked
    assert status.Status == 0xC001 and "truncated" in status.ErrorComment
    assert assoc.send_c_store(ds).Status == 0  # the next instance is fine
    assoc.release()
    assert node.archive.index.stats()["instances"] == 1
    again = associate(node, Verification)
    assert again.send_c_echo().Status == 0
    again.release()


@pytest.mark.slow
def test_concurrent_associations_store_everything(node: Node) -> None:
    per_sender, senders = 30, 4
    statuses: list[int] = []
    lock = threading.Lock()

    def sender(index: int) -> None:
        assoc = associate(node, UltrasoundImageStorage, ae_title=f"SENDER{index}")
        study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
        for number in range(per_sender):
            ds = small_instance(
                PATIENTS[index], study_uid=study, series_uid=series, instance_number=number + 1
            )
            result = assoc.send_c_store(ds).Status
            with lock:
                statuses.append(result)
        assoc.release()

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [0] * (per_sender * senders)
    stats = node.archive.index.stats()
    assert (stats["instances"], stats["studies"]) == (per_sender * senders, senders)


def test_a_non_conformant_uid_is_stored_and_never_logged(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    # Leading zeros: a sender that builds UIDs from an MRN and a birth date.
    uid = "1.2.643.0007150003.020190802.01"
    caplog.set_level(logging.DEBUG)
    ds = small_instance(
        PATIENTS[0],
        study_uid=generate_uid(UID_ROOT),
        series_uid=generate_uid(UID_ROOT),
        instance_number=1,
    )
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    assoc = associate(node, UltrasoundImageStorage)
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert node.archive.index.stats()["instances"] == 1
    assert uid not in caplog.text
    for part in ("0007150003", "020190802"):
        assert part not in caplog.text
    # The warning itself stays: a sender with non-conformant UIDs is worth knowing.
    assert "Non-conformant 'Affected SOP Instance UID' value (withheld)" in caplog.text
