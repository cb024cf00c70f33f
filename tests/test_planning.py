"""Calibration paths on phantoms of known geometry; plans through the API:
several per study, versioned, validated, signed, printed and reported (SR)."""

from __future__ import annotations

import json
import math
import re
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomnode.config import Config
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming, Ingestor, Outcome
from dicomnode.ops.samples import PATIENTS, sample_file, ultrasound_region, xa_instance
from storage.archive import Archive
from storage.keys import Level
from storage.query import Query
from tests.conftest import incoming
from tests.test_viewer import PASSWORD, as_user, log_in
from tests.test_written_files import errors
from viewer.planning import calibration as cal
from viewer.planning.report import measurement_report, observer_name
from viewer.planning.worksheet import Slot, rim_slot


def us_phantom() -> Dataset:
    """A 0.05 cm/px region; a 20 mm bar lies from (100, 200) to (140, 200)."""
    ds = Dataset()
    ds.Modality = "US"
    region = ultrasound_region(20, 50, 619, 459)
    region.PhysicalDeltaX = region.PhysicalDeltaY = 0.05
    other = ultrasound_region(20, 460, 619, 479)  # a Doppler strip below
    other.PhysicalUnitsYDirection = 7  # cm/s
    ds.SequenceOfUltrasoundRegions = [region, other]
    return ds


def xa_phantom() -> Dataset:
    ds = Dataset()
    ds.Modality = "XA"
    ds.ImagerPixelSpacing = [0.308, 0.308]
    ds.EstimatedRadiographicMagnificationFactor = 1.47
    return ds


def within(value: float, expected: float, mm_per_px: float) -> bool:
    return abs(value - expected) <= 0.1 + mm_per_px  # 0.1 mm plus one pixel


def test_ultrasound_bar_measures_20_mm() -> None:
    result = cal.length(us_phantom(), (100, 200), (140, 200))
    assert result.unit == "mm" and within(result.value, 20.0, 0.5)
    assert result.source == "ultrasound region 1 (cm)"
    slanted = cal.length(us_phantom(), (100, 200), (124, 232))  # 3-4-5: 40 px
    assert within(slanted.value, 20.0, 0.5)


@pytest.mark.parametrize(
    ("p1", "p2", "reason"),
    [
        ((100, 300), (100, 470), "different ultrasound regions"),
        ((5, 5), (10, 10), "no ultrasound region"),
        ((100, 465), (150, 470), "not centimetres"),
    ],
)
def test_ultrasound_without_a_valid_region_stays_in_pixels(p1, p2, reason) -> None:
    result = cal.length(us_phantom(), p1, p2)
    assert result.unit == "px" and reason in result.source
    assert result.value == pytest.approx(math.dist(p1, p2))


def test_xa_at_isocentre_from_magnification() -> None:
    ds = xa_phantom()
    per_px = 0.308 / 1.47
    bar_px = 20.0 / per_px
    result = cal.length(ds, (10, 10), (10 + bar_px, 10))
    assert result.unit == "mm" and within(result.value, 20.0, per_px)
    assert "at isocentre" in result.source
    del ds.EstimatedRadiographicMagnificationFactor
    ds.DistanceSourceToDetector, ds.DistanceSourceToPatient = 1100, 1100 / 1.47
    assert within(cal.length(ds, (10, 10), (10 + bar_px, 10)).value, 20.0, per_px)
    ds.PixelSpacing = [0.25, 0.25]  # wins: already in the patient
    assert cal.length(ds, (0, 0), (80, 0)).value == pytest.approx(20.0)


def test_manual_calibration_on_a_6f_catheter() -> None:
    assert cal.french_mm(6) == pytest.approx(2.0)
    user = cal.manual((50, 50), (50, 60), cal.french_mm(6), "catheter 6F")  # 10 px = 2 mm
    result = cal.length(xa_phantom(), (0, 0), (100, 0), user=user)
    assert result.value == pytest.approx(20.0) and result.source == "catheter 6F"
    with pytest.raises(ValueError):
        cal.manual((1, 1), (1, 1), 2.0, "zero")


def test_angle_and_ellipse_area() -> None:
    assert cal.angle_degrees((0, 0), (10, 0), (0, 10)) == pytest.approx(90)
    area = cal.ellipse_area(us_phantom(), (300, 250), 20, 10)
    assert area.unit == "mm²" and area.value == pytest.approx(math.pi * 10 * 5)


# --- Plans through the API -----------------------------------------------------
# What a careless sender, a hurried clinician or an attacker sends: every
# refusal is a 400 that says what (never quoting it), never a 500; nothing is
# stored from a refused request.

HEADERS = {"X-CSRF-Token": "token"}
NAME = "Иванов Алибек"  # what an attacker or a slip puts into free text


def _stored_image(archive: Archive, modality: str = "") -> Dataset:
    for path in archive.blobs.root.rglob("*.dcm"):
        ds = dcmread(path, stop_before_pixels=True)
        if not modality or ds.Modality == modality:
            return ds
    raise AssertionError("nothing stored")


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    from werkzeug.security import generate_password_hash

    from viewer import create_app

    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
    return create_app(config, archive, b"k" * 32).test_client()


@pytest.fixture
def xa(client: FlaskClient, ingestor: Ingestor, archive: Archive) -> Dataset:
    """A logged-in cardiologist and a stored 4-frame 80x64 angio run."""
    ds = xa_instance(PATIENTS[0], frames=4, rows=64, cols=80)
    assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    log_in(client)
    return _stored_image(archive)


def _measure(client: FlaskClient, image: Dataset, points: list, frame: int, calibration=None):
    body = {"kind": "length", "points": points, "frame": frame}
    if calibration:
        body["calibration"] = calibration
    answer = client.post(
        f"/api/instances/{image.SOPInstanceUID}/measure", headers=HEADERS, json=body
    )
    assert answer.status_code == 200, answer.json
    return {
        "uid": str(image.SOPInstanceUID),
        "frame": frame,
        "kind": "length",
        "points": points,
        **answer.json,
    }


def _catheter(image: Dataset) -> dict[str, Any]:
    """A 6F catheter (2 mm) over 10 px, for the run's series."""
    scope = {
        "kind": "series",
        "uid": str(image.SOPInstanceUID),
        "frame": 1,
        "series": str(image.SeriesInstanceUID),
    }
    return {"id": 1, "points": [[10, 10], [10, 20]], "french": 6, "scope": scope}


