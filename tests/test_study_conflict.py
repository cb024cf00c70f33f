"""One child per study (issue #15): a Study, Series or SOP Instance UID the
archive already holds for another child (issuer, PatientID) never joins or
overwrites that child's data, whatever the door (C-STORE, STOW-RS, import),
and however many node processes store at once. The second child's instance
is kept apart under UIDs of its own, consistently, with a B000 warning and an
audit record that names pseudonyms only."""

from __future__ import annotations

import multiprocessing
import random
import zipfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.script import ScriptDirectory
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind
from sqlalchemy import select
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ingest.importer import import_paths
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome
from dicomnode.jobs.export import Cohort, export
from dicomnode.node import Node, open_archive
from dicomnode.ops.admin import reidentify
from dicomnode.ops.samples import (
    PATIENTS,
    UID_ROOT,
    SyntheticPatient,
    demo_files,
    sample_file,
    save,
    small_instance,
    xa_instance,
)
from storage.archive import Archive
from storage.keys import Level
from storage.migrate import _config
from storage.query import Query
from storage.schema import instances, uid_owners
from tests.conftest import incoming, make_config
from tests.postgres import LocalPostgres
from tests.test_dicomweb import PASSWORD, part10, stow

WARNING = 0xB000
A, B = PATIENTS[0], PATIENTS[1]
BISHKEK = "NCC Bishkek"  # the issuer of BISHKEK_ECHO and BISHKEK_CATH


def xa(patient: SyntheticPatient, seed: int = 0, **uids: str) -> Dataset:
    """A tiny angio run of ``patient``; ``uids`` as xa_instance takes them."""
    return xa_instance(patient, frames=2, rows=16, cols=16, seed=seed, **uids)


def uid() -> str:
    return generate_uid(UID_ROOT)


def pseudonym(ingestor: Ingestor, patient: SyntheticPatient, issuer: str = BISHKEK) -> str:
    return ingestor.deidentify.secret.pseudonym(issuer, patient.patient_id)


