"""STOW-RS by the letter (PS3.18 §10.5, Annex I): the answer names what the
node stored (de-identified UIDs, RetrieveURL), warns that de-identification
coerced attributes (B000, by tag only), never echoes what identified the
child (not even the sender's UIDs), and ``POST /studies/{study}`` stores into
one of the node's studies only what de-identifies into it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO

import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, UID_ROOT, xa_instance
from storage.keys import Level
from storage.query import Query

PASSWORD = "correct horse battery"
COERCION = 0xB000
DIFFERENT_STUDY = 0xC409
# The node's private block in answer items (see viewer.dicomweb.stowrs).
PART, REPLACED, REMOVED, ADDED, STATUS = "00091001", "00091002", "00091003", "00091004", "00091005"


@pytest.fixture
def web(config: Config) -> Iterator[tuple[Node, str]]:
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        accounts = node.archive.index.accounts
        accounts.add("pacs", generate_password_hash(PASSWORD), "cardiologist", "NCC Bishkek")
        accounts.add("dushanbe", generate_password_hash(PASSWORD), "cardiologist", "RCC Dushanbe")
        accounts.add("visitor", generate_password_hash(PASSWORD), "cardiologist")
        yield node, f"http://127.0.0.1:{node.http_port}/dicom-web"


def client(url: str, user: str = "pacs") -> DICOMwebClient:
    return DICOMwebClient(url=url, session=create_session_from_user_pass(user, PASSWORD))


def part10(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def stow(url: str, *parts: bytes, study: str = "", user: str = "pacs") -> requests.Response:
    """A raw STOW-RS request, one part per payload, by HTTP Basic."""
    boundary = "8f1e2d"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
            for data in parts
        )
        + f"--{boundary}--\r\n".encode()
    )
    target = f"{url}/studies" + (f"/{study}" if study else "")
    return requests.post(
        target,
        data=body,
        auth=(user, PASSWORD),
        timeout=60,
        headers={
            "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
            "Accept": "application/dicom+json",
        },
    )


def instance(patient: int = 1, study: str | None = None, seed: int = 0) -> Dataset:
    return xa_instance(
        PATIENTS[patient], frames=2, rows=16, cols=16, study_uid=study, seed=seed,
        instance_number=seed + 1,
    )  # fmt: skip


def identity_of(*sent: Dataset) -> list[str]:
    """Everything of the sent instances that names the child or the sender's
    instances: no answer may contain any of it."""
    words: list[str] = []
    for ds in sent:
        words += [str(ds.PatientID), str(ds.PatientBirthDate)]
        words += [w for w in str(ds.PatientName).replace("=", "^").split("^") if w]
        words += [str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)]
        if ds.get("AccessionNumber"):
            words.append(str(ds.AccessionNumber))
    return words


def stored_uids(node: Node, level: Level = Level.IMAGE) -> set[str]:
    key = {Level.IMAGE: "SOPInstanceUID", Level.STUDY: "StudyInstanceUID"}[level]
    return {r[key] for r in node.archive.index.find(Query(level=level, keys={key: ""}))}


def coerced(item: dict) -> set[str]:
    return {tag for key in (REPLACED, REMOVED, ADDED) for tag in item.get(key, {}).get("Value", [])}


@pytest.mark.slow
def test_answer_names_the_stored_instances_and_they_resolve(web) -> None:
    """dicomweb-client at its defaults: the answer's UIDs are the archive's,
    each RetrieveURL answers with the same credentials, B000 lists the
    coerced attributes, and nothing of the child or its UIDs comes back."""
    node, url = web
    study = generate_uid(UID_ROOT)
    sent = [instance(1, study, seed) for seed in range(2)]
    answer = client(url).store_instances(sent)
    items = answer.ReferencedSOPSequence
    assert len(items) == 2 and "FailedSOPSequence" not in answer
    held = stored_uids(node)
    assert {str(i.ReferencedSOPInstanceUID) for i in items} == held
    assert not held & {str(ds.SOPInstanceUID) for ds in sent}
    (new_study,) = stored_uids(node, Level.STUDY)
    assert answer.RetrieveURL == f"{url}/studies/{new_study}"
    for item in items:
        assert item.WarningReason == COERCION
        assert item.ReferencedSOPClassUID == sent[0].SOPClassUID
        assert item.RetrieveURL.startswith(f"{url}/studies/{new_study}/series/")
        assert item.RetrieveURL.endswith(f"/instances/{item.ReferencedSOPInstanceUID}")
        got = requests.get(
            item.RetrieveURL,
            auth=("pacs", PASSWORD),
            timeout=30,
            headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
        )
        assert got.status_code == 200, got.text
        assert str(item.ReferencedSOPInstanceUID).encode() in got.content
        assert PATIENTS[1].patient_id.encode() not in got.content
    # Which of its instances became which: by the order of the body's parts.
    assert [int(i[0x00091001].value) for i in items] == [1, 2]
    by_number = {int(i[0x00091001].value): str(i.ReferencedSOPInstanceUID) for i in items}
    for number, ds in enumerate(sent, 1):
        stored = dcmread(BytesIO(node.archive.read(by_number[number])))
        assert stored.InstanceNumber == ds.InstanceNumber and stored.PixelData == ds.PixelData


@pytest.mark.slow
def test_coercion_is_told_by_tag_and_no_original_value_comes_back(web) -> None:
    _node, url = web
    sent = [instance(0, seed=0), instance(0, seed=1)]
    sent[1].AccessionNumber = "ACC-77123"
    sent[1].InstitutionName = "Bishkek National Centre"
    response = stow(url, *(part10(ds) for ds in sent))
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/dicom+json")
    body = response.text
    for word in identity_of(*sent):
        assert word not in body, f"{word!r} of the sent instance is echoed"
    items = response.json()["00081199"]["Value"]
    for item in items:
        assert item["00081196"]["Value"] == [COERCION]
        told = coerced(item)
        # Identity, dates and UIDs replaced; the node's de-identification marks added.
        for tag in ("00100010", "00100020", "00100030", "0020000D", "0020000E", "00080018"):
            assert tag in told, tag
        assert "00120062" in told  # PatientIdentityRemoved
        assert item[REPLACED]["vr"] == "AT"
    assert "00080050" in coerced(items[1])  # the accession number


@pytest.mark.slow
def test_unreadable_parts_fail_by_number_without_their_uids(web) -> None:
    node, url = web
    good = instance(1, seed=3)
    bad_uid = instance(1, seed=4)
    bad_uid.SOPInstanceUID = "1.2.3/../../x"
    private_class = instance(1, seed=5)
    private_class.SOPClassUID = "1.2.643.7.11.1914.3"  # a vendor's, naming the hospital's root
    parts = (part10(good), b"not DICOM at all", part10(bad_uid), part10(private_class))
    response = stow(url, *parts)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert [i[PART]["Value"] for i in answer["00081199"]["Value"]] == [[1]]
    failed = answer["00081198"]["Value"]
    assert [(f[PART]["Value"], f["00081197"]["Value"]) for f in failed] == [
        ([2], [0xC000]),
        ([3], [0xC002]),
        ([4], [0xC004]),
    ]
    for word in ("1.2.3/../../x", "1.2.643.7.11.1914.3", *identity_of(good, private_class)):
        assert word not in response.text
    assert len(stored_uids(node)) == 1


@pytest.mark.slow
def test_all_unreadable_is_bad_syntax(web) -> None:
    node, url = web
    response = stow(url, b"not DICOM", b"nor this")
    assert response.status_code == 400, response.text
    assert len(response.json()["00081198"]["Value"]) == 2
    assert not stored_uids(node)


@pytest.mark.slow
def test_store_into_a_study_stores_its_instances_and_refuses_the_rest(web) -> None:
    """POST /studies/{study}: {study} is the node's (de-identified) study;
    a part that de-identifies into it is stored, one that does not fails
    with its own reason and is not stored, whatever else the request holds."""
    node, url = web
    study = generate_uid(UID_ROOT)
    first = instance(1, study, seed=0)
    assert stow(url, part10(first)).status_code == 200
    (new_study,) = stored_uids(node, Level.STUDY)
    before = stored_uids(node)
    same = instance(1, study, seed=1)  # another run of the same study
    other = instance(1, None, seed=2)  # the same child, another study
    stranger = instance(3, study, seed=3)  # another child under the same study UID
    response = stow(url, part10(same), part10(other), part10(stranger), study=new_study)
    assert response.status_code == 202, response.text
    answer = response.json()
    (stored,) = answer["00081199"]["Value"]
    assert stored[PART]["Value"] == [1]
    assert answer["00081190"]["Value"] == [f"{url}/studies/{new_study}"]
    reasons = [(f[PART]["Value"], f["00081197"]["Value"]) for f in answer["00081198"]["Value"]]
    assert reasons == [([2], [DIFFERENT_STUDY]), ([3], [DIFFERENT_STUDY])]
    after = stored_uids(node)
    assert after - before == {stored["00081155"]["Value"][0]}
    assert stored_uids(node, Level.STUDY) == {new_study}
    assert node.archive.index.stats()["patients"] == 1
    for word in identity_of(same, other, stranger):
        assert word not in response.text
    # Nothing that belongs: a conflict, nothing stored.
    refused = stow(url, part10(instance(1, None, seed=5)), study=new_study)
    assert refused.status_code == 409, refused.text
    assert stored_uids(node) == after


@pytest.mark.slow
def test_store_into_a_study_the_node_does_not_hold(web) -> None:
    """The sender's own study UID is not a study of the node (it holds
    de-identified ones only): 404, with how to store, and nothing stored."""
    node, url = web
    sent = instance(1, seed=0)
    response = stow(url, part10(sent), study=str(sent.StudyInstanceUID))
    assert response.status_code == 404, response.text  # the scope's answer: not its study
    assert str(sent.StudyInstanceUID) not in response.text
    node.archive.index.accounts.update("pacs", sees=None)  # sees every hospital's
    response = stow(url, part10(sent), study=str(sent.StudyInstanceUID))
    assert response.status_code == 404, response.text
    assert "POST to /dicom-web/studies" in response.json()["message"]
    assert str(sent.StudyInstanceUID) not in response.text
    assert not stored_uids(node)


@pytest.mark.slow
def test_store_into_another_hospitals_study_is_refused(web) -> None:
    node, url = web
    study = generate_uid(UID_ROOT)
    assert stow(url, part10(instance(1, study)), user="pacs").status_code == 200
    (theirs,) = stored_uids(node, Level.STUDY)
    # Dushanbe sees its own patients only: the study is not there for it.
    same_uid = instance(1, study, seed=1)
    assert stow(url, part10(same_uid), study=theirs, user="dushanbe").status_code == 404
    # Seeing every hospital does not make another hospital's study its own.
    node.archive.index.accounts.update("dushanbe", sees=None)
    refused = stow(url, part10(same_uid), study=theirs, user="dushanbe")
    assert refused.status_code == 403, refused.text
    assert len(stored_uids(node)) == 1


@pytest.mark.slow
def test_store_into_a_study_without_a_hospital_is_refused(web) -> None:
    node, url = web
    study = generate_uid(UID_ROOT)
    assert stow(url, part10(instance(1, study))).status_code == 200
    (theirs,) = stored_uids(node, Level.STUDY)
    refused = stow(url, part10(instance(1, study, seed=1)), study=theirs, user="visitor")
    assert refused.status_code == 403 and "has no hospital" in refused.json()["message"]
    assert len(stored_uids(node)) == 1


@pytest.mark.slow
def test_held_for_review_stays_distinguishable(web) -> None:
    """An instance nothing tells apart from another child is held: B000 as
    before, but nothing to retrieve (RetrieveURL empty) and said so."""
    _node, url = web
    anonymous = instance(1, seed=0)
    anonymous.PatientID = ""
    anonymous.PatientName = ""
    response = stow(url, part10(anonymous), part10(instance(1, seed=1)))
    assert response.status_code == 202, response.text
    held, kept = response.json()["00081199"]["Value"]
    assert held["00081196"]["Value"] == [COERCION] == kept["00081196"]["Value"]
    assert "Value" not in held["00081190"] and kept["00081190"]["Value"]
    assert held[STATUS]["Value"] == ["held for review"]
    assert str(anonymous.SOPInstanceUID) not in response.text


@pytest.mark.slow
def test_a_resent_instance_is_named_as_held(web) -> None:
    """Sent again (a sender retrying): the answer names the instance the
    node already holds, retrievable, with the same coercion warning."""
    node, url = web
    sent = instance(1, seed=0)
    first = stow(url, part10(sent)).json()["00081199"]["Value"][0]
    again = stow(url, part10(sent))
    assert again.status_code == 200, again.text
    (item,) = again.json()["00081199"]["Value"]
    assert item["00081155"] == first["00081155"] and item["00081190"] == first["00081190"]
    assert item["00081196"]["Value"] == [COERCION] and "00100010" in coerced(item)
    assert len(stored_uids(node)) == 1
    got = requests.get(item["00081190"]["Value"][0], auth=("pacs", PASSWORD), timeout=30)
    assert got.status_code == 200
    for word in identity_of(sent):
        assert word not in again.text


def test_store_into_a_study_takes_stow_sized_bodies(web) -> None:
    """An echo or angio run is larger than a form: POST /studies/{study}
    has STOW-RS's body bound, not the form limit (1 MiB)."""
    node, url = web
    study, series = generate_uid(UID_ROOT), generate_uid(UID_ROOT)
    run = {"study_uid": study, "series_uid": series, "rows": 256, "cols": 512}
    first = xa_instance(PATIENTS[1], frames=2, **run)
    assert stow(url, part10(first)).status_code == 200
    (new_study,) = stored_uids(node, Level.STUDY)
    big = xa_instance(
        PATIENTS[1], frames=12, transfer_syntax=ExplicitVRLittleEndian, seed=1,
        instance_number=2, **run,
    )  # fmt: skip
    data = part10(big)
    assert len(data) > node.config.http_max_form_kb * 1024
    response = stow(url, data, study=new_study)
    assert response.status_code == 200, response.text[:300]
    assert len(stored_uids(node)) == 2
