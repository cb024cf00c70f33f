"""Z-scores of cardiac dimensions for the child's BSA (Pettersen et al.
2008): the table against its transcription and against sizes every
paediatric cardiologist knows (a newborn's and an adult's LV and aortic
annulus); the endpoint a measurement's row asks; a plan that keeps a
length's z-score, recomputed from the study's own BSA whatever the browser
claims, states it in its SR and on its print page; no z-score without a BSA
inside the reference cohort's."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from pydicom import dcmread

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops import worked
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import HEADERS, cardiologist
from tests.test_doppler_plan import saved_report
from tests.test_planning import _walk
from viewer.planning import zscores


@pytest.mark.parametrize(
    ("structure", "bsa", "low_mm", "high_mm"),
    [
        ("LVIDd", 0.2, 15, 22),  # a newborn's LV in diastole
        ("LVIDd", 1.8, 42, 56),  # an adult's
        ("AV", 0.2, 5, 8),  # a newborn's aortic annulus
        ("AV", 1.8, 17, 24),
        ("MPA", 0.2, 6, 10),
        ("LPA", 0.2, 3, 6),
    ],
)
def test_the_table_gives_the_sizes_children_have(
    structure: str, bsa: float, low_mm: float, high_mm: float
) -> None:
    found = zscores.zscore(structure, 10.0, bsa)
    assert found is not None and low_mm <= found.mean_mm <= high_mm, found


def test_the_coefficients_are_the_transcriptions() -> None:
    # As CardiacStructuresZScores.md (parameterz) lists them: the published table's RVD and LVIDd.
    rvd, lvidd = zscores.STRUCTURES["RVD"], zscores.STRUCTURES["LVIDd"]
    assert (rvd.b0, rvd.b1, rvd.b2, rvd.b3, rvd.mse) == (-0.317, 1.85, -1.274, 0.335, 0.058)
    assert (lvidd.b0, lvidd.b1, lvidd.b2, lvidd.b3, lvidd.mse) == (
        0.105,
        2.859,
        -2.119,
        0.552,
        0.01,
    )


def test_a_z_score_and_its_limits() -> None:
    at_mean = zscores.zscore("LVIDd", 35.9, 0.73)
    assert at_mean is not None and abs(at_mean.z) < 0.05
    # ln(4.0) - (0.105 + 2.859 b - 2.119 b² + 0.552 b³) at b = 0.73, over 0.1.
    mean = 0.105 + 2.859 * 0.73 - 2.119 * 0.73**2 + 0.552 * 0.73**3
    dilated = zscores.zscore("LVIDd", 40.0, 0.73)
    assert dilated is not None and dilated.z == pytest.approx(
        (math.log(4.0) - mean) / 0.1, abs=0.01
    )
    assert dilated.low_mm == pytest.approx(math.exp(mean - 0.2) * 10, abs=0.05)
    assert dilated.high_mm == pytest.approx(math.exp(mean + 0.2) * 10, abs=0.05)


@pytest.mark.parametrize("bsa", [None, 0.05, 2.4])
def test_no_z_score_without_a_bsa_inside_the_cohort(bsa: float | None) -> None:
    assert zscores.zscore("LVIDd", 40.0, bsa) is None


@pytest.mark.parametrize("mm", [0.0, -3.0, math.nan, math.inf])
def test_a_dimension_that_is_no_length_is_refused(mm: float) -> None:
    with pytest.raises(ValueError):
        zscores.zscore("LVIDd", mm, 0.7)


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    return cardiologist(config, archive)


def _stored(ingestor: Ingestor, height: str | None = "1.08") -> tuple[str, str]:
    ds = worked.asd()[0]  # 18 kg, 108 cm: BSA 0.73 m²
    if height is None:
        del ds.PatientSize
    done = ingestor.ingest(incoming(ds))
    assert done.status == 0, done
    return str(done.dataset.StudyInstanceUID), str(done.dataset.SOPInstanceUID)


def test_the_endpoint_gives_a_length_its_z_score(client: FlaskClient, ingestor: Ingestor) -> None:
    study, _ = _stored(ingestor)
    answer = client.post(
        f"/api/studies/{study}/zscore", headers=HEADERS, json={"structure": "LVIDd", "mm": 40.0}
    )
    assert answer.status_code == 200, answer.json
    assert answer.json["bsa_m2"] == 0.73 and answer.json["z"] == pytest.approx(1.09, abs=0.02)
    assert answer.json["label"] == "LV end-diastolic dimension"
    for body, why in (
        ({"structure": "LVEDD", "mm": 40.0}, "structure: one of"),
        ({"structure": "LVIDd", "mm": "40"}, "mm: a number"),
        ({"structure": "LVIDd", "mm": -1}, "mm: a positive number"),
        ([], "a JSON object"),
    ):
        refused = client.post(f"/api/studies/{study}/zscore", headers=HEADERS, json=body)
        assert refused.status_code == 400 and why in refused.json["message"], refused.json


def test_no_height_no_z_score(client: FlaskClient, ingestor: Ingestor) -> None:
    study, _ = _stored(ingestor, height=None)
    answer = client.post(
        f"/api/studies/{study}/zscore", headers=HEADERS, json={"structure": "LVIDd", "mm": 40.0}
    )
    assert answer.status_code == 400 and "BSA is unknown" in answer.json["message"]


def test_a_plan_keeps_the_z_score_of_its_study_and_its_sr_states_it(
    client: FlaskClient, ingestor: Ingestor, archive: Archive, tmp_path: Path
) -> None:
    study, uid = _stored(ingestor)
    points = [[120, 240], [520, 240]]  # 40.0 mm on the 0.1 mm echo region
    found = client.post(
        f"/api/instances/{uid}/measure",
        headers=HEADERS,
        json={"kind": "length", "points": points, "frame": 0},
    )
    assert found.status_code == 200 and found.json["value"] == 40.0
    drawn = {
        "uid": uid,
        "frame": 0,
        "kind": "length",
        "points": points,
        **found.json,
        "structure": "LVIDd",
    }
    drawn["zscore"] = {"z": -5.0}  # the browser's word is not kept
    plan = {"defect": "secundum ASD", "plan": "new", "slots": [], "measurements": [drawn]}
    _, path = saved_report(client, archive, study, plan, tmp_path)
    (kept,) = client.get(f"/api/studies/{study}/plans").json
    z = kept["content"]["measurements"][0]["zscore"]
    assert z["z"] == pytest.approx(1.09, abs=0.02) and z["bsa_m2"] == 0.73
    stated = [
        float(i.MeasuredValueSequence[0].NumericValue)
        for i in _walk(dcmread(path).ContentSequence)
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "ZSCORE"
    ]
    assert stated == [pytest.approx(1.09, abs=0.02)]
    page = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert "z 1.1 for the LV end-diastolic dimension" in page

    drawn["structure"] = "the aorta"
    refused = client.post(f"/api/studies/{study}/plans", headers=HEADERS, json=plan)
    assert refused.status_code == 400 and "structure: one of" in refused.json["message"]