def children_by_study(archive: Archive) -> dict[str, set[str]]:
    """Study UID -> every PatientID it holds: the index's patient of the
    study and the PatientID written in each stored file of it."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in archive.index.find(
        Query(level=Level.STUDY, keys={"StudyInstanceUID": "", "PatientID": ""})
    ):
        found[row["StudyInstanceUID"]].add(row["PatientID"])
    for path in archive.blobs.root.rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        found[str(ds.StudyInstanceUID)].add(str(ds.PatientID))
    return dict(found)


def stored(archive: Archive, original_sop: str, ingestor: Ingestor) -> bytes:
    blob = archive.read(ingestor.deidentify.secret.uid(original_sop))
    assert blob is not None
    return blob


def conflict_records(archive: Archive) -> list[dict]:
    return [r for r in archive.index.audit.rows() if r["event"] == "uid-conflict"]


def assert_no_identity(text_: str, *sent: Dataset) -> None:
    for ds in sent:
        for value in (ds.PatientID, str(ds.PatientName).split("^")[0], ds.StudyInstanceUID):
            assert str(value) not in text_
        assert str(ds.SeriesInstanceUID) not in text_ and str(ds.SOPInstanceUID) not in text_


def c_store(node: Node, ds: Dataset, calling: str = "BISHKEK_CATH") -> int:
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title=node.config.ae_title)
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def c_find_studies(node: Node) -> list[Dataset]:
    ae = AE(ae_title="BISHKEK_CATH")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
    assoc = ae.associate("127.0.0.1", node.dicom.port, ae_title=node.config.ae_title)
    assert assoc.is_established
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    query.PatientID = ""
    try:
        return [
            found
            for status, found in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind
            )
            if status and status.Status in (0xFF00, 0xFF01)
        ]
    finally:
        assoc.release()


# -- the three doors -----------------------------------------------------------


@pytest.mark.slow
def test_two_children_sharing_a_study_uid_by_c_store_stay_two_studies(
    node: Node, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    study = uid()
    first, second = xa(A, study_uid=study), xa(B, seed=1, study_uid=study)
    assert c_store(node, first) == 0x0000
    assert c_store(node, second) == WARNING  # stored, its UIDs coerced: the sender is told
    ingestor, archive = node.ingestor, node.archive
    by_study = children_by_study(archive)
    assert sorted(map(sorted, by_study.values())) == sorted(
        [[pseudonym(ingestor, A)], [pseudonym(ingestor, B)]]
    )
    # C-FIND never answers one study UID with two children.
    answers = c_find_studies(node)
    assert len(answers) == 2 and len({a.StudyInstanceUID for a in answers}) == 2
    assert {a.PatientID for a in answers} == {pseudonym(ingestor, A), pseudonym(ingestor, B)}
    # The first child's study is where it always was; the second's is its own.
    assert ingestor.deidentify.secret.uid(study) in by_study
    # Each child's identity opens from its own study.
    for study_uid, (who,) in by_study.items():
        (found,) = reidentify(node.config, archive, study_uid)
        child = A if who == pseudonym(ingestor, A) else B
        assert (found["patient_id"], found["study_instance_uid"]) == (child.patient_id, study)
    # Audited once, with pseudonyms and archive UIDs only; logs name nobody.
    (record,) = conflict_records(archive)
    assert pseudonym(ingestor, A) in record["detail"] and pseudonym(ingestor, B) in record["detail"]
    assert record["object"] in by_study and record["outcome"] != 0
    assert_no_identity(repr(record), first, second)
    assert_no_identity(caplog.text, first, second)


@pytest.fixture
def web(config: Config):
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        accounts = node.archive.index.accounts
        accounts.add("pacs", generate_password_hash(PASSWORD), "cardiologist", BISHKEK)
        yield node, f"http://127.0.0.1:{node.http_port}/dicom-web"


@pytest.mark.slow
def test_stow_of_another_childs_study_uid_is_a_warning_and_a_study_of_its_own(web) -> None:
    node, url = web
    study = uid()
    first, second = xa(A, study_uid=study), xa(B, seed=1, study_uid=study)
    assert stow(url, "pacs", part10(first)).status_code == 200
    answer = stow(url, "pacs", part10(second))
    assert answer.status_code == 202, answer.text
    (item,) = answer.json()["00081199"]["Value"]  # ReferencedSOPSequence
    assert item["00081196"]["Value"] == [WARNING]  # WarningReason
    assert "00081198" not in answer.json()  # nothing failed
    # QIDO-RS: two studies, one child each.
    studies = requests_json(url + "/studies")
    assert len(studies) == 2
    assert len({s["0020000D"]["Value"][0] for s in studies}) == 2
    assert len({s["00100020"]["Value"][0] for s in studies}) == 2
    assert all(len(who) == 1 for who in children_by_study(node.archive).values())


def requests_json(address: str) -> list[dict]:
    response = requests.get(address, auth=("pacs", PASSWORD), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.slow
def test_import_of_two_children_sharing_study_and_series_uids(
    ingestor: Ingestor, archive: Archive, tmp_path: Path
) -> None:
    study, series = uid(), uid()
    first = xa(A, study_uid=study, series_uid=series)
    second = xa(B, seed=1, study_uid=study, series_uid=series)
    save(first, tmp_path / "in" / "a.dcm")
    save(second, tmp_path / "in" / "b.dcm")
    summary = import_paths(ingestor, [tmp_path / "in"], issuer=BISHKEK, progress=False)
    assert summary.counts["stored"] == 2 and not summary.rejected
    assert summary.line().endswith("(1 kept apart: UIDs of another child's study)")
    by_study = children_by_study(archive)
    assert len(by_study) == 2 and all(len(who) == 1 for who in by_study.values())
    stats = archive.index.stats()
    assert (stats["patients"], stats["studies"], stats["series"]) == (2, 2, 2)


# -- series and instances ------------------------------------------------------


@pytest.mark.slow
def test_a_series_uid_of_another_child_becomes_a_series_of_its_own(
    ingestor: Ingestor, archive: Archive
) -> None:
    series = uid()
    first = xa(A, series_uid=series)
    second = xa(B, seed=1, series_uid=series)  # another study, the same series UID
    assert ingestor.ingest(incoming(first)).status == 0
    result = ingestor.ingest(incoming(second))
    assert (result.outcome, result.status) == (Outcome.STORED, WARNING)
    assert "series" in result.comment and "another patient" in result.comment
    rows = list(
        archive.index.find(
            Query(level=Level.SERIES, keys={"SeriesInstanceUID": "", "StudyInstanceUID": ""})
        )
    )
    assert len(rows) == 2 and len({r["SeriesInstanceUID"] for r in rows}) == 2
    assert all(len(who) == 1 for who in children_by_study(archive).values())


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["keep-first", "replace"])
@pytest.mark.parametrize("shared", ["sop", "sop+series+study"])
def test_a_sop_instance_uid_of_another_child_never_overwrites_it(
    tmp_path: Path, policy: str, shared: str
) -> None:
    """A careless sender re-using a template, or someone trying to replace a
    child's image: the first child's instance stays byte for byte, its copy
    count unchanged; the second child's is stored apart."""
    config = make_config(tmp_path, duplicates=policy)
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        first = xa(A)
        uids = {"sop_instance_uid": first.SOPInstanceUID}
        if shared != "sop":
            uids |= {"study_uid": first.StudyInstanceUID, "series_uid": first.SeriesInstanceUID}
        second = xa(B, seed=1, **uids)
        assert ingestor.ingest(incoming(first)).status == 0
        before = stored(archive, first.SOPInstanceUID, ingestor)
        result = ingestor.ingest(incoming(second))
        assert (result.outcome, result.status) == (Outcome.STORED, WARNING)
        assert stored(archive, first.SOPInstanceUID, ingestor) == before
        with archive.index.engine.connect() as conn:
            copies = conn.execute(select(instances.c.copies_received)).scalars().all()
        assert sorted(copies) == [1, 1]
        assert all(len(who) == 1 for who in children_by_study(archive).values())
        # The second child re-sending is its own duplicate (or replacement).
        again = ingestor.ingest(incoming(second))
        assert again.outcome is (Outcome.DUPLICATE if policy == "keep-first" else Outcome.REPLACED)
        assert stored(archive, first.SOPInstanceUID, ingestor) == before
        assert archive.index.stats()["instances"] == 2
        # The first child re-sending is still a plain duplicate of its own.
        assert ingestor.ingest(incoming(first)).status == 0
        assert stored(archive, first.SOPInstanceUID, ingestor) == before
    finally:
        archive.close()