def _asd_and_pda(client: FlaskClient, image: Dataset) -> tuple[dict, dict, list, dict]:
    catheter = _catheter(image)
    drawn = [
        _measure(client, image, [[20, 30], [60, 30]], 2, catheter),  # 40 px: 8 mm
        _measure(client, image, [[5, 5], [25, 5]], 0),  # the image's own scale
    ]
    asd = {
        "defect": "secundum ASD",
        "plan": "new",
        "slots": [
            {
                "code": "ASD-MAX-DIAMETER",
                "value_mm": round(drawn[0]["value"], 1),
                "measurement": 0,
                "meaning": NAME,
            },
            {"code": "ASD-MAX-DIAMETER-2", "value_mm": 9.5},
        ],
        "rims": {"aortic": 2.0, "IVC": 9.0},
        "note": "Рассмотреть баллонную калибровку\nзатем решить",
        "measurements": drawn,
        "calibrations": [catheter],
    }
    pda = {
        "defect": "PDA",
        "plan": "new",
        "krichenko": "B",
        "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}],
        "note": "Window duct: consider surgery",
        "measurements": drawn,
        "calibrations": [catheter],
    }
    return asd, pda, drawn, catheter


def _save(client: FlaskClient, study: str, body: Any, **kwargs: Any):
    return client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=body, **kwargs)


