"""DICOMweb with dicomweb-client, the Python client OHIF's people use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import dcmread
from pydicom.encaps import generate_frames
from pydicom.uid import generate_uid
from pynetdicom import AE
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance

PASSWORD = "correct horse battery"


@pytest.fixture
def web(config: Config) -> Iterator[tuple[Node, DICOMwebClient, str]]:
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        accounts = node.archive.index.accounts
        accounts.add("pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek")
        url = f"http://127.0.0.1:{node.http_port}/dicom-web"
        session = create_session_from_user_pass("pacs", PASSWORD)
        yield node, DICOMwebClient(url=url, session=session), url


def test_stow_qido_wado_round_trip(web) -> None:
    node, client, _ = web
    study = generate_uid(UID_ROOT)
    sent = [
        xa_instance(
            PATIENTS[1], frames=3, rows=32, cols=32, study_uid=study, seed=s, instance_number=s + 1
        )
        for s in range(2)
    ]
    answer = client.store_instances(sent)
    assert len(answer.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in answer
    # Stored de-identified, through the same ingest as C-STORE.
    (found,) = client.search_for_studies()
    pseudonym = found["00100020"]["Value"][0]
    assert pseudonym.startswith("CHD-") and PATIENTS[1].patient_id not in str(found)
    assert client.search_for_studies(search_filters={"PatientID": pseudonym})
    assert client.search_for_studies(search_filters={"PatientID": "CHD-0000-0000"}) == []
    new_study = found["0020000D"]["Value"][0]
    series = client.search_for_series(new_study)
    assert {s["00080060"]["Value"][0] for s in series} == {"XA"}
    instances = client.search_for_instances(new_study, series[0]["0020000E"]["Value"][0])
    first = instances[0]
    uid = first["00080018"]["Value"][0]
    retrieved = client.retrieve_instance(new_study, first["0020000E"]["Value"][0], uid)
    stored = dcmread(BytesIO(node.archive.read(uid)))
    assert retrieved.SOPInstanceUID == uid and retrieved.PixelData == stored.PixelData
    assert len(client.retrieve_study(new_study)) == 2
    series_uid = first["0020000E"]["Value"][0]
    (frame,) = client.retrieve_instance_frames(new_study, series_uid, uid, frame_numbers=[2])
    assert frame == list(generate_frames(stored.PixelData, number_of_frames=3))[1]  # as stored
    rendered = client.retrieve_instance_rendered(
        new_study, series_uid, uid, media_types=("image/png",)
    )
    assert rendered[:8] == b"\x89PNG\r\n\x1a\n"
    metadata = client.retrieve_instance_metadata(new_study, first["0020000E"]["Value"][0], uid)
    assert "BulkDataURI" in metadata["7FE00010"]


def part10(ds) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow(url: str, user: str, *parts: bytes) -> requests.Response:
    """POST /studies with these payloads, by HTTP Basic as ``user``."""
    boundary = "b0undary"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            for data in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    return requests.post(
        f"{url}/studies",
        data=body,
        auth=(user, PASSWORD),
        timeout=30,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'
        },
    )


@pytest.mark.slow
def test_stow_reports_failures_per_instance(web) -> None:
    node, _, url = web
    good = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16)
    bad = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16)
    bad.SOPInstanceUID = "1.2.3/../../x"  # a UID that could become a path
    response = stow(url, "pacs", part10(good), part10(bad), b"not DICOM at all")
    assert response.status_code == 202, response.text
    answer = response.json()
    assert len(answer["00081199"]["Value"]) == 1  # ReferencedSOPSequence
    reasons = [f["00081197"]["Value"] for f in answer["00081198"]["Value"]]  # FailedSOPSequence
    assert reasons == [[0xC002], [0xC000]]
    assert node.archive.index.stats()["instances"] == 1
    # The upload is in the audit trail under the account that made it.
    (record,) = [r for r in node.archive.index.audit.rows() if r["event"] == "stow"]
    assert (record["user"], record["detail"]) == ("pacs", "1 stored, 2 failed")


def test_dicomweb_needs_a_user(web) -> None:
    _, _, url = web
    assert requests.get(f"{url}/studies", timeout=10).status_code == 401
    wrong = requests.get(f"{url}/studies", auth=("pacs", "nope"), timeout=10)
    assert wrong.status_code == 401 and "Basic" in wrong.headers["WWW-Authenticate"]


@pytest.mark.slow
def test_a_remembered_basic_login_ends_with_a_password_change_or_disable(web) -> None:
    node, _, url = web
    accounts = node.archive.index.accounts
    for _ in range(2):  # the second answer comes from the remembered check
        assert requests.get(f"{url}/studies", auth=("pacs", PASSWORD), timeout=10).ok
    accounts.update("pacs", password_hash=generate_password_hash("another long passphrase"))
    assert requests.get(f"{url}/studies", auth=("pacs", PASSWORD), timeout=10).status_code == 401
    new = ("pacs", "another long passphrase")
    assert requests.get(f"{url}/studies", auth=new, timeout=10).ok
    accounts.update("pacs", disabled=True)
    assert requests.get(f"{url}/studies", auth=new, timeout=10).status_code == 401


@pytest.mark.slow
def test_one_child_by_c_store_and_by_stow_from_one_hospital_is_one_patient(web) -> None:
    """BISHKEK_CATH's [[remote_ae]] issuer and the account's are both "NCC
    Bishkek": an angio sent by the cath lab and an echo-lab upload of the
    same child (same PatientID, another study) meet under one pseudonym."""
    node, client, url = web
    by_dimse = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16)
    by_stow = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16, seed=1)
    assert by_dimse.StudyInstanceUID != by_stow.StudyInstanceUID
    ae = AE(ae_title="BISHKEK_CATH")
    ae.add_requested_context(by_dimse.SOPClassUID, by_dimse.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title=node.config.ae_title)
    assert assoc.is_established
    try:
        assert assoc.send_c_store(by_dimse).Status == 0
    finally:
        assoc.release()
    assert stow(url, "pacs", part10(by_stow)).status_code == 200
    studies = client.search_for_studies()
    assert len(studies) == 2
    (pseudonym,) = {study["00100020"]["Value"][0] for study in studies}
    assert pseudonym.startswith("CHD-") and node.archive.index.stats()["patients"] == 1
    # The same PatientID from another hospital's account stays another child.
    accounts = node.archive.index.accounts
    accounts.add("dushanbe", generate_password_hash(PASSWORD), "cardiologist", "RCC Dushanbe")
    other = xa_instance(PATIENTS[0], frames=2, rows=16, cols=16, seed=2)
    assert stow(url, "dushanbe", part10(other)).status_code == 200
    assert node.archive.index.stats()["patients"] == 2


@pytest.mark.slow
def test_stow_by_an_account_without_a_hospital_is_refused(web) -> None:
    node, _, url = web
    accounts = node.archive.index.accounts
    accounts.add("visitor", generate_password_hash(PASSWORD), "cardiologist")
    upload = part10(xa_instance(PATIENTS[1], frames=2, rows=16, cols=16))
    refused = stow(url, "visitor", upload)
    assert refused.status_code == 403
    message = refused.json()["message"]
    assert "\n" not in message and "has no hospital (issuer)" in message
    assert 'dicomnode user issuer visitor --issuer "Hospital name"' in message
    assert node.archive.index.stats()["instances"] == 0  # nothing stored
    (denied,) = [r for r in node.archive.index.audit.rows() if r["event"] == "access-denied"]
    assert (denied["user"], denied["outcome"]) == ("visitor", 4)
    # Still a viewer; once an administrator sets the hospital, uploads go in.
    assert requests.get(f"{url}/studies", auth=("visitor", PASSWORD), timeout=10).ok
    accounts.update("visitor", issuer="NCC Bishkek")
    assert stow(url, "visitor", upload).status_code == 200
    assert node.archive.index.stats()["instances"] == 1