def test_the_second_childs_later_instances_land_together_with_references_kept(
    ingestor: Ingestor, archive: Archive
) -> None:
    """All of the second child's instances of the shared study make one
    study, whichever of its UIDs collided; a reference to one of its own
    instances points at that instance as stored."""
    study, series = uid(), uid()
    first = xa(A, study_uid=study, series_uid=series)
    assert ingestor.ingest(incoming(first)).status == 0
    runs = [
        # re-uses the first child's series and SOP Instance UID as well
        xa(B, seed=1, study_uid=study, series_uid=series, sop_instance_uid=first.SOPInstanceUID),
        xa(B, seed=2, study_uid=study, series_uid=uid(), instance_number=2),
        xa(B, seed=3, study_uid=study, series_uid=series, instance_number=3),
    ]
    # The third run refers to the first two (as a derived image would).
    refs = []
    for run in runs[:2]:
        item = Dataset()
        item.ReferencedSOPClassUID = run.SOPClassUID
        item.ReferencedSOPInstanceUID = run.SOPInstanceUID
        refs.append(item)
    runs[2].ReferencedImageSequence = refs
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"  # Detached Study Management
    study_ref.ReferencedSOPInstanceUID = study
    runs[2].ReferencedStudySequence = [study_ref]
    results = [ingestor.ingest(incoming(run, calling_ae="BISHKEK_CATH")) for run in runs]
    assert [r.status for r in results] == [WARNING, WARNING, WARNING]
    assert ingestor.ingest(incoming(runs[1], calling_ae="BISHKEK_ECHO")).outcome is (
        Outcome.DUPLICATE
    )
    by_study = children_by_study(archive)
    assert len(by_study) == 2
    (own_study,) = [s for s, who in by_study.items() if who == {pseudonym(ingestor, B)}]
    files = {
        str(ds.SOPInstanceUID): ds
        for ds in (dcmread(p) for p in archive.blobs.root.rglob("*.dcm"))
        if str(ds.StudyInstanceUID) == own_study
    }
    assert len(files) == 3
    derived = next(ds for ds in files.values() if "ReferencedImageSequence" in ds)
    assert {str(i.ReferencedSOPInstanceUID) for i in derived.ReferencedImageSequence} <= set(files)
    assert derived.ReferencedStudySequence[0].ReferencedSOPInstanceUID == own_study
    assert len(conflict_records(archive)) == 3  # one per instance stored apart


