"""Body surface area by Haycock's formula: on the study and print pages
when the header gives a weight and a height, and in the plan's SR with its
formula and inputs; never from a weight alone or an implausible height."""

from __future__ import annotations

from io import BytesIO

import pytest
from flask.testing import FlaskClient
from pydicom import dcmread

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.samples import PATIENTS, us_phantom
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import HEADERS, cardiologist
from tests.test_planning import _walk
from viewer.planning.body import body_size, haycock_m2


def mosteller_m2(weight_kg: float, height_cm: float) -> float:
    """Another published formula (Mosteller 1987): an independent check."""
    return float((weight_kg * height_cm / 3600) ** 0.5)


@pytest.mark.parametrize(
    ("weight", "height"),
    [(3.5, 50), (14.5, 100), (30, 135), (70, 175)],
    ids=["newborn", "toddler", "school child", "adult"],
)
def test_haycock_agrees_with_mosteller_within_three_percent(weight: float, height: float) -> None:
    assert haycock_m2(weight, height) == pytest.approx(mosteller_m2(weight, height), rel=0.03)


def test_no_bsa_without_both_weight_and_height() -> None:
    assert body_size(14.5, None) is None and body_size(None, 1.0) is None
    assert body_size(250, 0.45) is None  # grams sent as kg: each plausible, not the pair
    assert body_size(3.0, 1.8) is None
    size = body_size(14.5, 1.0)
    assert size is not None and (size.bsa_m2, size.height_cm) == (0.63, 100.0)
    with pytest.raises(ValueError):
        haycock_m2(0, 100)


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    return cardiologist(config, archive)


@pytest.mark.parametrize(("height", "shown"), [("1.0", True), ("", False), ("9.5", False)])
def test_the_study_page_shows_the_bsa_only_from_a_plausible_height(
    client: FlaskClient, ingestor: Ingestor, height: str, shown: bool
) -> None:
    ds = us_phantom(PATIENTS[0])
    ds.PatientWeight, ds.PatientSize = "14.5", height
    stored = ingestor.ingest(incoming(ds))
    assert stored.status == 0, stored
    page = client.get(f"/studies/{stored.dataset.StudyInstanceUID}").get_data(as_text=True)
    assert ("BSA 0.63 m² (Haycock)" in page) is shown
    assert ("100 cm" in page) is shown


def test_the_plan_and_its_sr_state_the_bsa_and_how(
    client: FlaskClient, ingestor: Ingestor, archive: Archive
) -> None:
    ds = us_phantom(PATIENTS[0])
    ds.PatientWeight, ds.PatientSize = "14.5", "1.0"
    stored = ingestor.ingest(incoming(ds))
    study = str(stored.dataset.StudyInstanceUID)
    saved = client.post(
        f"/api/studies/{study}/plans", headers=HEADERS, json={"defect": "PDA", "plan": "new"}
    )
    assert saved.status_code == 201, saved.json
    report = dcmread(BytesIO(archive.read(saved.json["sr_uid"])))
    items = list(_walk(report.ContentSequence))
    (bsa,) = [
        i
        for i in items
        if i.ValueType == "NUM" and i.ConceptNameCodeSequence[0].CodeValue == "8277-6"
    ]
    assert float(bsa.MeasuredValueSequence[0].NumericValue) == 0.63
    texts = {str(i.get("TextValue")) for i in items}
    assert {"weight 14.5 kg", "height 100.0 cm"} <= texts
    assert any("Haycock 1978" in str(i.get("TextValue")) for i in items)
    page = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert "BSA 0.63 m² (Haycock)" in page
