"""Doppler and M-mode measurements in a closure plan and its SR.

A PDA plan keeps the duct's velocity and gradient, a traced VTI, an
interval and an M-mode distance as the measure endpoint gives them (the
server measures them again from their points through the stored region;
what the browser claims is not what is written), and its SR states each
value under its concept code (LOINC where PS3.16 CID 12304 has one) with
the points as SCOORD on the Doppler image: a file dciodvfy finds nothing
wrong with and highdicom reads back. What a careless or hostile sender
gives instead (a calibration, an edited value, a trace too short, a point
off the region) is a 400 saying why, and nothing is saved.
"""

from __future__ import annotations

from copy import deepcopy
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import pytest
from flask.testing import FlaskClient
from highdicom.sr import CodedConcept
from pydicom import dcmread
from pydicom.uid import generate_uid

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import (
    BASELINE,
    DOPPLER_TOP,
    HEADERS,
    TRUE_VTI,
    cardiologist,
    doppler_phantom,
    envelope,
    m_mode_phantom,
)
from tests.test_planning import _walk
from tests.test_written_files import errors

PEAK_ROW = DOPPLER_TOP + BASELINE - 50  # 2.0 m/s toward the probe
BELOW_ROW = DOPPLER_TOP + BASELINE + 25  # 1.0 m/s away


def _measured(client: FlaskClient, uid: str, kind: str, points: list) -> dict[str, Any]:
    found = client.post(
        f"/api/instances/{uid}/measure",
        headers=HEADERS,
        json={"kind": kind, "points": points, "frame": 0},
    )
    assert found.status_code == 200, found.json
    return {"uid": uid, "frame": 0, "kind": kind, "points": points, **found.json}  # type: ignore[dict-item]


def saved_report(
    client: FlaskClient, archive: Archive, study: str, plan: dict[str, Any], tmp_path: Path
) -> tuple[dict[str, Any], Path]:
    """``plan`` saved (201) and its SR written to a file dciodvfy finds
    nothing wrong with: (the save's answer, the file)."""
    saved = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=plan)
    assert saved.status_code == 201, saved.json
    path = tmp_path / "plan.dcm"
    path.write_bytes(archive.read(saved.json["sr_uid"]))
    assert errors(path) == set()
    return saved.json, path


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    return cardiologist(config, archive)


@pytest.fixture
def stored(ingestor: Ingestor) -> tuple[str, str, str]:
    """(study, Doppler image, M-mode image): one child's echo."""
    doppler_image = doppler_phantom()
    m_mode = m_mode_phantom()
    m_mode.StudyInstanceUID = doppler_image.StudyInstanceUID
    m_mode.SeriesInstanceUID = generate_uid()
    uids = []
    for ds in (doppler_image, m_mode):
        result = ingestor.ingest(incoming(ds))
        assert result.status == 0, result
        uids.append(str(result.dataset.SOPInstanceUID))
    return str(result.dataset.StudyInstanceUID), uids[0], uids[1]


def _plan(client: FlaskClient, doppler_uid: str, m_mode_uid: str) -> dict[str, Any]:
    trace = [[round(x), round(y)] for x, y in envelope(step=3)]
    return {
        "defect": "PDA",
        "plan": "new",
        "slots": [],
        "measurements": [
            _measured(client, doppler_uid, "velocity", [[100, PEAK_ROW]]),
            _measured(client, doppler_uid, "velocity", [[150, BELOW_ROW]]),
            _measured(client, doppler_uid, "vti", trace),
            _measured(client, doppler_uid, "interval", [[100, 300], [260, 310]]),
            _measured(client, m_mode_uid, "m-mode", [[100, 150], [180, 190]]),
        ],
    }


