"""The web viewer through Flask's test client: access, search, frames."""

from __future__ import annotations

from functools import cache
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome
from dicomnode.ops.samples import PATIENTS, sample_file, xa_instance
from storage.archive import Archive
from tests.conftest import incoming
from viewer import create_app
from viewer.frames import frame_times_ms

PASSWORD = "correct horse battery"


@cache
def _hashed(password: str) -> str:
    """One scrypt hash per process (each costs a few tenths of a second);
    every test's account still checks the password as a login would."""
    return generate_password_hash(password)


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    archive.index.accounts.add("amina", _hashed(PASSWORD), "cardiologist")
    app = create_app(config, archive, b"k" * 32)
    return app.test_client()


def as_user(client: FlaskClient, name: str) -> None:
    """A fresh session of ``name`` without the login form (and its audit):
    a live session row in the index, its id in the cookie."""
    from viewer.auth import session_limits

    app = client.application
    limits = session_limits(app.config["NODE_CONFIG"])
    sid = app.extensions["archive"].index.accounts.open_session(name, limits)
    with client.session_transaction() as session:
        session.update(sid=sid, csrf="token")


def log_in(client: FlaskClient, password: str = PASSWORD) -> object:
    with client.session_transaction() as session:
        session["csrf"] = "token"
    response = client.post(
        "/login", data={"username": "amina", "password": password, "csrf_token": "token"}
    )
    with client.session_transaction() as session:
        session["csrf"] = "token"  # login issues a fresh token; the tests reuse theirs
    return response


def rows(page: str) -> int:
    return page.count('href="/studies/')


def stored_uid(archive: Archive) -> str:
    (path,) = archive.blobs.root.rglob("*.dcm")
    return str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_everything_but_login_and_health_needs_a_user(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/").status_code == 302
    assert client.get("/").headers["Location"].startswith("/login")
    assert client.get("/api/stats").status_code == 401
    assert client.get("/api/instances/1.2.3/meta").status_code == 401


@pytest.mark.slow
def test_wrong_password_and_missing_csrf_are_refused(client: FlaskClient) -> None:
    wrong = log_in(client, "not the password")
    assert wrong.status_code == 401 and b"Wrong user name or password" in wrong.data
    assert client.get("/").status_code == 302
    no_token = client.post("/login", data={"username": "amina", "password": PASSWORD})
    assert no_token.status_code == 400 and b"CSRF" in no_token.data
    assert log_in(client).status_code == 302
    assert client.post("/logout").status_code == 400  # logged in, still needs the token


@pytest.mark.slow
def test_search_and_study_page_show_only_deidentified_data(
    client: FlaskClient, ingestor: Ingestor
) -> None:
    for patient in PATIENTS[:3]:
        ds = xa_instance(patient, frames=3, rows=32, cols=32)
        assert ingestor.ingest(incoming(ds)).outcome is Outcome.STORED
    log_in(client)
    page = client.get("/").get_data(as_text=True)
    assert rows(page) == 3
    for patient in PATIENTS[:3]:
        assert patient.name.split("^")[0] not in page and patient.patient_id not in page
    pseudonym = ingestor.deidentify.secret.pseudonym("NCC Bishkek", PATIENTS[1].patient_id)
    found = client.get("/", query_string={"pseudonym": pseudonym[4:]}).get_data(as_text=True)
    assert rows(found) == 1 and pseudonym in found
    by_text = client.get("/", query_string={"text": "房间隔"}).get_data(as_text=True)
    assert rows(by_text) == 1
    assert rows(client.get("/", query_string={"modality": "US"}).get_data(as_text=True)) == 0
    assert client.get("/", query_string={"from": "2026-13-01"}).status_code == 400


@pytest.mark.slow
def test_jpeg_frames_go_out_as_stored(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
    assert ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
    uid = stored_uid(archive)
    log_in(client)
    meta = client.get(f"/api/instances/{uid}/meta").json
    assert meta["frames"] == 120 and meta["pseudonym"].startswith("CHD-")
    stored = dcmread(next(archive.blobs.root.rglob("*.dcm")))
    fragments = list(generate_frames(stored.PixelData, number_of_frames=120))
    # The page asks for the version /meta names: that URL never changes.
    frame = f"/api/instances/{uid}/frames/7?v={meta['version']}"
    response = client.get(frame)
    assert response.mimetype == "image/jpeg" and response.data == fragments[6]
    assert "immutable" in response.headers["Cache-Control"]
    again = client.get(frame, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304
    assert client.get(f"/api/instances/{uid}/frames/121").status_code == 404


@pytest.mark.slow
def test_other_syntaxes_are_decoded_once_to_png(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    ds = xa_instance(PATIENTS[0], frames=4, rows=48, cols=40)
    assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    uid = stored_uid(archive)
    log_in(client)
    response = client.get(f"/api/instances/{uid}/frames/2")
    image = Image.open(BytesIO(response.data))
    assert response.mimetype == "image/png" and image.size == (40, 48) and image.mode == "L"
    assert (np.asarray(image) == ds.pixel_array[1]).all()
    meta = client.get(f"/api/instances/{uid}/meta").json
    assert meta["fps"] == pytest.approx(15, abs=0.1) and meta["grey"] is True


def timing(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.NumberOfFrames = 4
    for key, value in attrs.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"FrameTimeVector": [0, 20, 40, 40], "FrameTime": 33}, [20, 40, 40, 40]),
        ({"FrameTime": "33.3", "CineRate": 15}, [33.3] * 4),
        ({"CineRate": 25, "RecommendedDisplayFrameRate": 10}, [40.0] * 4),
        ({"RecommendedDisplayFrameRate": 50}, [20.0] * 4),
        ({}, [1000 / 30] * 4),
    ],
)
def test_frame_rate_follows_the_standards_order(attrs: dict, expected: list) -> None:
    assert frame_times_ms(timing(**attrs)) == pytest.approx(expected)


@pytest.mark.slow
def test_user_cli(tmp_path: Path, config: Config) -> None:
    from dicomnode.cli.main import main

    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{config.data_dir}"\nkey_dir = "{config.key_dir}"\n',
        encoding="utf-8",
    )
    import io
    import sys

    stdin = sys.stdin
    try:
        sys.stdin = io.StringIO(PASSWORD + "\n")
        assert (
            main(["-c", str(path), "user", "add", "bakyt", "--role", "admin", "--password-stdin"])
            == 0
        )
        sys.stdin = io.StringIO("short\n")
        assert main(["-c", str(path), "user", "add", "x", "--password-stdin"]) == 3
    finally:
        sys.stdin = stdin
    assert main(["-c", str(path), "user", "disable", "bakyt"]) == 0
    assert main(["-c", str(path), "user", "disable", "nobody"]) == 3