@pytest.mark.parametrize(
    "other",
    [
        pytest.param({"PatientID": None}, id="no PatientID"),
        pytest.param({"PatientID": "UNKNOWN"}, id="placeholder PatientID"),
        pytest.param({"calling_ae": "DUSHANBE_ECHO"}, id="same ID, another hospital"),
    ],
)
def test_who_counts_as_another_child(ingestor: Ingestor, archive: Archive, other: dict) -> None:
    """An instance without a usable PatientID, or a PatientID from another
    hospital, is another patient: never merged into the study."""
    study = uid()
    assert ingestor.ingest(incoming(xa(A, study_uid=study))).status == 0
    second = xa(A, seed=1, study_uid=study)
    calling = other.get("calling_ae", "BISHKEK_ECHO")
    if "PatientID" in other:
        if other["PatientID"] is None:
            del second.PatientID
        else:
            second.PatientID = other["PatientID"]
    assert ingestor.ingest(incoming(second, calling_ae=calling)).status == WARNING
    by_study = children_by_study(archive)
    assert len(by_study) == 2 and all(len(who) == 1 for who in by_study.values())


# -- no PatientID to tell children apart ----------------------------------------

# Written for every child by devices that have no ID: none of these may make
# two children one patient (the reviewer's list, beyond storage's words).
NO_IDS = ["", None, "UNKNOWN", "X", "1", "9999", "PID", "0", "NONE", "N/A", "-", "123456"]


def without_id(ds: Dataset, patient_id: str | None) -> Dataset:
    if patient_id is None:
        del ds.PatientID
    else:
        ds.PatientID = patient_id
    return ds


def identities(config: Config, archive: Archive) -> dict[str, dict]:
    """Study UID -> the one identity sealed under it."""
    found = {}
    for study_uid in children_by_study(archive):
        (identity,) = reidentify(config, archive, study_uid)
        found[study_uid] = identity
    return found


@pytest.mark.slow
def test_three_children_without_patient_id_in_one_study_by_c_store(node: Node) -> None:
    """The reviewer's case: three children of one study UID, two sent with
    an empty PatientID and one with none. Never one patient (device sizing
    reads age, weight and sex; re-identification must name the right child):
    three studies, the second and third answered B000 and audited."""
    study = uid()
    sent = [
        without_id(xa(child, seed=n, study_uid=study), pid)
        for n, (child, pid) in enumerate(zip(PATIENTS[:3], ["", "", None], strict=True))
    ]
    assert [c_store(node, ds) for ds in sent] == [0x0000, WARNING, WARNING]
    by_study = children_by_study(node.archive)
    assert len(by_study) == 3 and all(len(who) == 1 for who in by_study.values())
    assert len({p for who in by_study.values() for p in who}) == 3
    assert node.archive.index.stats()["patients"] == 3
    names = {i["patient_name"] for i in identities(node.config, node.archive).values()}
    assert names == {str(child.name) for child in PATIENTS[:3]}
    assert len(conflict_records(node.archive)) == 2
    # Each child re-sent is its own duplicate (kept first), not a fourth patient.
    assert [c_store(node, ds) for ds in sent] == [0x0000] * 3
    assert node.archive.index.stats()["duplicates_received"] == 3
    assert node.archive.index.stats()["patients"] == 3