@pytest.mark.slow
def test_a_child_with_an_asd_and_a_pda_gets_two_plans_printed_together(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    study = str(xa.StudyInstanceUID)
    asd, pda, drawn, _ = _asd_and_pda(client, xa)
    assert "catheter 6F" in drawn[0]["source"] and drawn[0]["calibration_id"] == 1
    first = _save(client, study, asd)
    assert first.status_code == 201, first.json
    assert (first.json["plan"], first.json["version"]) == (1, 1)
    assert first.json["slots"][0]["meaning"] == "ASD maximal diameter (view 1)"  # not the browser's
    assert first.json["slots"][0]["instance_uid"] == str(xa.SOPInstanceUID)
    assert first.json["slots"][0]["frame"] == 3  # drawn on frame index 2: DICOM frame 3
    second = _save(client, study, pda)
    assert second.status_code == 201, second.json
    assert (second.json["plan"], second.json["version"]) == (2, 1)
    assert second.json["krichenko"] == "B" and second.json["proposal"]["rules"]
    again = _save(client, study, {**asd, "plan": 1, "based_on": 1, "note": "v2"})
    assert (again.json["plan"], again.json["version"]) == (1, 2), again.json
    listed = client.get(f"/api/studies/{study}/plans").json
    assert [(v["plan"], v["version"], v["defect"]) for v in listed] == [
        (1, 1, "secundum ASD"),
        (1, 2, "secundum ASD"),
        (2, 1, "PDA"),
    ]
    assert all(v["author"] == "amina" and v["signed_by"] is None for v in listed)
    # One SR series per plan, an instance per version.
    reports = [dcmread(BytesIO(archive.read(v["sr_uid"])), stop_before_pixels=True) for v in listed]
    assert reports[0].SeriesInstanceUID == reports[1].SeriesInstanceUID
    assert reports[0].SeriesInstanceUID != reports[2].SeriesInstanceUID
    assert [r.SeriesDescription for r in reports] == [
        "Closure plan (secundum ASD) #1",
        "Closure plan (secundum ASD) #1",
        "Closure plan (PDA) #2",
    ]
    assert [r.InstanceNumber for r in reports] == [1, 3, 1]

    page = client.get(f"/studies/{study}/plan/print")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert NAME not in html
    assert html.count('<section class="plan"') == 2  # every plan's latest version
    assert 'data-plan="1" data-version="2"' in html and 'data-plan="2" data-version="1"' in html
    for expected in (
        "Plan 1: secundum ASD",
        "Plan 2: PDA",
        "catheter 6F (2.00 mm)",  # which calibration, and its scale and scope
        "mm per pixel over 10.0 px",
        "applies to the series of the image it was drawn on",
        drawn[1]["source"],  # the image's own scale, named
        "type B",  # Krichenko
        "Window duct: consider surgery",
        '<p class="note">v2</p>',  # the latest version's note
        "measurement 1",  # the worksheet value came from drawn measurement 1
        "Not signed",
        "not an order",
    ):
        assert expected in html, expected
    for rule in second.json["proposal"]["rules"]:
        assert rule["source"] in html
    # The calipers over their frame, in image pixel coordinates.
    figure = re.search(
        rf'<figure class="key-image" data-uid="{xa.SOPInstanceUID}" data-frame="3">(.*?)</figure>',
        html,
        re.S,
    )
    assert figure is not None
    assert 'viewBox="0 0 80 64"' in figure[1]
    assert f"/api/instances/{xa.SOPInstanceUID}/frames/3" in figure[1]
    line = re.search(
        r'<line class="caliper" data-label="1" x1="(\S+)" y1="(\S+)" x2="(\S+)" y2="(\S+)"',
        figure[1],
    )
    assert line is not None and [float(v) for v in line.groups()] == [20, 30, 60, 30]
    assert re.search(
        r'<line class="calibration" data-label="C1" x1="10.0" y1="10.0" x2="10.0" y2="20.0"', html
    )
    # Older versions stay reachable.
    assert f"/studies/{study}/plan/print?plan=1&amp;version=1" in html
    older = client.get(f"/studies/{study}/plan/print?plan=1&version=1").get_data(as_text=True)
    assert 'data-plan="1" data-version="1"' in older
    assert "Рассмотреть баллонную калибровку<br>затем решить" in older
    assert "Plan 2" not in older
    for bad in ("plan=x", "plan=1&version=-1", "plan=1&version=99999999"):
        assert client.get(f"/studies/{study}/plan/print?{bad}").status_code in (400, 404)
    assert client.get(f"/studies/{study}/plan/print?plan=9").status_code == 404
    assert client.get("/studies/2.25.9/plan/print").status_code == 404


def _walk(items: Any) -> Any:
    for item in items:
        yield item
        yield from _walk(item.get("ContentSequence", []))


@pytest.mark.slow
def test_the_report_stands_on_its_own(client: FlaskClient, xa: Dataset, archive: Archive) -> None:
    study = str(xa.StudyInstanceUID)
    _, pda, drawn, _ = _asd_and_pda(client, xa)
    pda["slots"] = [
        {"code": "PDA-NARROWEST", "value_mm": round(drawn[0]["value"], 1), "measurement": 0}
    ]
    saved = _save(client, study, pda)
    assert saved.status_code == 201, saved.json
    report = dcmread(BytesIO(archive.read(saved.json["sr_uid"])))
    assert (report.CompletionFlag, report.VerificationFlag, report.PreliminaryFlag) == (
        "PARTIAL",
        "UNVERIFIED",
        "PRELIMINARY",
    )
    items = list(_walk(report.ContentSequence))
    texts = {str(i.get("TextValue")) for i in items if i.ValueType == "TEXT"}
    assert "Window duct: consider surgery" in texts  # the note
    assert any(t.startswith("scale: catheter 6F") for t in texts)  # the scale source
    assert any("mm per pixel over 10.0 px" in t for t in texts)  # the calibration
    assert any(rule["source"] in t for t in texts for rule in saved.json["proposal"]["rules"])
    assert not any("{" in t for t in texts)  # every rule and warning filled in
    codes = [i for i in items if i.ValueType == "CODE"]
    krichenko = [i for i in codes if i.ConceptNameCodeSequence[0].CodeValue == "KRICHENKO-TYPE"]
    assert krichenko and krichenko[0].ConceptCodeSequence[0].CodeMeaning == "Krichenko type B"
    numbers = {
        str(i.ConceptNameCodeSequence[0].CodeMeaning): float(
            i.MeasuredValueSequence[0].NumericValue
        )
        for i in items
        if i.ValueType == "NUM"
    }
    assert numbers["Narrowest (pulmonary end) diameter"] == round(drawn[0]["value"], 1)
    assert numbers["Calibration reference length"] == pytest.approx(2.0)
    assert numbers["Length"] in (round(drawn[0]["value"], 2), round(drawn[1]["value"], 2))
    # The calipers as SCOORD on their image and frame.
    scoords = [i for i in items if i.ValueType == "SCOORD"]
    assert [20.0, 30.0, 60.0, 30.0] in [[float(v) for v in s.GraphicData] for s in scoords]
    frames = [
        ref.ReferencedSOPSequence[0].get("ReferencedFrameNumber")
        for s in scoords
        for ref in s.ContentSequence
    ]
    assert 3 in frames


@pytest.mark.peers
@pytest.mark.parametrize(
    "missing",
    [
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "StudyDate",
        "PatientSex",
        "PatientBirthDate",
        "ReferringPhysicianName",
    ],
)
def test_saving_works_whatever_type_2_attribute_the_evidence_lacks(
    client: FlaskClient, ingestor: Ingestor, archive: Archive, tmp_path: Path, missing: str
) -> None:
    from tests.test_ingest import instance

    assert ingestor.ingest(incoming(instance(**{missing: None}))).status == 0
    (path,) = archive.blobs.root.rglob("*.dcm")
    before = path.read_bytes()
    image = dcmread(path, stop_before_pixels=True)
    assert missing not in image  # the hospital's gap, as stored
    log_in(client)
    body = {
        "defect": "perimembranous VSD",
        "slots": [
            {
                "code": "VSD-LV-DIAMETER",
                "value_mm": 5.0,
                "instance_uid": str(image.SOPInstanceUID),
                "frame": 1,
            }
        ],
    }
    saved = _save(client, str(image.StudyInstanceUID), body)
    assert saved.status_code == 201, saved.json
    assert path.read_bytes() == before  # the stored instance is never changed
    written = tmp_path / "plan.dcm"
    written.write_bytes(archive.read(saved.json["sr_uid"]))
    assert errors(written) == set()


def test_a_meaning_longer_than_a_long_string_is_refused_by_the_table() -> None:
    """Code Meaning is LO (64 characters): a longer label stops the table
    being built, before any report; the report still cuts what it composes."""
    from viewer.planning import defects
    from viewer.planning.report import _lo

    long = defects.Defect("coarctation", (defects.mm("COA-ISTHMUS", "Narrowest" * 9),))
    with pytest.raises(defects.CatalogueError, match="64"):
        defects.table().adding(long)
    assert len(_lo("Closure plan " * 9)) == 64


def _refusals(client: FlaskClient, image: Dataset, other: Dataset) -> list[tuple[str, Any]]:
    uid = str(image.SOPInstanceUID)
    line = _measure(client, image, [[1, 1], [41, 1]], 0)  # as the page measured it
    assert line["unit"] == "mm" and line["calibration_id"] is None
    angle = {
        **line,
        "kind": "angle",
        "points": [[1, 1], [41, 1], [1, 41]],
        "unit": "°",
        "value": 90.0,
        "source": "angle",
    }
    slot = {"code": "PDA-NARROWEST", "value_mm": 2.5}
    pda = {"defect": "PDA", "slots": [slot]}
    return [
        ("not an object", []),
        ("defect missing", {"slots": [slot]}),
        ("defect unknown", {**pda, "defect": f"ASD {NAME}"}),
        ("defect a list", {**pda, "defect": ["PDA"]}),
        ("slots not a list", {**pda, "slots": "PDA-NARROWEST"}),
        ("slot not an object", {**pda, "slots": [1]}),
        ("slot code a number", {**pda, "slots": [{"code": 5, "value_mm": 2}]}),
        (
            "slot of another worksheet",
            {**pda, "slots": [{"code": "ASD-MAX-DIAMETER", "value_mm": 9}]},
        ),
        ("slot code a name", {**pda, "slots": [{"code": NAME, "value_mm": 9}]}),
        ("value a string", {**pda, "slots": [{**slot, "value_mm": "2.5"}]}),
        ("value a boolean", {**pda, "slots": [{**slot, "value_mm": True}]}),
        ("value negative", {**pda, "slots": [{**slot, "value_mm": -2.5}]}),
        ("value zero", {**pda, "slots": [{**slot, "value_mm": 0}]}),
        ("value huge", {**pda, "slots": [{**slot, "value_mm": 1e308}]}),
        ("value centimetres slip", {**pda, "slots": [{**slot, "value_mm": 250}]}),
        ("the same slot twice", {**pda, "slots": [slot, slot]}),
        ("too many slots", {**pda, "slots": [slot] * 41}),
        (
            "image of another study",
            {**pda, "slots": [{**slot, "instance_uid": str(other.SOPInstanceUID)}]},
        ),
        ("image a path", {**pda, "slots": [{**slot, "instance_uid": "../../etc/passwd"}]}),
        ("frame 0", {**pda, "slots": [{**slot, "instance_uid": uid, "frame": 0}]}),
        ("frame beyond the run", {**pda, "slots": [{**slot, "instance_uid": uid, "frame": 5}]}),
        ("frame a string", {**pda, "slots": [{**slot, "instance_uid": uid, "frame": "2"}]}),
        ("linked to no measurement", {**pda, "slots": [{**slot, "measurement": 0}]}),
        (
            "linked to an angle",
            {**pda, "slots": [{**slot, "measurement": 0}], "measurements": [angle]},
        ),
        (
            "value not the measurement's",
            {**pda, "slots": [{**slot, "measurement": 0}], "measurements": [line]},
        ),
        (
            "a value its points do not give",
            {**pda, "measurements": [{**line, "value": line["value"] + 1}]},
        ),
        (
            "a length in the wrong unit",
            {**pda, "measurements": [{**line, "unit": "px"}]},
        ),
        ("rims on a PDA", {**pda, "rims": {"aortic": 4.0}}),
        ("rim unknown", {"defect": "secundum ASD", "rims": {NAME: 4.0}}),
        ("rim negative", {"defect": "secundum ASD", "rims": {"aortic": -1}}),
        ("rim a string", {"defect": "secundum ASD", "rims": {"aortic": "4"}}),
        ("rims a list", {"defect": "secundum ASD", "rims": [4.0]}),
        ("krichenko F", {**pda, "krichenko": "F"}),
        ("krichenko a list", {**pda, "krichenko": ["A"]}),
        ("krichenko for an ASD", {"defect": "secundum ASD", "krichenko": "A"}),
        ("note too long", {**pda, "note": NAME * 400}),
        ("note a number", {**pda, "note": 5}),
        ("too many measurements", {**pda, "measurements": [line] * 201}),
        ("measurements not a list", {**pda, "measurements": "many"}),
        (
            "measurement outside the image",
            {**pda, "measurements": [{**line, "points": [[1, 1], [500, 1]]}]},
        ),
        (
            "measurement of another study",
            {**pda, "measurements": [{**line, "uid": str(other.SOPInstanceUID)}]},
        ),
        ("measurement beyond the frames", {**pda, "measurements": [{**line, "frame": 4}]}),
        ("measurement a circle", {**pda, "measurements": [{**line, "kind": "circle"}]}),
        ("measurement in km", {**pda, "measurements": [{**line, "unit": "km"}]}),
        ("angle of two points", {**pda, "measurements": [{**line, "kind": "angle", "unit": "°"}]}),
        (
            "measurement of no calibration",
            {**pda, "measurements": [{**line, "calibration_id": 3}]},
        ),
        ("calibrations garbage", {**pda, "calibrations": [{"id": "x"}]}),
        (
            "calibration of another study",
            {**pda, "calibrations": [{**_catheter(other), "scope": {**_catheter(other)["scope"]}}]},
        ),
        (
            "legacy calibration object",
            {**pda, "calibration": {"points": [[0, 0], [1, 0]], "french": 6}},
        ),
        ("plan a word", {**pda, "plan": "mine"}),
        ("plan 0", {**pda, "plan": 0}),
        ("plan true", {**pda, "plan": True}),
        ("plan unknown", {**pda, "plan": 7}),
        ("based_on a string", {**pda, "based_on": "1"}),
    ]


@pytest.mark.slow
def test_garbage_is_a_400_that_says_what_never_a_500(
    client: FlaskClient, xa: Dataset, ingestor: Ingestor, archive: Archive
) -> None:
    other_ds = xa_instance(PATIENTS[1], frames=1, rows=32, cols=32)
    assert ingestor.ingest(incoming(other_ds, calling_ae="BISHKEK_CATH")).status == 0
    other = next(
        dcmread(p, stop_before_pixels=True)
        for p in archive.blobs.root.rglob("*.dcm")
        if dcmread(p, stop_before_pixels=True).StudyInstanceUID != xa.StudyInstanceUID
    )
    study = str(xa.StudyInstanceUID)
    seen = set()
    for why, body in _refusals(client, xa, other):
        answer = _save(client, study, body)
        assert answer.status_code == 400, (why, answer.status_code, answer.json)
        message = answer.json["message"]
        assert message and "unexpected" not in message, why
        assert "Иванов" not in message and "passwd" not in message, why
        seen.add(message)
    assert len(seen) > 25  # each says what is wrong, not one message for all
    raw = {
        "NaN": '{"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": NaN}]}',
        "Infinity": '{"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": Infinity}]}',
        "a number past floats": '{"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", '
        '"value_mm": 1' + "0" * 400 + "}]}",
        "NaN point": '{"defect": "PDA", "measurements": [{"uid": "1.2", "frame": 0, '
        '"kind": "length", "points": [[NaN, 1], [2, 2]], "value": 1, "unit": "px", '
        '"source": "x"}]}',
        "not JSON": "{defect: PDA",
        "deeply nested": "[" * 100_000 + "]" * 100_000,
        "null": "null",
    }
    for why, text in raw.items():
        answer = client.post(
            f"/api/studies/{study}/plans",
            headers=HEADERS,
            data=text,
            content_type="application/json",
        )
        assert answer.status_code == 400, (why, answer.status_code, answer.json)
    big = {"defect": "PDA", "note": "x" * (1 << 20)}
    assert _save(client, study, big).status_code == 413
    assert client.get(f"/api/studies/{study}/plans").json == []  # nothing stored
    assert archive.index.stats()["modalities"].get("SR") is None  # no report either
    assert _save(client, "2.25.9", {"defect": "PDA"}).status_code == 404


@pytest.mark.slow
def test_refusals_can_be_shown_in_the_users_language(client: FlaskClient, xa: Dataset) -> None:
    answer = _save(client, str(xa.StudyInstanceUID), {"defect": "PDA", "note": "x" * 4001})
    assert answer.json["text"] == "note: at most {n} characters"
    assert answer.json["values"] == {"n": 4000}
    assert answer.json["message"] == "note: at most 4000 characters"


@pytest.mark.peers
def test_a_cardiologist_signs_a_version_which_is_then_read_only(
    client: FlaskClient, xa: Dataset, archive: Archive, tmp_path: Path
) -> None:
    from werkzeug.security import generate_password_hash

    study = str(xa.StudyInstanceUID)
    asd, _, _, _ = _asd_and_pda(client, xa)
    saved = _save(client, study, asd).json
    sign = f"/api/studies/{study}/plans/1/versions/1/sign"
    assert client.post(sign).status_code == 400  # no CSRF token
    archive.index.accounts.add("li", generate_password_hash("x" * 16), "researcher")
    as_user(client, "li")
    assert client.post(sign, headers=HEADERS).status_code == 403
    as_user(client, "amina")
    signed = client.post(sign, headers=HEADERS)
    assert signed.status_code == 201, signed.json
    assert signed.json["signed_by"] == "amina" and signed.json["signed_at"]
    again = client.post(sign, headers=HEADERS)
    assert again.status_code == 409 and "already signed" in again.json["message"]
    assert (
        client.post(f"/api/studies/{study}/plans/1/versions/2/sign", headers=HEADERS).status_code
        == 404
    )
    assert (
        client.post(f"/api/studies/{study}/plans/5/versions/1/sign", headers=HEADERS).status_code
        == 404
    )

    unsigned_path, signed_path = tmp_path / "unsigned.dcm", tmp_path / "signed.dcm"
    unsigned_path.write_bytes(archive.read(saved["sr_uid"]))
    signed_path.write_bytes(archive.read(signed.json["signed_sr_uid"]))
    report = dcmread(signed_path)
    assert (report.CompletionFlag, report.VerificationFlag, report.PreliminaryFlag) == (
        "COMPLETE",
        "VERIFIED",
        "FINAL",
    )
    (observer,) = report.VerifyingObserverSequence
    assert str(observer.VerifyingObserverName) == "amina^"
    assert observer.VerifyingOrganization and observer.VerificationDateTime
    (predecessor,) = report.PredecessorDocumentsSequence
    referenced = predecessor.ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert referenced.ReferencedSOPInstanceUID == saved["sr_uid"]
    assert report.SeriesInstanceUID == dcmread(unsigned_path).SeriesInstanceUID
    assert report.InstanceNumber == 2
    assert errors(unsigned_path) == set() and errors(signed_path) == set()

    listed = client.get(f"/api/studies/{study}/plans").json
    assert listed[0]["signed_by"] == "amina" and listed[0]["signed_sr_uid"] == report.SOPInstanceUID
    # A change after the signature is a new, unsigned version; the signed one stays.
    after = _save(client, study, {**asd, "plan": 1, "based_on": 1, "note": "changed"})
    assert after.status_code == 201 and after.json["version"] == 2
    assert after.json["signed_by"] is None
    stale = _save(client, study, {**asd, "plan": 1, "based_on": 1, "note": "other tab"})
    assert stale.status_code == 409 and "reopen" in stale.json["message"]
    first = client.get(f"/api/studies/{study}/plans").json[0]
    assert first["content"]["note"] == asd["note"] and first["signed_by"] == "amina"
    events = [r["event"] for r in archive.index.audit.rows(limit=10)]
    assert "plan-sign" in events and "plan-save" in events
    html = client.get(f"/studies/{study}/plan/print?plan=1&version=1").get_data(as_text=True)
    assert "Signed by amina" in html


@pytest.mark.slow
def test_plans_saved_before_plans_per_defect_list_open_print_and_sign(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    study, uid = str(xa.StudyInstanceUID), str(xa.SOPInstanceUID)
    legacy = {  # as the code before plans per defect saved it
        "slots": [
            {
                "code": "ASD-MAX-DIAMETER",
                "value_mm": 14.0,
                "instance_uid": uid,
                "frame": 2,
                "meaning": "ASD maximal diameter (view 1)",
            }
        ],
        "rims": {"aortic": 3.5, "IVC": 8.0},
        "deficient_rims": ["aortic"],
        "note": "old note",
        "krichenko": None,
        "calibration": {"points": [[0, 0], [10, 0]], "french": 6},
        "measurements": [
            {
                "uid": uid,
                "frame": 1,
                "kind": "length",
                "points": [[10, 10], [50, 10]],
                "value": 8.0,
                "unit": "mm",
                "source": "catheter 6F",
            }
        ],
        "proposal": {
            "sizes": ["16 mm", "17 mm"],
            "rule": {
                "defect": "secundum ASD",
                "says": "waist = stretched diameter",
                "source": "Amplatzer Septal Occluder instructions for use",
            },
            "basis": "largest echo diameter 14.0 mm + 2.0 mm margin",
            "warnings": ["deficient aortic rim"],
        },
    }
    archive.index.plans.add(study, "secundum ASD", legacy, "amina", None)
    listed = client.get(f"/api/studies/{study}/plans").json
    assert [(v["plan"], v["version"]) for v in listed] == [(1, 1)]
    html = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    for expected in (
        "old note",
        "deficient aortic rim",
        "largest echo diameter 14.0 mm",
        "catheter 6F",
        "applies to every measurement of the plan (saved before scopes)",
        "Amplatzer Septal Occluder instructions for use",
        "frame 2",
    ):
        assert expected in html, expected
    assert 'data-frame="2"' in html, html
    assert 'data-label="1" x1="10" y1="10" x2="50" y2="10"' in html
    signed = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 201, signed.json
    report = dcmread(BytesIO(archive.read(signed.json["signed_sr_uid"])))
    assert report.VerificationFlag == "VERIFIED" and "PredecessorDocumentsSequence" not in report
    # Opened for editing and saved: a new version of the same plan.
    again = _save(
        client,
        study,
        {
            "defect": "secundum ASD",
            "plan": 1,
            "based_on": 1,
            "slots": [
                {"code": "ASD-MAX-DIAMETER", "value_mm": 14.0, "instance_uid": uid, "frame": 2}
            ],
        },
    )
    assert again.status_code == 201 and again.json["version"] == 2, again.json


@pytest.mark.peers
def test_the_research_export_replaces_the_verifying_observer(
    client: FlaskClient, xa: Dataset, archive: Archive, config: Config, tmp_path: Path
) -> None:
    from dicomnode.jobs.export import Cohort, export
    from tests.test_export import unpack

    study = str(xa.StudyInstanceUID)
    asd, _, _, _ = _asd_and_pda(client, xa)
    assert _save(client, study, asd).status_code == 201
    signed = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 201
    assert b"amina" in archive.read(signed.json["signed_sr_uid"])  # in the archive: the signer
    export(config, archive, Cohort(), tmp_path / "out.zip", progress=False)
    unpack(tmp_path / "out.zip", tmp_path / "x")
    reports = []
    for path in (tmp_path / "x").rglob("*"):
        if path.is_file():
            assert b"amina" not in path.read_bytes(), path.name
            if path.name != "DICOMDIR" and path.suffix not in (".csv", ".json", ".txt"):
                ds = dcmread(path, stop_before_pixels=True)
                if ds.Modality == "SR":
                    reports.append(ds)
    verified = [r for r in reports if r.get("VerificationFlag") == "VERIFIED"]
    assert verified, [r.get("VerificationFlag") for r in reports]
    for report in verified:
        for observer in report.get("VerifyingObserverSequence", []):
            assert str(observer.get("VerifyingObserverName", "")) != "amina^"
            assert "exchange node" not in str(observer.get("VerifyingOrganization", ""))
        names = [str(e.value) for e in report.iterall() if e.keyword == "PersonName"]
        assert "Cardiologist^CHD node" not in names


@pytest.mark.slow
def test_the_page_draws_its_forms_from_the_server(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    from werkzeug.security import generate_password_hash

    from viewer.planning import worksheet

    script = (Path(__file__).parents[1] / "viewer" / "static" / "planning.js").read_text()
    assert "const SLOTS" not in script and "const RIMS" not in script  # no copy of its own
    page = client.get(f"/studies/{xa.StudyInstanceUID}").get_data(as_text=True)
    block = re.search(r'<script type="application/json" id="plan-forms">(.*?)</script>', page, re.S)
    assert block is not None and json.loads(block[1]) == worksheet.as_json()
    assert 'id="plan-editor"' in page and 'id="sign-plan"' in page
    archive.index.accounts.add("li", generate_password_hash("x" * 16), "researcher")
    as_user(client, "li")
    seen = client.get(f"/studies/{xa.StudyInstanceUID}").get_data(as_text=True)
    assert 'id="plans"' in seen and 'id="plan-editor"' not in seen  # the list, not the editor


def test_the_report_series_label_is_translated(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask

    from viewer import i18n
    from viewer.planning.pages import report_label

    table = {"Closure plan ({defect})": "План закрытия ({defect})", "PDA": "ОАП"}
    monkeypatch.setattr(i18n, "catalogue", lambda language: table if language == "ru" else {})
    monkeypatch.setattr(i18n, "language", lambda: "ru")
    with Flask(__name__).test_request_context():
        assert report_label("Closure plan (PDA) #2") == "План закрытия (ОАП) #2"
        assert (
            report_label("Closure plan (PDA) 2026-01-02 10:00")
            == "План закрытия (ОАП) 2026-01-02 10:00"
        )
        assert report_label("Echo report") == "Echo report"  # another sender's: as sent
        assert report_label(None) == ""


@pytest.mark.slow
def test_the_plan_travels_as_a_measurement_report(ingestor, archive, tmp_path) -> None:
    """The report builder alone (as the export tests use it): a worksheet
    value and a rim from the stored, de-identified clip."""
    data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
    assert ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
    clip = _stored_image(archive)
    slots = [
        Slot("ASD-MAX-DIAMETER", 14.2, str(clip.SOPInstanceUID), 37),
        rim_slot("aortic", 3.1),
    ]
    sr = measurement_report(
        [clip], slots, defect="secundum ASD", observer=observer_name("cardiologist")
    )
    result = ingestor.ingest_own(sr, issuer="NCC Bishkek")
    assert result.outcome is Outcome.STORED, result
    series = list(
        archive.index.find(
            Query(
                Level.SERIES,
                {
                    "StudyInstanceUID": str(clip.StudyInstanceUID),
                    "Modality": "",
                    "SeriesDescription": "",
                },
            )
        )
    )
    assert sorted(s["Modality"] for s in series) == ["SR", "US"]
    path = tmp_path / "plan.dcm"
    path.write_bytes(archive.read(str(sr.SOPInstanceUID)))
    written = dcmread(path)
    assert written.PatientID == clip.PatientID  # the pseudonym, not remapped
    text = str(written.ContentSequence)
    assert "ASD maximal diameter (view 1)" in text and "14.2" in text and "millimeter" in text
    assert "aortic rim" in text and "Cardiologist^CHD node" in text
    assert str(clip.SOPInstanceUID) in text  # references the measured frame's image
    assert errors(path) == set()
    assert archive.index.stats()["patients"] == 1  # filed under the same pseudonym


def test_slot_meanings_are_the_servers() -> None:
    from viewer.planning.worksheet import UnknownSlot, worksheet_slot

    assert (
        worksheet_slot("PDA", "PDA-NARROWEST", 2.5).meaning == "Narrowest (pulmonary end) diameter"
    )
    for defect, code in (("PDA", "ASD-MAX-DIAMETER"), ("PDA", "ASD Иванов Алибек max")):
        with pytest.raises(UnknownSlot) as refused:
            worksheet_slot(defect, code, 1.0)
        assert "Иванов" not in str(refused.value) and "PDA-NARROWEST" in str(refused.value)
    with pytest.raises(UnknownSlot):
        Slot("ASD Иванов Алибек max", 1.0)


@pytest.mark.slow
def test_no_version_and_no_signature_without_its_report(
    client: FlaskClient, xa: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The archive refuses the report (a full disk): the plan is not saved
    (503, say so), and a signature is not kept either."""
    from dicomnode.ingest.pipeline import IngestResult

    study = str(xa.StudyInstanceUID)
    body = {"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}]}
    assert _save(client, study, body).status_code == 201
    ingestor = client.application.extensions["ingestor"]
    refused = IngestResult(Outcome.REJECTED, 0xA700, "out of resources")
    monkeypatch.setattr(ingestor, "ingest_own", lambda *_: refused)
    failed = _save(client, study, {**body, "plan": 1, "based_on": 1})
    assert failed.status_code == 503 and "not saved" in failed.json["message"]
    sign = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert sign.status_code == 503 and "not signed" in sign.json["message"]
    listed = client.get(f"/api/studies/{study}/plans").json
    assert [(v["version"], v["signed_by"]) for v in listed] == [(1, None)]
    monkeypatch.undo()
    signed = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert signed.status_code == 201  # the claim was released
    assert _save(client, study, {**body, "plan": 1, "based_on": 1}).json["version"] == 2


@pytest.mark.slow
def test_a_scale_source_is_the_servers_not_the_browsers(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    line = _measure(client, xa, [[1, 1], [41, 1]], 0)
    forged = {**line, "source": f"scale by {NAME}"}
    body = {"defect": "PDA", "measurements": [forged], "note": ""}
    saved = _save(client, str(xa.StudyInstanceUID), body)
    assert saved.status_code == 201, saved.json
    assert saved.json["measurements"][0]["source"] == line["source"]
    assert NAME.encode() not in archive.read(saved.json["sr_uid"])


# --- Review of #15: notes de-identified, versions continued and signed as opened, 0.1 mm ---

# The child of the ``xa`` fixture is PATIENTS[0]: Иванов^Алишер, KG-000101, born 20190314.
IDENTIFYING_NOTES = [
    ("the child's given name, transliterated", "Alisher was calm under sedation", "a name"),
    ("the child's surname, declined", "У Иванова шунт слева направо", "a name"),
    ("the child's ID", "see KG-000101 in the HIS", "an identifying number"),
    ("a record number", "history no. 4455667", "an identifying number"),
    ("the birth date, rewritten", "born 14.3.2019, weight 12 kg", "a date"),
    ("any date", "next echo 02/11/2025", "a date"),
    ("a phone", "call mother on +996 555 123 456", "a phone number"),
    ("a phone in brackets", "ring 0 (555) 123-456 before", "a phone number"),
    ("a parent by context", "mother Gulnara consents", "a name"),
    ("a surname by form", "discussed with Kadyrova", "a name"),
    ("a name spelt out", "I V A N O V", "a name"),
    ("an address", "lives at ул. Токтогула 125, кв 4", "an address"),
]


@pytest.mark.slow
def test_the_reviewers_note_is_refused_by_the_childs_sealed_name(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    """A name of no telling form ("Zxqvbnm Reviewtest") after a word that is
    no context: known only from the child's identity as received."""
    from dicomnode.ops.samples import SyntheticPatient

    child = SyntheticPatient("Reviewtest^Zxqvbnm", "ZQ987654", "20201010", "F", "ISO_IR 192")
    ds = xa_instance(child, frames=2, rows=32, cols=32)
    assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    log_in(client)
    study = str(_stored_image(archive).StudyInstanceUID)
    for note in (
        "Patient Zxqvbnm Reviewtest, ID ZQ987654, born 10.10.2020, tel +996 555 12 34 56",
        "pt zxqvbnm reviewtest",
        "Зхкввбнм Ревьютест",
    ):
        answer = _save(client, study, {"defect": "PDA", "note": note})
        assert answer.status_code == 400, (note, answer.json)
        assert answer.json["values"] == {"what": "a name"}, note
        assert "Zxqvbnm" not in answer.get_data(as_text=True)
    assert client.get(f"/api/studies/{study}/plans").json == []


@pytest.mark.parametrize(("why", "note", "what"), IDENTIFYING_NOTES)
def test_a_note_that_identifies_anyone_is_refused_saying_what_kind(
    client: FlaskClient, xa: Dataset, archive: Archive, why: str, note: str, what: str
) -> None:
    body = {"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}], "note": note}
    answer = _save(client, str(xa.StudyInstanceUID), body)
    assert answer.status_code == 400, (why, answer.json)
    assert answer.json["values"] == {"what": what}, why
    assert "de-identified" in answer.json["text"]
    assert answer.json["message"] == answer.json["text"].format(what=what)  # never quoted
    assert client.get(f"/api/studies/{xa.StudyInstanceUID}/plans").json == []


@pytest.mark.slow
def test_a_note_in_the_worksheets_own_words_is_kept(
    client: FlaskClient, xa: Dataset, archive: Archive
) -> None:
    note = (
        "Krichenko type A, тип A по Криченко, 克里琴科 A 型; ADO 6/4 (Amplatzer), "
        "per Thanopoulos et al. 2003 and Butera 2007. Qp/Qs 1.8, PAP 45/20 mmHg, 12.5 kg; "
        "Eisenmenger excluded. Doppler 3.2 m/s. Mother consents."
    )
    body = {"defect": "PDA", "krichenko": "A", "note": note}
    saved = _save(client, str(xa.StudyInstanceUID), body)
    assert saved.status_code == 201, saved.json
    assert saved.json["note"] == note


@pytest.mark.slow
def test_a_note_with_a_lone_surrogate_is_a_400(client: FlaskClient, xa: Dataset) -> None:
    study = str(xa.StudyInstanceUID)
    for text in ('"a\\ud800b"', '"\\udfff"', '"ok \\ud83d"'):
        answer = client.post(
            f"/api/studies/{study}/plans",
            headers=HEADERS,
            data='{"defect": "PDA", "note": ' + text + "}",
            content_type="application/json",
        )
        assert answer.status_code == 400, (text, answer.status_code)
        assert answer.json["text"] == "note: a character that is not valid text"
    emoji = client.post(  # a proper pair is a character like any other
        f"/api/studies/{study}/plans",
        headers=HEADERS,
        data='{"defect": "PDA", "note": "ok \\ud83d\\ude00"}',
        content_type="application/json",
    )
    assert emoji.status_code == 201, emoji.json


@pytest.mark.slow
def test_every_string_of_a_plan_with_a_lone_surrogate_is_a_400_not_a_500(
    client: FlaskClient, xa: Dataset
) -> None:
    study = str(xa.StudyInstanceUID)
    line = json.dumps(_measure(client, xa, [[1, 1], [41, 1]], 0))
    catheter = json.dumps(_catheter(xa))
    bad = '"x\\ud800"'
    start = '{"plan": "new", '
    bodies = {
        "defect": start + '"defect": ' + bad + "}",
        "slot code": start + '"defect": "PDA", "slots": [{"code": ' + bad + ', "value_mm": 2}]}',
        "rim": start + '"defect": "secundum ASD", "rims": {' + bad + ": 4}}",
        "krichenko": start + '"defect": "PDA", "krichenko": ' + bad + "}",
        "measurement source": start
        + '"defect": "PDA", "measurements": ['
        + line[:-1]
        + ', "source": '
        + bad
        + "}]}",
        "measurement uid": start
        + '"defect": "PDA", "measurements": ['
        + line[:-1]
        + ', "uid": '
        + bad
        + "}]}",
        "calibration": start
        + '"defect": "PDA", "calibrations": ['
        + catheter[:-1]
        + ', "x": '
        + bad
        + "}]}",
        "slot instance": start
        + '"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2, '
        '"instance_uid": ' + bad + "}]}",
    }
    for why, text in bodies.items():
        answer = client.post(
            f"/api/studies/{study}/plans",
            headers=HEADERS,
            data=text,
            content_type="application/json",
        )
        assert answer.status_code in (201, 400), (why, answer.status_code, answer.json)


@pytest.mark.slow
def test_a_save_to_an_existing_plan_must_say_which_version_it_continues(
    client: FlaskClient, xa: Dataset
) -> None:
    study = str(xa.StudyInstanceUID)
    body = {"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}]}
    assert _save(client, study, {**body, "plan": "new"}).status_code == 201
    assert _save(client, study, {**body, "plan": 1, "based_on": 1}).status_code == 201  # v2
    for plan in ({"plan": 1}, {"plan": 1, "based_on": None}, {}, {"based_on": None}):
        answer = _save(client, study, {**body, **plan, "note": "over another's work"})
        assert answer.status_code == 409, (plan, answer.json)
        assert answer.json["values"] == {"plan": 1, "version": 2}
        assert "based_on" in answer.json["message"]
    stale = _save(client, study, {**body, "plan": 1, "based_on": 1})
    assert stale.status_code == 409 and "reopen" in stale.json["message"]
    listed = client.get(f"/api/studies/{study}/plans").json
    assert [v["version"] for v in listed] == [1, 2]


@pytest.mark.slow
def test_only_the_latest_version_is_signed(client: FlaskClient, xa: Dataset) -> None:
    study = str(xa.StudyInstanceUID)
    body = {"defect": "PDA", "slots": [{"code": "PDA-NARROWEST", "value_mm": 2.5}]}
    assert _save(client, study, body).status_code == 201
    assert _save(client, study, {**body, "plan": 1, "based_on": 1}).status_code == 201
    old = client.post(f"/api/studies/{study}/plans/1/versions/1/sign", headers=HEADERS)
    assert old.status_code == 409, old.json
    assert old.json["values"] == {"plan": 1, "version": 1, "latest": 2}
    assert "only the latest version" in old.json["message"]
    listed = client.get(f"/api/studies/{study}/plans").json
    assert [v["signed_by"] for v in listed] == [None, None]
    latest = client.post(f"/api/studies/{study}/plans/1/versions/2/sign", headers=HEADERS)
    assert latest.status_code == 201, latest.json


@pytest.mark.slow
@pytest.mark.parametrize(
    ("given", "kept"),
    [(4.05, 4.1), (4.04999, 4.0), (2.25, 2.3), (2.35, 2.4), (0.15, 0.2), (9.95, 10.0), (3.0, 3.0)],
)
def test_worksheet_values_are_kept_in_tenths_half_away_from_zero(
    client: FlaskClient, xa: Dataset, archive: Archive, given: float, kept: float
) -> None:
    body = {
        "defect": "secundum ASD",
        "slots": [{"code": "ASD-MAX-DIAMETER", "value_mm": given}],
        "rims": {"aortic": given},
    }
    saved = _save(client, str(xa.StudyInstanceUID), body)
    assert saved.status_code == 201, saved.json
    assert saved.json["slots"][0]["value_mm"] == kept
    assert saved.json["rims"]["aortic"] == kept
    report = dcmread(BytesIO(archive.read(saved.json["sr_uid"])))
    numbers = [
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in _walk(report.ContentSequence)
        if i.ValueType == "NUM"
    ]
    assert kept in numbers and (given not in numbers or given == kept)


@pytest.mark.slow
def test_the_summary_says_which_run_and_frame_each_measurement_came_from(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    """LAO and RAO runs told apart on paper: modality, series description and
    number, run of its series, frame; in the table and under the key images.
    Several plans: each named once in the title, with its number."""
    from pydicom.uid import generate_uid

    study_uid, rao = generate_uid(), generate_uid()
    lao = xa_instance(PATIENTS[0], frames=4, rows=64, cols=80, study_uid=study_uid)
    runs = [
        xa_instance(
            PATIENTS[0],
            frames=5,
            rows=64,
            cols=80,
            study_uid=study_uid,
            series_uid=rao,
            instance_number=n,
        )
        for n in (1, 2)
    ]
    for ds in runs:
        ds.SeriesDescription, ds.SeriesNumber = "RAO 30", 2
    for ds in (lao, *runs):
        assert ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    log_in(client)
    stored = {}
    for path in archive.blobs.root.rglob("*.dcm"):
        found = dcmread(path, stop_before_pixels=True)
        stored[(str(found.SeriesDescription), int(found.InstanceNumber))] = found
    first, second = stored[("LAO 30 CRA 20", 1)], stored[("RAO 30", 2)]
    drawn = [
        _measure(client, first, [[20, 30], [60, 30]], 2),
        _measure(client, second, [[10, 10], [50, 10]], 3),
    ]
    study = str(first.StudyInstanceUID)
    body = {"defect": "PDA", "plan": "new", "measurements": drawn}
    assert _save(client, study, body).status_code == 201
    assert _save(client, study, {"defect": "secundum ASD", "plan": "new"}).status_code == 201
    assert _save(client, study, {"defect": "PDA", "plan": "new"}).status_code == 201
    html = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    cells = [" ".join(c.split()) for c in re.findall(r'<td class="image">(.*?)</td>', html, re.S)]
    assert cells == [
        "XA · LAO 30 CRA 20 · series 1 · run 1 of 1 · frame 3",
        "XA · RAO 30 · series 2 · run 2 of 2 · frame 4",
    ]
    captions = [
        " ".join(c.split()) for c in re.findall(r"<figcaption>(.*?)</figcaption>", html, re.S)
    ]
    assert captions == [
        "XA · LAO 30 CRA 20 · series 1 · run 1 of 1 · frame 3 · 1",
        "XA · RAO 30 · series 2 · run 2 of 2 · frame 4 · 2",
    ]
    (title,) = re.findall(r"<h1>(.*?)</h1>", html, re.S)
    assert " ".join(title.split()) == (
        "Closure plans: PDA (plan 1), secundum ASD (plan 2), PDA (plan 3)"
    )
    one = client.get(f"/studies/{study}/plan/print?plan=2").get_data(as_text=True)
    assert re.search(r"<h1>\s*Closure plan: secundum ASD\s*</h1>", one)