@pytest.mark.slow
def test_quarantine_is_for_admins_only(
    client: FlaskClient, config: Config, archive: Archive, ingestor: Ingestor
) -> None:
    from tests.test_ingest import instance

    held = instance()
    del held.SequenceOfUltrasoundRegions
    assert ingestor.ingest(incoming(held)).outcome is Outcome.QUARANTINED
    log_in(client)
    assert client.get("/quarantine").status_code == 403
    archive.index.accounts.add("bakyt", generate_password_hash(PASSWORD), "admin")
    as_user(client, "bakyt")
    page = client.get("/quarantine").get_data(as_text=True)
    assert "no ultrasound region" in page and "CHD-" in page
    assert "Ultrasound Image Storage" in page  # what kind of instance, never whose
    assert PATIENTS[0].patient_id not in page and PATIENTS[0].name.split("^")[0] not in page
    archive.index.forwarding.enqueue(["1.2.3"], "RESEARCH")
    queue = client.get("/forwarding").get_data(as_text=True)
    assert "RESEARCH" in queue and "pending" in queue


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "mode"),
    [
        ("ultrasounds/RGB_IMAGE.dcm", "RGB"),
        ("examples_palette.dcm", "RGB"),
        ("ultrasounds/GREYSCALE_IMAGE.dcm", "L"),
    ],
)
def test_colour_reaches_the_browser_once_converted(
    client: FlaskClient, ingestor: Ingestor, archive: Archive, name: str, mode: str
) -> None:
    data, syntax = split_file(sample_file(name).read_bytes())
    assert ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
    stored = dcmread(next(archive.blobs.root.rglob("*.dcm")))
    log_in(client)
    response = client.get(f"/api/instances/{stored.SOPInstanceUID}/frames/1")
    image = Image.open(BytesIO(response.data))
    assert image.mode == mode and image.size == (stored.Columns, stored.Rows)
    if mode == "RGB" and stored.PhotometricInterpretation == "RGB":
        assert (np.asarray(image) == stored.pixel_array).all()