@pytest.mark.slow
@pytest.mark.parametrize("patient_id", NO_IDS)
def test_children_with_one_placeholder_id_never_merge(
    config: Config, ingestor: Ingestor, archive: Archive, patient_id: str | None
) -> None:
    """Two children sent with the same placeholder in one study, and a third
    with it in a study of its own: three patients, each study one child."""
    study = uid()
    first = without_id(xa(A, study_uid=study), patient_id)
    second = without_id(xa(B, seed=1, study_uid=study), patient_id)
    third = without_id(xa(PATIENTS[2], seed=2), patient_id)
    assert ingestor.ingest(incoming(first)).status == 0
    assert ingestor.ingest(incoming(second)).status == WARNING
    assert ingestor.ingest(incoming(third)).status == 0
    by_study = children_by_study(archive)
    assert len(by_study) == 3 and all(len(who) == 1 for who in by_study.values())
    assert archive.index.stats()["patients"] == 3
    for identity in identities(config, archive).values():
        (child,) = [c for c in (A, B, PATIENTS[2]) if str(c.name) == identity["patient_name"]]
        assert identity["birth_date"] == child.birth_date


def test_one_child_without_id_is_one_patient_per_study(
    ingestor: Ingestor, archive: Archive
) -> None:
    """The same child re-sent in its study by another device, its name and
    birth date written another way: one patient. Its next study is not
    linked on name and birth date alone (two children may share both)."""
    echo = without_id(xa(A), "")
    cath = without_id(xa(A, seed=1, study_uid=echo.StudyInstanceUID), None)
    cath.PatientName = str(A.name).upper().replace("^", " ")
    cath.PatientBirthDate = f"{A.birth_date[:4]}-{A.birth_date[4:6]}-{A.birth_date[6:]}"
    for ds in (echo, cath):
        assert ingestor.ingest(incoming(ds)).status == 0
    assert archive.index.stats()["patients"] == 1
    assert ingestor.ingest(incoming(without_id(xa(A, seed=2), "UNKNOWN"))).status == 0
    assert archive.index.stats()["patients"] == 2
    assert conflict_records(archive) == []


@pytest.mark.parametrize(
    "changed",
    [
        pytest.param({"PatientBirthDate": "20190101"}, id="another birth date"),
        pytest.param({"PatientSex": "F" if A.sex == "M" else "M"}, id="another sex"),
        pytest.param({"PatientName": "Other^Child"}, id="another name"),
        pytest.param({"PatientBirthDate": ""}, id="no birth date"),
    ],
)
def test_another_child_without_id_is_another_patient(
    ingestor: Ingestor, archive: Archive, changed: dict
) -> None:
    """Twins of one name and one birth date differ by sex; a missing birth
    date never matches a known one; nor does a name spelt otherwise."""
    study = uid()
    assert ingestor.ingest(incoming(without_id(xa(A, study_uid=study), ""))).status == 0
    other = without_id(xa(A, seed=1, study_uid=study), "")
    for keyword, value in changed.items():
        setattr(other, keyword, value)
    assert ingestor.ingest(incoming(other)).status == WARNING
    assert archive.index.stats()["patients"] == 2
    assert all(len(who) == 1 for who in children_by_study(archive).values())


