"""Research export: a package that loads as a file set and names nobody."""

from __future__ import annotations

import csv
import io
import os
import socket
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.fileset import FileSet

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor, Outcome
from dicomnode.jobs.export import (
    Cohort,
    ExportBlocked,
    ExportCancelled,
    age_years,
    export,
    preview,
)
from dicomnode.ops.samples import PATIENTS, SyntheticPatient, xa_instance
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query
from tests.conftest import dcmtk, incoming
from tests.test_ingest import instance
from tests.test_jobs import export_runner, finished
from tests.test_written_files import errors


@pytest.fixture
def cohort_archive(ingestor: Ingestor, archive: Archive) -> Archive:
    echo = instance(PATIENTS[0], AccessionNumber="ACC-31", PatientAge="004Y")
    angio = xa_instance(PATIENTS[1], frames=4, rows=64, cols=64)
    angio.PatientAge = "018M"
    assert ingestor.ingest(incoming(echo, calling_ae="BISHKEK_ECHO")).outcome is Outcome.STORED
    assert ingestor.ingest(incoming(angio, calling_ae="DUSHANBE_ECHO")).outcome is Outcome.STORED
    return archive


def unpack(package: Path, into: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(package) as zipped:
        zipped.extractall(into)
        return {name: zipped.read(name) for name in zipped.namelist()}


def test_export_is_a_file_set_with_manifest_and_no_identity(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    out = tmp_path / "cohort.zip"
    result = export(config, cohort_archive, Cohort(), out, progress=False)
    assert (result.studies, result.instances) == (2, 2)
    files = unpack(out, tmp_path / "x")
    assert {"DICOMDIR", "manifest.csv", "manifest.json", "README.txt"} <= set(files)
    fileset = FileSet(dcmread(tmp_path / "x" / "DICOMDIR"))
    assert len(fileset) == 2
    assert dcmtk("dcmdump", tmp_path / "x" / "DICOMDIR").returncode == 0
    rows = list(csv.DictReader(io.StringIO(files["manifest.csv"].decode())))
    exported_ids = {str(i.load().PatientID) for i in fileset}
    assert {r["patient"] for r in rows} == exported_ids
    assert {r["modalities"] for r in rows} == {"US", "XA"}
    archive_ids = {
        s["PatientID"]
        for s in cohort_archive.index.find(Query(level=Level.STUDY, keys={"PatientID": ""}))
    }
    assert not exported_ids & archive_ids
    everything = b"".join(files.values())
    for patient in PATIENTS[:2]:
        assert patient.patient_id.encode() not in everything
        family = patient.name.split("^")[0]
        assert family.encode("utf-8") not in everything
    for pseudonym in archive_ids:
        assert pseudonym.encode() not in everything
    assert cohort_archive.index.audit.rows(limit=1)[0]["event"] == "export"


@pytest.mark.slow
def test_two_exports_cannot_be_joined_and_filters_select(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    first, second = tmp_path / "a.zip", tmp_path / "b.zip"
    export(config, cohort_archive, Cohort(), first, progress=False)
    export(config, cohort_archive, Cohort(), second, progress=False)

    def uids(package: Path, into: Path) -> set[str]:
        unpack(package, into)
        found = set()
        for item in FileSet(dcmread(into / "DICOMDIR")):
            ds = item.load()
            found |= {ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID}
        return found

    assert not uids(first, tmp_path / "a") & uids(second, tmp_path / "b")
    linked = [tmp_path / "l1.zip", tmp_path / "l2.zip"]
    for package in linked:
        export(config, cohort_archive, Cohort(), package, progress=False, linkable=True)
    shared = uids(linked[0], tmp_path / "l1")
    assert shared == uids(linked[1], tmp_path / "l2")
    assert not shared & uids(first, tmp_path / "a2")
    assert (config.key_dir / "export.key").exists()
    only_xa = export(
        config, cohort_archive, Cohort(modality="XA"), tmp_path / "c.zip", progress=False
    )
    assert (only_xa.studies, only_xa.instances) == (1, 1)
    assert only_xa.manifest[0]["modalities"] == "XA"


def test_identity_that_slipped_into_the_archive_is_cleaned_or_left_out(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    # Instances whose kept attributes carry identity (as if a future profile
    # gap let it through): a child's name in kept text is cleaned by the
    # descriptor cleaner; the archive's pseudonym in bytes kept as they are (an
    # ICC profile), which no cleaner reads, makes the scanner leave the
    # instance out, or with
    # strict refuse the whole package.
    rows = list(
        cohort_archive.index.find(
            Query(level=Level.IMAGE, keys={"SOPInstanceUID": "", "PatientID": ""})
        )
    )
    (named, tagged) = rows[:2]
    for row, change in (
        (named, lambda ds: setattr(ds, "Manufacturer", PATIENTS[0].name.split("^")[0] + " Med")),
        (tagged, lambda ds: setattr(ds, "ICCProfile", str(ds.PatientID).encode() * 2)),
    ):
        path = cohort_archive.blobs.path(cohort_archive.index.instance_blob(row["SOPInstanceUID"]))
        ds = dcmread(path)
        change(ds)
        path.chmod(0o644)
        ds.save_as(path, enforce_file_format=True)
    strict = tmp_path / "strict.zip"
    with pytest.raises(ExportBlocked, match="identity"):
        export(config, cohort_archive, Cohort(), strict, progress=False, strict=True)
    assert not strict.exists() and not list(tmp_path.glob("strict.zip*"))
    out = tmp_path / "cohort.zip"
    result = export(config, cohort_archive, Cohort(), out, progress=False)
    assert [uid for uid, _ in result.left_out] == [tagged["SOPInstanceUID"]]
    assert "identity" in result.left_out[0][1]
    assert result.instances == len(rows) - 1
    unpack(out, tmp_path / "x")
    readme = (tmp_path / "x" / "README.txt").read_text()
    assert "1 instances were left out" in readme and tagged["SOPInstanceUID"] not in readme
    surname = PATIENTS[0].name.split("^")[0]
    for item in FileSet(dcmread(tmp_path / "x" / "DICOMDIR")):
        assert surname not in str(dcmread(item.path).get("Manufacturer", ""))


def test_exported_files_add_no_dciodvfy_error(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    out = tmp_path / "cohort.zip"
    export(config, cohort_archive, Cohort(modality="XA"), out, progress=False)
    unpack(out, tmp_path / "x")
    (exported,) = [i.path for i in FileSet(dcmread(tmp_path / "x" / "DICOMDIR"))]
    (stored,) = [p for p in cohort_archive.blobs.root.rglob("*.dcm") if dcmread(p).Modality == "XA"]
    masked = {e.replace(str(stored), "<f>") for e in errors(stored)}
    assert {e.replace(exported, "<f>") for e in errors(Path(exported))} <= masked


def test_plan_and_age_filters_and_the_preview(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    studies = {
        s["ModalitiesInStudy"][0]: s["StudyInstanceUID"]
        for s in cohort_archive.index.find(
            Query(level=Level.STUDY, keys={"StudyInstanceUID": "", "ModalitiesInStudy": ""})
        )
    }
    plan = {"slots": [{"code": "PDA-MIN", "value_mm": 4.1}], "proposal": {"sizes": ["8/6"]}}
    cohort_archive.index.plans.add(studies["XA"], "PDA", plan, "cardiologist", None)
    by_plan = preview(cohort_archive, Cohort(defect="pda", device="8/6"))
    assert (by_plan.patients, by_plan.studies, by_plan.series, by_plan.instances) == (1, 1, 1, 1)
    assert by_plan.bytes > 64 * 64 * 4
    assert preview(cohort_archive, Cohort(device="10/8")).studies == 0
    assert preview(cohort_archive, Cohort(age_from=3)).studies == 1
    assert preview(cohort_archive, Cohort(age_to=2)).studies == 1
    result = export(
        config, cohort_archive, Cohort(defect="PDA"), tmp_path / "p.zip", progress=False
    )
    (row,) = result.manifest
    assert (row["defect"], row["proposed_devices"], row["age"]) == ("PDA", "8/6", "018M")
    assert row["key_measurements_mm"] == '{"PDA-MIN": 4.1}'
    assert row["hospital"] == "RCC Dushanbe"
    # A second plan (an ASD besides the duct): filters match either plan and
    # the manifest row names both.
    asd = {
        "slots": [{"code": "ASD-MAX-DIAMETER", "value_mm": 9.0}],
        "proposal": {"sizes": ["11 mm"]},
    }
    cohort_archive.index.plans.add(studies["XA"], "secundum ASD", asd, "cardiologist", None, "new")
    assert preview(cohort_archive, Cohort(defect="PDA", device="8/6")).studies == 1
    assert preview(cohort_archive, Cohort(defect="secundum ASD", device="11 mm")).studies == 1
    (row,) = export(
        config, cohort_archive, Cohort(defect="PDA"), tmp_path / "q.zip", progress=False
    ).manifest
    assert (row["defect"], row["proposed_devices"]) == ("PDA;secundum ASD", "8/6,11 mm")
    assert age_years("030W") == pytest.approx(0.575, abs=0.01)
    assert age_years("") is None and age_years("4Y") is None


def test_names_are_found_as_words_not_inside_other_words() -> None:
    from pydicom.dataset import Dataset

    from dicomnode.deid.scanner import scan

    ds = Dataset()
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageComments = "ECHO 1234567"
    assert scan(ds, [], ["MARY", "12345"]) == []
    ds.StudyDescription = "Echo for mary_k"
    ds.add_new(0x00091010, "OB", b"ID 12345")
    assert {f.needle for f in scan(ds, [], ["MARY", "12345"])} == {"MARY", "12345"}


def test_cancelled_export_writes_nothing(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def step(done: int, total: int) -> None:
        seen.append(done)
        stop.set()  # cancel after the first instance

    with pytest.raises(ExportCancelled):
        export(
            config,
            cohort_archive,
            Cohort(),
            tmp_path / "c.zip",
            progress=False,
            on_instance=step,
            cancel=stop,
        )
    assert seen == [1] and not list(tmp_path.glob("c.zip*"))


@pytest.mark.slow
def test_web_export_for_researchers_only_with_preview_and_download(
    config: Config, cohort_archive: Archive, tmp_path: Path
) -> None:
    from werkzeug.security import generate_password_hash

    from tests.test_viewer import PASSWORD
    from tests.test_viewer import as_user as log_in_as
    from viewer import create_app

    accounts = cohort_archive.index.accounts
    for name, role in (("zarina", "researcher"), ("li", "researcher"), ("amina", "cardiologist")):
        accounts.add(name, generate_password_hash(PASSWORD), role)
    app = create_app(config, cohort_archive, b"k" * 32)
    client = app.test_client()

    def as_user(name: str) -> None:
        log_in_as(client, name)

    as_user("amina")
    assert client.get("/api/exports/preview").status_code == 403
    as_user("zarina")
    assert "Research export" in client.get("/exports").get_data(as_text=True)
    counts = client.get("/api/exports/preview?modality=XA").get_json()
    assert (counts["patients"], counts["instances"]) == (1, 1)
    linkable = client.post(
        "/api/exports", json={"linkable": True}, headers={"X-CSRF-Token": "token"}
    )
    assert linkable.status_code == 403
    bad = client.post("/api/exports", json={"date_from": "2024"}, headers={"X-CSRF-Token": "token"})
    assert bad.status_code == 400 and "YYYYMMDD" in bad.get_json()["message"]
    started = client.post("/api/exports", json={}, headers={"X-CSRF-Token": "token"})
    assert started.status_code == 202
    job_id = started.get_json()["id"]
    with export_runner(config, cohort_archive):  # as the node runs it
        finished(cohort_archive, job_id)
    state = client.get(f"/api/exports/{job_id}").get_json()
    assert (state["state"], state["percent"], state["total"]) == ("done", 100, 2)
    package = client.get(f"/api/exports/{job_id}/download")
    assert package.status_code == 200 and package.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(package.data)) as zipped:
        assert "DICOMDIR" in zipped.namelist()
    as_user("li")
    assert client.get(f"/api/exports/{job_id}/download").status_code == 404
    as_user("zarina")
    package_file = config.data_dir / "packages" / f"{job_id}.zip"  # the file blob store's
    old = package_file.stat().st_mtime - config.export_keep_hours * 3600 - 1
    os.utime(package_file, (old, old))
    gone = client.get(f"/api/exports/{job_id}/download")
    assert gone.status_code == 410 and not package_file.exists()
    (audit,) = cohort_archive.index.audit.rows(limit=1)
    assert (audit["user"], audit["event"], audit["source"]) == ("zarina", "export", "web")


@pytest.mark.slow
def test_the_worksheet_report_keeps_its_measurements(
    config: Config, ingestor: Ingestor, cohort_archive: Archive, tmp_path: Path
) -> None:
    from viewer.planning.report import Slot, measurement_report, observer_name

    (row,) = [
        r
        for r in cohort_archive.index.find(
            Query(level=Level.IMAGE, keys={"SOPInstanceUID": "", "Modality": "XA"})
        )
    ]
    evidence = dcmread(
        cohort_archive.blobs.path(cohort_archive.index.instance_blob(row["SOPInstanceUID"]))
    )
    slot = Slot("PDA-NARROWEST", 4.1, str(evidence.SOPInstanceUID), 1)
    observer = observer_name("cardiologist")
    sr = measurement_report([evidence], [slot], defect="PDA", observer=observer)
    assert ingestor.ingest_own(sr, "RCC Dushanbe").status == 0
    export(config, cohort_archive, Cohort(modality="XA"), tmp_path / "sr.zip", progress=False)
    unpack(tmp_path / "sr.zip", tmp_path / "x")
    (report,) = [
        i.load() for i in FileSet(dcmread(tmp_path / "x" / "DICOMDIR")) if i.load().Modality == "SR"
    ]
    values = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _walk(report.ContentSequence)
        if "MeasuredValueSequence" in item
    ]
    assert values == [4.1]


def _walk(items):
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


def test_an_export_interrupted_by_a_stop_runs_again_on_start(
    config: Config, cohort_archive: Archive
) -> None:
    # As the index holds it when the server's process died mid-export.
    jobs = cohort_archive.index.exports
    dead = subprocess.Popen(["true"])
    dead.wait()
    runner = f"{socket.gethostname()}-{dead.pid}"
    jobs.add("0123456789abcdef", "zarina", asdict(Cohort()), False)
    assert [row["id"] for row in jobs.claim(runner, 1)] == ["0123456789abcdef"]
    with export_runner(config, cohort_archive):  # the next start of the node
        row = finished(cohort_archive, "0123456789abcdef")
    assert (row["state"], row["total"], row["claimed_by"]) == ("done", 2, None)
    assert [n for n, _ in cohort_archive.blobs.packages()] == ["0123456789abcdef.zip"]
    assert jobs.claim("a-later-start-1", 1) == []  # nothing is run again


@pytest.mark.slow
def test_web_download_works_with_the_shipped_relative_data_dir(
    config: Config, cohort_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As shipped, data_dir is "var" relative to where the node was started;
    # Flask would resolve a relative path against the package folder (500).
    from dataclasses import replace

    from werkzeug.security import generate_password_hash

    from tests.test_viewer import PASSWORD, as_user
    from viewer import create_app

    monkeypatch.chdir(tmp_path)
    relative = replace(config, data_dir=Path("var"), key_dir=Path("secrets"))
    cohort_archive.index.accounts.add("zarina", generate_password_hash(PASSWORD), "researcher")
    app = create_app(relative, cohort_archive, b"k" * 32)
    client = app.test_client()
    as_user(client, "zarina")
    started = client.post("/api/exports", json={}, headers={"X-CSRF-Token": "token"})
    job_id = started.get_json()["id"]
    with export_runner(relative, cohort_archive):
        finished(cohort_archive, job_id)
    monkeypatch.chdir("/")  # the process's directory may change; the package stays found
    package = client.get(f"/api/exports/{job_id}/download")
    assert package.status_code == 200, package.get_data(as_text=True)[:200]
    with zipfile.ZipFile(io.BytesIO(package.data)) as zipped:
        assert "DICOMDIR" in zipped.namelist()
    assert [n for n, _ in cohort_archive.blobs.packages()] == [f"{job_id}.zip"]


def _plan_texts(items) -> Iterator[str]:
    """The texts, codes and meanings of an SR's content tree."""
    for item in items:
        for keyword in ("TextValue", "CodeValue", "CodingSchemeDesignator", "CodeMeaning"):
            if keyword in item:
                yield str(item.get(keyword))
        for key in ("ConceptNameCodeSequence", "ConceptCodeSequence", "ContentSequence"):
            yield from _plan_texts(item.get(key) or [])


# The sample echoes' patients as the demo loads them: a name part that is a
# word ("NEW", "MARY", "PLA"), a short numeric ID ("204"), an accession number.
DEMO = [
    SyntheticPatient("ZZZ TEST PATIENTFIVE^NEW^P^", "2020202020202", "20190314", "M", ""),
    SyntheticPatient("PLA", "204", "20190314", "F", ""),
    SyntheticPatient("ZZZDOWNTIME^MARY^^", "40404040404", "20190314", "F", ""),
    SyntheticPatient("CompressedSamples^US1", "13US1", "20190314", "M", ""),
    SyntheticPatient("abcd", "1", "20190314", "M", ""),
]


@pytest.fixture
def cardiologist(config: Config, archive: Archive):
    """The viewer's test client with a cardiologist's account (not yet logged in)."""
    from werkzeug.security import generate_password_hash

    from tests.test_viewer import PASSWORD
    from viewer import create_app

    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
    return create_app(config, archive, b"k" * 32).test_client()


@pytest.mark.slow
@pytest.mark.parametrize("patient", [PATIENTS[0], *DEMO])
def test_the_nodes_own_plan_reports_are_exported_whole(
    cardiologist, config: Config, ingestor: Ingestor, archive: Archive, tmp_path: Path, patient
) -> None:
    # Cited authors (Krichenko et al.), the node's own words and pseudonym
    # ("CHD"), the standard's codes (121049) and PubMed numbers are no one's
    # identity: the plans' reports reach the package whole, none left out.
    from tests.test_planning import HEADERS, _asd_and_pda, _stored_image
    from tests.test_viewer import log_in

    run = xa_instance(patient, frames=4, rows=64, cols=80)
    run.AccessionNumber = "104111149"
    assert ingestor.ingest(incoming(run, calling_ae="BISHKEK_CATH")).status == 0
    client = cardiologist
    log_in(client)
    xa = _stored_image(archive)
    study = str(xa.StudyInstanceUID)
    asd, pda, _, _ = _asd_and_pda(client, xa)
    asd["note"] = "Note for the export. Secundum ASD, deficient aortic rim."
    for body in (asd, pda, {**pda, "krichenko": "A", "note": "Conical duct, ADO I"}):
        saved = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=body)
        assert saved.status_code == 201, saved.json
    signed = client.post(f"/api/studies/{study}/plans/2/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 201, signed.json
    result = export(config, archive, Cohort(), tmp_path / "p.zip", progress=False)
    assert result.left_out == []
    unpack(tmp_path / "p.zip", tmp_path / "x")
    reports = [
        i.load() for i in FileSet(dcmread(tmp_path / "x" / "DICOMDIR")) if i.load().Modality == "SR"
    ]
    assert len(reports) == 4
    texts = "\n".join(t for r in reports for t in _plan_texts(r.ContentSequence))
    assert "***" not in texts, texts
    for kept in (
        "Secundum ASD, deficient aortic rim",
        "the Krichenko type (A conical",
        "Krichenko et al., Am J Cardiol",
        "(PMID 21232725)",
        "121049",
        "C0034375",
    ):
        assert kept in texts, kept
    assert {str(r.get("Manufacturer", "")) for r in reports} == {"CHD imaging exchange node"}


def test_an_instance_too_large_to_hold_is_left_out_unread(
    config: Config, cohort_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by an outside attacker: a 200 kB deflated instance that inflates
    to 200 MB cost an export 1.4 GB, and four exports at once 4 GB. Its size
    in memory is judged from the index before it is read: over the bound it
    is left out, saying why, and never read (the 4x64x64 angio is 49 kB)."""
    import dicomnode.jobs.export as exporting

    monkeypatch.setattr(exporting, "MAX_EXPORT_INSTANCE", 40_000)
    read: list[object] = []
    monkeypatch.setattr(exporting, "dcmread", lambda *a, **k: read.append(a) or dcmread(*a, **k))
    result = export(config, cohort_archive, Cohort(), tmp_path / "c.zip", progress=False)
    assert result.instances == 1
    assert [reason for _, reason in result.left_out] == [exporting.TOO_LARGE]
    assert len([a for a in read if not isinstance(a[0], (str, Path))]) == 1  # only the echo
    with pytest.raises(ExportBlocked, match="not exported"):
        export(config, cohort_archive, Cohort(), tmp_path / "d.zip", progress=False, strict=True)


@pytest.mark.slow
def test_exports_run_one_after_another(
    config: Config, cohort_archive: Archive, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dicomnode.jobs.export as exporting

    inside, most = [0], [0]
    real = exporting.dcmread

    def counting(*args, **kwargs):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        try:
            threading.Event().wait(0.05)
            return real(*args, **kwargs)
        finally:
            inside[0] -= 1

    monkeypatch.setattr(exporting, "dcmread", counting)
    runs = [
        threading.Thread(
            target=export,
            args=(config, cohort_archive, Cohort(), tmp_path / f"{n}.zip"),
            kwargs={"progress": False},
        )
        for n in range(3)
    ]
    for run in runs:
        run.start()
    for run in runs:
        run.join()
    assert all((tmp_path / f"{n}.zip").is_file() for n in range(3))
    assert most[0] == 1