@pytest.mark.slow
def test_list_shows_thumbnails_and_received_time(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    ds = xa_instance(PATIENTS[0], frames=6, rows=300, cols=400)
    assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    log_in(client)
    page = client.get("/").get_data(as_text=True)
    uid = stored_uid(archive)
    assert f"/api/instances/{uid}/thumbnail" in page
    thumb = Image.open(BytesIO(client.get(f"/api/instances/{uid}/thumbnail").data))
    assert thumb.format == "JPEG" and max(thumb.size) == 192
    assert "frame_cache" not in client.application.extensions  # one frame, not the clip


@pytest.mark.slow
def test_a_saved_plans_report_names_no_one(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    from tests.test_ingest import instance

    assert ingestor.ingest(incoming(instance())).outcome is Outcome.STORED
    clip = dcmread(next(archive.blobs.root.rglob("*.dcm")), stop_before_pixels=True)
    study = str(clip.StudyInstanceUID)
    log_in(client)
    headers = {"X-CSRF-Token": "token"}
    slot = {"code": "ASD-MAX-DIAMETER", "value_mm": 14.0, "instance_uid": str(clip.SOPInstanceUID)}
    # The browser's meaning is free text: an attacker's, or a name typed in.
    plan = {"defect": "secundum ASD", "slots": [{**slot, "meaning": "ASD Иванов Алибек max"}]}
    saved = client.post(f"/api/studies/{study}/plans", headers=headers, json=plan)
    assert saved.status_code == 201, saved.json
    report = dcmread(BytesIO(archive.read(saved.json["sr_uid"])))
    meanings = {
        str(item.ConceptNameCodeSequence[0].CodeMeaning)
        for item in report.iterall()
        if item.keyword == "ContentSequence"
        for item in item.value
        if "ConceptNameCodeSequence" in item
    }
    assert "ASD maximal diameter (view 1)" in meanings
    observers = [str(e.value) for e in report.iterall() if e.keyword == "PersonName"]
    assert observers == ["Cardiologist^CHD node"]  # the role, not the login
    stored_sr = archive.read(saved.json["sr_uid"])
    assert "Иванов".encode() not in stored_sr and b"amina" not in stored_sr
    versions = client.get(f"/api/studies/{study}/plans").json
    assert "Иванов" not in str(saved.json) and "Иванов" not in str(versions)
    # Who saved it is still known, to the plan row and the audit trail.
    assert versions[0]["author"] == "amina"
    for refused in (
        {"defect": "PDA", "slots": [slot]},  # not a slot of the PDA worksheet
        {"defect": "secundum ASD", "slots": [{**slot, "code": "ASD Иванов Алибек max"}]},
        {"defect": "secundum ASD", "slots": [], "rims": {"Иванов": 4.0}},
    ):
        answer = client.post(f"/api/studies/{study}/plans", headers=headers, json=refused)
        assert answer.status_code == 400
        assert "Иванов" not in answer.json["message"] and "worksheet" in answer.json["message"]
    assert len(client.get(f"/api/studies/{study}/plans").json) == 1


@pytest.mark.slow
def test_measure_and_save_a_plan_with_its_report(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
    assert ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
    clip = dcmread(next(archive.blobs.root.rglob("*.dcm")), stop_before_pixels=True)
    uid, study = str(clip.SOPInstanceUID), str(clip.StudyInstanceUID)
    log_in(client)
    headers = {"X-CSRF-Token": "token"}
    region = clip.SequenceOfUltrasoundRegions[0]
    scale_mm = float(region.PhysicalDeltaX) * 10
    measured = client.post(
        f"/api/instances/{uid}/measure",
        headers=headers,
        json={"kind": "length", "points": [[200, 200], [260, 200]]},
    ).json
    assert measured["unit"] == "mm" and measured["value"] == pytest.approx(60 * scale_mm)
    outside = client.post(
        f"/api/instances/{uid}/measure",
        headers=headers,
        json={"kind": "length", "points": [[1, 1], [3, 3]]},
    ).json
    assert outside["unit"] == "px" and "no ultrasound region" in outside["source"]
    assert client.post(f"/api/instances/{uid}/measure", json={"kind": "length"}).status_code == 400
    calibration = {
        "id": 1,
        "points": [[0, 0], [10, 0]],
        "mm": 4,
        "scope": {"kind": "frame", "uid": uid, "frame": 0},
    }
    known = client.post(
        f"/api/instances/{uid}/measure",
        headers=headers,
        json={
            "kind": "length",
            "frame": 0,
            "points": [[0, 0], [50, 0]],
            "calibration": calibration,
        },
    ).json
    assert known["value"] == pytest.approx(20.0)
    assert known["source"] == "known length 4 mm (calibration 1)"
    # A calibration that does not say what it belongs to applies to nothing.
    unscoped = {k: v for k, v in calibration.items() if k != "scope"}
    refused = client.post(
        f"/api/instances/{uid}/measure",
        headers=headers,
        json={"kind": "length", "frame": 0, "points": [[0, 0], [50, 0]], "calibration": unscoped},
    )
    assert refused.status_code == 400
    plan = {
        "defect": "secundum ASD",
        "slots": [
            {
                "code": "ASD-MAX-DIAMETER",
                "meaning": "ASD maximal diameter",
                "value_mm": 14.0,
                "instance_uid": uid,
                "frame": 12,
            }
        ],
        "rims": {"aortic": 3.5, "IVC": 8.0},
        "note": "Рассмотреть баллонную калибровку",
    }
    saved = client.post(f"/api/studies/{study}/plans", headers=headers, json=plan)
    assert saved.status_code == 201, saved.json
    body = saved.json
    assert body["version"] == 1 and body["deficient_rims"] == ["aortic"]
    assert body["proposal"]["sizes"] == ["16 mm", "17 mm"]
    assert "instructions for use" in body["proposal"]["rule"]["source"]
    # A new version says which one it continues (else it could silently
    # overwrite what someone else saved meanwhile).
    plan = {**plan, "plan": body["plan"], "based_on": body["version"]}
    again = client.post(f"/api/studies/{study}/plans", headers=headers, json=plan).json
    assert again["version"] == 2  # versions are kept, never overwritten
    versions = client.get(f"/api/studies/{study}/plans").json
    assert [v["version"] for v in versions] == [1, 2]
    assert versions[0]["content"]["note"] == plan["note"]
    assert archive.read(body["sr_uid"]) is not None  # the SR series is in the archive
    summary = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert "secundum ASD" in summary and "14.0 mm" in summary and "deficient" in summary
    assert f"/api/instances/{uid}/frames/12" in summary  # the key frame
    pda = client.post(
        f"/api/studies/{study}/plans",
        headers=headers,
        json={
            "defect": "PDA",
            "krichenko": "A",
            "slots": [
                {
                    "code": "PDA-NARROWEST",
                    "meaning": "Narrowest (pulmonary end) diameter",
                    "value_mm": 2.5,
                }
            ],
        },
    ).json
    assert pda["krichenko"] == "A" and pda["proposal"]["sizes"] == ["8/6", "10/8"]
    wrong = client.post(
        f"/api/studies/{study}/plans",
        headers=headers,
        json={"defect": "PDA", "krichenko": "F", "slots": []},
    )
    assert wrong.status_code == 400
    assert "not an order" in summary


@pytest.mark.slow
@pytest.mark.parametrize(
    "url",
    [
        "/?page=99999999999999999999",
        "/?page=0",
        "/?page=x",
        "/dicom-web/studies?limit=99999999999999999999",
        "/dicom-web/studies?offset=-1",
        "/dicom-web/studies?limit=ten",
    ],
)
def test_numbers_in_query_strings_are_bounded(client: FlaskClient, url: str) -> None:
    """A page or limit too large for the database's integers is a 400 that
    says so, not a 500."""
    as_user(client, "amina")
    response = client.get(url)
    assert response.status_code == 400
    assert b"whole number" in response.data or b"from " in response.data