@pytest.mark.parametrize(
    ("name", "birth"),
    [
        ("", A.birth_date),
        ("UNKNOWN", A.birth_date),
        ("Anonymized^Patient", ""),
        ("X", "19000101"),
        (None, None),
    ],
)
def test_nothing_to_tell_children_apart_is_held(
    config: Config, ingestor: Ingestor, archive: Archive, name: str | None, birth: str | None
) -> None:
    """No PatientID and no name: the node cannot tell one child from
    another, so each instance is held in quarantine, its own patient, with
    the reason, rather than merged."""
    study = uid()
    sent = []
    for n, child in enumerate((A, B)):
        ds = without_id(xa(child, seed=n, study_uid=study), "")
        for keyword, value in (("PatientName", name), ("PatientBirthDate", birth)):
            if value is None:
                del ds[keyword]
            else:
                setattr(ds, keyword, value)
        sent.append(ds)
    results = [ingestor.ingest(incoming(ds)) for ds in sent]
    assert [r.outcome for r in results] == [Outcome.QUARANTINED] * 2
    assert all(r.status == WARNING for r in results)
    assert all(r.comment.startswith("no patient identity to tell children apart") for r in results)
    held = archive.index.quarantined()
    assert len(held) == 2 and len({row["studyinstanceuid"] for row in held}) == 2
    assert archive.index.stats()["instances"] == 0
    reasons = [r["detail"] for r in archive.index.audit.rows() if r["event"] == "quarantine-hold"]
    assert len(reasons) == 2 and all("no patient identity" in r for r in reasons)
    # Re-sent: a duplicate of the held instance, never stored.
    assert ingestor.ingest(incoming(sent[0])).outcome is not Outcome.STORED
    assert archive.index.stats()["instances"] == 0 and len(archive.index.quarantined()) == 2
    # Clean pixels do not say who the child is: only a person's review releases.
    from dicomnode.ops.admin import release_quarantined

    assert not any(o.done for o in release_quarantined(config, archive))
    assert len(archive.index.quarantined()) == 2


# -- frames of reference -----------------------------------------------------------


def frames(archive: Archive) -> dict[str, set[str]]:
    """Stored FrameOfReferenceUID -> the pseudonyms whose files carry it."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in archive.blobs.root.rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        found[str(ds.FrameOfReferenceUID)].add(str(ds.PatientID))
        if "SynchronizationFrameOfReferenceUID" in ds:
            found[str(ds.SynchronizationFrameOfReferenceUID)].add(str(ds.PatientID))
    return dict(found)


@pytest.mark.parametrize("claimed", [True, False], ids=["claimed", "index from before"])
def test_a_kept_apart_child_shares_no_frame_of_reference(
    ingestor: Ingestor, archive: Archive, claimed: bool
) -> None:
    """Two children of one study UID and one frame of reference (and one
    synchronisation): their stored frames differ, so no calibration or
    registration links them; the second child's runs keep one frame."""
    study, frame, sync = uid(), uid(), uid()
    runs = [xa(A, study_uid=study), xa(B, seed=1, study_uid=study), xa(B, seed=2, study_uid=study)]
    for ds in runs:
        ds.FrameOfReferenceUID, ds.SynchronizationFrameOfReferenceUID = frame, sync
    assert ingestor.ingest(incoming(runs[0])).status == 0
    if not claimed:
        with archive.index.engine.begin() as conn:
            conn.execute(uid_owners.delete().where(uid_owners.c.level == "group"))
    assert [ingestor.ingest(incoming(ds)).status for ds in runs[1:]] == [WARNING, WARNING]
    found = frames(archive)
    assert len(found) == 4 and all(len(who) == 1 for who in found.values())


def test_children_in_two_studies_sharing_a_frame_uid_keep_their_own(
    ingestor: Ingestor, archive: Archive
) -> None:
    """A device writing one constant frame of reference into every study."""
    frame = uid()
    runs = [xa(A), xa(B, seed=1), xa(A, seed=2)]
    for ds in runs:
        ds.FrameOfReferenceUID = frame
    assert [ingestor.ingest(incoming(ds)).status for ds in runs] == [0, 0, 0]
    found = frames(archive)
    assert sorted(map(sorted, found.values())) == sorted(
        [[pseudonym(ingestor, A)], [pseudonym(ingestor, B)]]
    )


def test_one_child_from_two_devices_of_its_hospital_is_still_one_study(
    ingestor: Ingestor, archive: Archive
) -> None:
    """Not a conflict: the echo lab and the cath lab of one hospital send the
    same child's study (its name written differently)."""
    study = uid()
    echo = xa(A, study_uid=study)
    cath = xa(A, seed=1, study_uid=study)
    cath.PatientName = "IVANOV^ALISHER"
    assert ingestor.ingest(incoming(echo, calling_ae="BISHKEK_ECHO")).status == 0
    assert ingestor.ingest(incoming(cath, calling_ae="BISHKEK_CATH")).status == 0
    assert list(children_by_study(archive).values()) == [{pseudonym(ingestor, A)}]
    assert conflict_records(archive) == []