def test_a_plan_keeps_doppler_and_m_mode_and_its_sr_codes_them(
    client: FlaskClient, stored: tuple[str, str, str], archive: Archive, tmp_path: Path
) -> None:
    study, doppler_uid, m_mode_uid = stored
    plan = _plan(client, doppler_uid, m_mode_uid)
    for m in plan["measurements"]:
        m["source"] = "my own ruler"  # the browser's word is not what is kept
    _, path = saved_report(client, archive, study, plan, tmp_path)
    report = dcmread(path)
    numbers: dict[tuple[str, str], list[float]] = {}
    for item in _walk(report.ContentSequence):
        if item.ValueType == "NUM":
            code = item.ConceptNameCodeSequence[0]
            value = item.MeasuredValueSequence[0]
            unit = value.MeasurementUnitsCodeSequence[0].CodeValue
            numbers.setdefault(
                (f"{code.CodingSchemeDesignator}:{code.CodeValue}", unit), []
            ).append(float(value.NumericValue))
    peak_velocities = numbers[("LN:11726-7", "m/s")]
    # Either side of the baseline, and the trace's peak.
    assert sorted(peak_velocities) == [-1.0, 2.0, pytest.approx(2.0, abs=0.04)]
    assert sorted(numbers[("LN:20247-3", "mm[Hg]")])[:2] == [4.0, pytest.approx(16.0, rel=0.04)]
    (vti,) = numbers[("LN:20354-7", "cm")]
    assert vti == pytest.approx(TRUE_VTI, rel=0.02)
    assert ("LN:20352-1", "m/s") in numbers and ("LN:20256-4", "mm[Hg]") in numbers
    assert numbers[("99CHDNODE:TIME-INTERVAL", "ms")] == [800.0, 400.0]  # interval, M-mode
    assert numbers[("99CHDNODE:CYCLE-RATE", "/min")] == [75.0]
    assert numbers[("DCM:121206", "mm")] == [8.0]
    assert numbers[("99CHDNODE:M-MODE-SLOPE", "mm/s")] == [20.0]
    texts = {str(i.get("TextValue")) for i in _walk(report.ContentSequence)}
    assert "scale: PW spectral Doppler region 2 (s, cm/s)" in texts
    assert "scale: M-mode region 1 (s, cm)" in texts
    assert not any("my own ruler" in t for t in texts)
    scoords = [i for i in _walk(report.ContentSequence) if i.ValueType == "SCOORD"]
    assert [100.0, float(PEAK_ROW)] in [[float(v) for v in s.GraphicData] for s in scoords]
    assert "POINT" in {s.GraphicType for s in scoords}
    read = hd.sr.srread(path)  # highdicom reads it back as a measurement report
    (group,) = read.content.get_image_measurement_groups()
    (traced,) = group.get_measurements(name=CodedConcept("20354-7", "LN", "VTI"))
    assert traced.value == pytest.approx(TRUE_VTI, rel=0.02) and traced.unit.value == "cm"


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda m: m.update(value=2.5), "does not follow from its points"),
        (lambda m: m.update(calibration_id=1), "calibration"),
        (lambda m: m.update(points=[[100, 100]]), "not a spectral Doppler region"),
        (lambda m: m.update(points=[[100, PEAK_ROW], [110, PEAK_ROW]]), "velocity (1 point)"),
        (lambda m: m.update(unit="cm/s"), "a velocity in m/s"),
        (lambda m: m.update(kind="doppler"), "kind: length, angle, ellipse, area"),
        (lambda m: m.update(value=float("nan")), "measurements:"),
    ],
    ids=["edited", "calibrated", "off the region", "two points", "unit", "kind", "nan"],
)
def test_what_a_plan_cannot_state_is_refused_saying_why(
    client: FlaskClient, stored: tuple[str, str, str], change: Any, why: str
) -> None:
    study, doppler_uid, m_mode_uid = stored
    plan = _plan(client, doppler_uid, m_mode_uid)
    bad = deepcopy(plan)
    change(bad["measurements"][0])
    refused = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=bad)
    assert refused.status_code == 400, refused.json
    assert why in refused.json["message"]
    assert client.get(f"/api/studies/{study}/plans").json == []


def test_a_trace_too_short_or_too_long_is_refused(
    client: FlaskClient, stored: tuple[str, str, str]
) -> None:
    study, doppler_uid, m_mode_uid = stored
    plan = _plan(client, doppler_uid, m_mode_uid)
    short = deepcopy(plan)
    short["measurements"][2]["points"] = short["measurements"][2]["points"][:2]
    refused = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=short)
    assert refused.status_code == 400 and "vti (3 or more)" in refused.json["message"]
    long = deepcopy(plan)
    long["measurements"][2]["points"] = [[40 + i % 300, 280] for i in range(5000)]
    refused = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=long)
    assert refused.status_code == 400  # truncated to the most a trace takes: not its value


