"""Calibration paths on phantoms of known geometry, and the sizing rules."""

from __future__ import annotations

import math

import pytest
from pydicom.dataset import Dataset

from dicomnode.samples import ultrasound_region
from viewer.planning import calibration as cal
from viewer.planning import sizing


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


def test_sizing_rules_cite_their_source() -> None:
    pda = sizing.pda(3.1)
    assert pda.sizes == ["8/6", "10/8"] and "2 mm" in pda.rule.says and pda.rule.source
    vsd = sizing.perimembranous_vsd(6.4)
    assert vsd.sizes == ["8 mm"]
    balloon = sizing.secundum_asd(14.0, stretched_mm=16.5)
    assert balloon.sizes == ["17 mm", "18 mm"] and "stretched" in balloon.basis
    echo = sizing.secundum_asd(14.0, margin_mm=2.0, rims_mm={"aortic": 3.0, "IVC": 9.0})
    assert echo.sizes[0] == "16 mm" and echo.warnings == ["deficient aortic rim"]
    assert sizing.pda(30).warnings and not sizing.pda(30).sizes
    assert sizing.deficient_rims({"SVC": 4.9, "posterior": 5.0}) == ["SVC"]


def test_the_plan_travels_as_a_measurement_report(ingestor, archive, tmp_path) -> None:
    from pydicom import dcmread

    from dicomnode.importer import split_file
    from dicomnode.ingest import Incoming, Outcome
    from dicomnode.samples import sample_file
    from storage.keys import Level
    from storage.query import Query
    from tests.test_written_files import errors
    from viewer.planning.report import measurement_report, observer_name
    from viewer.planning.worksheet import Slot, rim_slot

    data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
    assert ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
    clip = dcmread(next(archive.blobs.root.rglob("*.dcm")), stop_before_pixels=True)
    slots = [
        Slot("ASD-MAX-DIAMETER", 14.2, str(clip.SOPInstanceUID), 37),
        rim_slot("aortic", 3.1),
    ]
    observer = observer_name("cardiologist")
    sr = measurement_report([clip], slots, defect="secundum ASD", observer=observer)
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
    stored = archive.read(str(sr.SOPInstanceUID))
    path = tmp_path / "plan.dcm"
    path.write_bytes(stored)
    written = dcmread(path)
    assert written.PatientID == clip.PatientID  # the pseudonym, not remapped
    assert written.SOPInstanceUID == sr.SOPInstanceUID
    text = str(written.ContentSequence)
    assert "ASD maximal diameter (view 1)" in text and "14.2" in text and "millimeter" in text
    assert "aortic rim" in text and "Cardiologist^CHD node" in text
    assert str(clip.SOPInstanceUID) in text  # references the measured frame's image
    assert errors(path) == set()
    assert archive.index.stats()["patients"] == 1  # filed under the same pseudonym


def test_slot_meanings_are_the_servers_and_the_page_draws_the_same_worksheet() -> None:
    import json
    import re
    from pathlib import Path

    from viewer.planning.worksheet import RIMS, WORKSHEET, Slot, UnknownSlot, worksheet_slot

    # A meaning cannot be given: it is the catalogue's.
    assert worksheet_slot("PDA", "PDA-NARROWEST", 2.5).meaning == (
        "Narrowest (pulmonary end) diameter"
    )
    for defect, code in (("PDA", "ASD-MAX-DIAMETER"), ("PDA", "ASD Иванов Алибек max")):
        with pytest.raises(UnknownSlot) as refused:
            worksheet_slot(defect, code, 1.0)
        assert "Иванов" not in str(refused.value) and "PDA-NARROWEST" in str(refused.value)
    with pytest.raises(UnknownSlot):
        Slot("ASD Иванов Алибек max", 1.0)
    # planning.js draws the worksheet from its own copy: the two must agree.
    script = (Path(__file__).parents[1] / "viewer" / "static" / "planning.js").read_text()
    block = re.search(r"const SLOTS = (\{.*?\n  \});", script, re.S)
    assert block is not None
    as_json = re.sub(r"(\n\s*)(\w+):", r'\1"\2":', block.group(1))
    as_json = re.sub(r",(\s*[\]}])", r"\1", as_json)
    drawn = {k: [tuple(slot) for slot in v] for k, v in json.loads(as_json).items()}
    assert drawn == {k: list(v) for k, v in WORKSHEET.items()}
    rims = re.search(r"const RIMS = (\[.*?\]);", script)
    assert rims is not None and tuple(json.loads(rims.group(1))) == RIMS