def test_a_held_instance_owns_its_study_too(ingestor: Ingestor, archive: Archive) -> None:
    """The first child's instance is in quarantine (invisible to queries):
    the second child's still does not join its study."""
    study = uid()
    held = small_instance(A, study_uid=study, series_uid=uid(), instance_number=1)
    del held.SequenceOfUltrasoundRegions  # no region: held for review
    assert ingestor.ingest(incoming(held)).outcome is Outcome.QUARANTINED
    result = ingestor.ingest(incoming(xa(B, study_uid=study)))
    assert (result.outcome, result.status) == (Outcome.STORED, WARNING)
    (row,) = archive.index.quarantined()
    (found,) = children_by_study(archive).items()
    assert found[0] != row["studyinstanceuid"] and found[1] == {pseudonym(ingestor, B)}


@pytest.mark.slow
def test_an_index_from_before_is_claimed_on_upgrade(any_index_config: Config) -> None:
    """Studies stored or held before this revision own their UIDs after it."""
    config = any_index_config
    archive = open_archive(config)
    study, held_study = uid(), uid()
    held = small_instance(A, study_uid=held_study, series_uid=uid(), instance_number=1)
    del held.SequenceOfUltrasoundRegions  # no region: held for review
    try:
        ingestor = Ingestor(config, archive)
        assert ingestor.ingest(incoming(xa(A, study_uid=study))).status == 0
        assert ingestor.ingest(incoming(held)).outcome is Outcome.QUARANTINED
        before = ScriptDirectory.from_config(_config(None)).get_revision("0009").down_revision
        with archive.index.engine.begin() as conn:
            command.downgrade(_config(conn), str(before))
    finally:
        archive.close()
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        for shared in (study, held_study):
            assert ingestor.ingest(incoming(xa(B, study_uid=shared))).status == WARNING
        assert all(len(who) == 1 for who in children_by_study(archive).values())
    finally:
        archive.close()


# -- two processes at once -----------------------------------------------------


def _ingest_in_order(config: Config, paths: list[str], seed: int, barrier, out) -> None:
    """One node process: its own archive and ingestor, all files in its order."""
    from dicomnode.ingest.importer import split_file

    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        order = random.Random(seed).sample(paths, len(paths))
        barrier.wait(timeout=120)
        for path in order:
            data, syntax = split_file(Path(path).read_bytes())
            result = ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_CATH"))
            out.put(result.status)
    finally:
        archive.close()