def test_the_print_page_lists_the_gradients_in_the_users_language(
    client: FlaskClient, stored: tuple[str, str, str]
) -> None:
    study, doppler_uid, m_mode_uid = stored
    saved = client.post(
        f"/api/studies/{study}/plans", headers=HEADERS, json=_plan(client, doppler_uid, m_mode_uid)
    )
    assert saved.status_code == 201, saved.json
    page = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    page = page.replace("−", "-")
    assert "2.00 m/s · 16.0 mmHg" in page and "-1.00 m/s · 4.0 mmHg" in page
    assert "800.0 ms · 75.0 /min" in page
    assert "8.0 mm · 400.0 ms · 20.0 mm/s" in page
    assert "<circle" in page  # the velocity's point on the key image
    client.post("/language", data={"language": "ru", "csrf_token": "token"})
    russian = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert "16,0 мм рт. ст." in russian and "пик" in russian


def test_a_measurement_keeps_the_phase_of_its_frame(
    client: FlaskClient, stored: tuple[str, str, str], archive: Archive, tmp_path: Path
) -> None:
    study, doppler_uid, m_mode_uid = stored
    plan = _plan(client, doppler_uid, m_mode_uid)
    plan["measurements"][4]["phase"] = "ED"
    _, path = saved_report(client, archive, study, plan, tmp_path)
    (kept,) = client.get(f"/api/studies/{study}/plans").json
    assert [m["phase"] for m in kept["content"]["measurements"]] == [None] * 4 + ["ED"]
    page = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert "end-diastole" in page
    # In its SR, a concept modifier of each value of the M-mode measurement.
    phased = {}
    for item in _walk(dcmread(path).ContentSequence):
        if item.ValueType == "NUM":
            modifiers = [
                (m.ConceptNameCodeSequence[0].CodeValue, m.ConceptCodeSequence[0].CodeValue)
                for m in item.get("ContentSequence", [])
                if m.RelationshipType == "HAS CONCEPT MOD" and m.ValueType == "CODE"
            ]
            phased[item.ConceptNameCodeSequence[0].CodeValue] = modifiers
    assert phased["121206"] == [("246092007", "416190007")]  # the distance: end diastole
    assert phased["M-MODE-SLOPE"] == [("246092007", "416190007")]
    assert phased["11726-7"] == []  # the velocities were not tagged
    hd.sr.srread(path)  # highdicom still reads it
    plan["measurements"][4]["phase"] = "systole"
    refused = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=plan)
    assert refused.status_code == 400 and "phase is ED, ES or null" in refused.json["message"]


@pytest.mark.parametrize(
    ("label", "kept"),
    [
        ("PDA, pulmonary end", True),
        ("LVOT VTI", True),
        ("Restrictive VSD jet", True),
        ("Аорта, перешеек", True),
        ("Timur Nazarov's duct", False),
        ("call +996555123456", False),
        ("x" * 65, False),
    ],
)
def test_a_label_is_kept_unless_it_identifies_anyone(
    client: FlaskClient, stored: tuple[str, str, str], label: str, kept: bool
) -> None:
    study, doppler_uid, m_mode_uid = stored
    plan = _plan(client, doppler_uid, m_mode_uid)
    plan["measurements"][0]["label"] = label
    saved = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=plan)
    if not kept:
        assert saved.status_code == 400 and saved.json["message"].startswith("label:")
        assert label not in saved.json["message"]  # refused without quoting it
        return
    assert saved.status_code == 201, saved.json
    (row,) = client.get(f"/api/studies/{study}/plans").json
    assert row["content"]["measurements"][0]["label"] == label
    report = dcmread(BytesIO(client.application.extensions["archive"].read(saved.json["sr_uid"])))
    assert label in {str(i.get("TextValue")) for i in _walk(report.ContentSequence)}