@pytest.mark.slow
def test_two_processes_storing_children_of_one_study_uid_at_once(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """Four children, one study and series UID (a modality's broken UID
    generator), three runs each, one of them even with another child's SOP
    Instance UID: two processes store everything at once, in different
    orders. Four studies, each one child's; every run stored once, counted
    twice; each child's identity behind its own study."""
    config = make_config(tmp_path, index_url=postgres.database())
    study, series = uid(), uid()
    children = PATIENTS[:4]
    borrowed = uid()  # the first child's first run, and the fourth child's too
    paths = []
    for n, child in enumerate(children):
        for run in range(3):
            sop = borrowed if run == 0 and n in (0, 3) else uid()
            ds = xa(
                child, seed=n * 3 + run, study_uid=study, series_uid=series, sop_instance_uid=sop
            )
            paths.append(str(save(ds, tmp_path / "in" / f"{n}-{run}.dcm")))
    open_archive(config).close()  # migrated and keys made before the race
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    workers = [
        context.Process(target=_ingest_in_order, args=(config, paths, seed, barrier, out))
        for seed in (1, 2)
    ]
    for worker in workers:
        worker.start()
    statuses = [out.get(timeout=300) for _ in range(2 * len(paths))]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert set(statuses) <= {0x0000, WARNING}, [hex(s) for s in statuses]
    archive = open_archive(config)
    try:
        ingestor = Ingestor(config, archive)
        stats = archive.index.stats()
        assert (stats["patients"], stats["studies"], stats["series"]) == (4, 4, 4)
        assert (stats["instances"], stats["duplicates_received"]) == (12, 12)
        by_study = children_by_study(archive)
        assert sorted(p for who in by_study.values() for p in who) == sorted(
            pseudonym(ingestor, c) for c in children
        )
        for study_uid, (who,) in by_study.items():
            (found,) = reidentify(config, archive, study_uid)
            child = next(c for c in children if c.patient_id == found["patient_id"])
            assert found["pseudonym"] == who == pseudonym(ingestor, child)
    finally:
        archive.close()


# -- the demo set ----------------------------------------------------------------


@pytest.mark.slow
def test_the_demo_set_has_one_child_per_study_and_exports_consistently(
    config: Config, ingestor: Ingestor, archive: Archive, tmp_path: Path
) -> None:
    """The sample wheels' GREYSCALE_IMAGE and GREYSCALE_CINE share a study
    and a series UID but name two patients: two studies, and the export's
    patient folders are the manifest's patients."""
    image = dcmread(sample_file("ultrasounds/GREYSCALE_IMAGE.dcm"), stop_before_pixels=True)
    with demo_files() as paths:
        shared = [
            p
            for p in paths
            if dcmread(p, stop_before_pixels=True).StudyInstanceUID == image.StudyInstanceUID
        ]
        assert len({str(dcmread(p, stop_before_pixels=True).PatientID) for p in shared}) == 2
        summary = import_paths(ingestor, paths, issuer="DEMO", progress=False)
    assert not summary.rejected
    by_study = children_by_study(archive)
    assert all(len(who) == 1 for who in by_study.values()), by_study
    assert len(conflict_records(archive)) >= 1
    out = tmp_path / "demo.zip"
    result = export(config, archive, Cohort(), out, progress=False)
    with zipfile.ZipFile(out) as package:
        package.extractall(tmp_path / "x")
        manifest = package.read("manifest.json").decode()
    fileset = FileSet(dcmread(tmp_path / "x" / "DICOMDIR"))
    folders = {str(item.PatientID) for item in fileset}
    assert folders == {row["patient"] for row in result.manifest}, manifest
    studies = defaultdict(set)
    for item in fileset:
        ds = item.load()
        studies[str(ds.StudyInstanceUID)].add(str(ds.PatientID))
    assert all(len(who) == 1 for who in studies.values())


def test_a_uid_claimed_between_the_look_and_the_store_is_still_kept_apart(
    ingestor: Ingestor, archive: Archive, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest looks who holds an instance's new UIDs and, when nobody
    does, claims them in the store's own transaction (one transaction, not
    two). Another patient's instance claiming the study in between (made
    here by a look that sees nothing) must not merge the children: the
    store finds the claim, writes nothing, and the instance is done again,
    claiming first, and kept apart."""
    study = uid()
    first = ingestor.ingest(incoming(xa(A, study_uid=study), calling_ae="BISHKEK_CATH"))
    assert first.status == 0
    monkeypatch.setattr(type(archive.index), "uid_owners", lambda self, uids: {})
    second = ingestor.ingest(incoming(xa(B, seed=1, study_uid=study), calling_ae="BISHKEK_CATH"))
    assert second.status == WARNING, second.comment
    assert second.comment.startswith("study UID is another patient's")
    for children in children_by_study(archive).values():
        assert len(children) == 1, children
    assert len(conflict_records(archive)) == 1


def test_uids_nobody_holds_are_claimed_with_the_instance(
    ingestor: Ingestor, archive: Archive
) -> None:
    """The common case, one transaction: after the store, the instance's
    study, series and SOP Instance UIDs are its patient's in uid_owners."""
    ds = xa(A, study_uid=uid())
    result = ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH"))
    assert result.status == 0
    stored_ds = result.dataset
    assert stored_ds is not None
    mine = pseudonym(ingestor, A)
    with archive.index.engine.connect() as conn:
        owners = dict(conn.execute(select(uid_owners.c.uid, uid_owners.c.pseudonym)).all())
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        assert owners[str(stored_ds[keyword].value)] == mine, keyword
