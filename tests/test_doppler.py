"""Spectral Doppler and M-mode measurements against phantoms of known truth.

The phantom is an echo picture as a machine lays one out: a 2-D tissue
region on top, a PW spectral Doppler region below (seconds across, cm/s up
from the baseline, the reference pixel on the baseline), and, on another
image, an M-mode region (seconds across, cm down). A drawn envelope has a
known peak, mean and velocity-time integral; the measurements must come
within 2 % of the truth, or one pixel's worth, whether the trace comes as
the exact curve or as the whole pixels a hand clicks; and the points must
be in a region that measures what is asked, or nothing is measured.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from flask.testing import FlaskClient
from pydicom.dataset import Dataset
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.samples import PATIENTS, ultrasound_region, us_phantom
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_viewer import PASSWORD, as_user
from viewer import create_app
from viewer.planning import doppler
from viewer.planning.envelope import MOST_POINTS, suggest

HEADERS = {"X-CSRF-Token": "token"}
BASELINE = 60  # pixels below the Doppler region's top edge
CM_S_PER_PX = -4.0  # up is toward the probe: positive velocities
S_PER_PX = 0.005
PEAK, EJECTION = 200.0, 0.3  # cm/s, s: v(t) = PEAK sin(pi t / EJECTION)
DOPPLER_TOP, START = 240, 40  # the region's top row; the envelope's first column


def spectral_region() -> Dataset:
    region = ultrasound_region(0, DOPPLER_TOP, 639, 479)
    region.RegionSpatialFormat, region.RegionDataType = 3, doppler.PW
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = doppler.SECONDS, 7
    region.ReferencePixelX0, region.ReferencePixelY0 = 0, BASELINE
    region.ReferencePixelPhysicalValueX = region.ReferencePixelPhysicalValueY = 0.0
    region.PhysicalDeltaX, region.PhysicalDeltaY = S_PER_PX, CM_S_PER_PX
    return region


def doppler_phantom() -> Dataset:
    ds = us_phantom(PATIENTS[0])
    tissue = ultrasound_region(20, 40, 619, DOPPLER_TOP - 10)
    ds.SequenceOfUltrasoundRegions = [tissue, spectral_region()]
    image = np.full((480, 640), 20, dtype=np.uint8)
    for x, y in envelope():
        image[round(y) :, int(x)] = 0  # the spectrum's dark edge under the envelope
    ds.PixelData = image.tobytes()
    ds.SeriesDescription = "Doppler phantom"
    return ds


def m_mode_phantom() -> Dataset:
    ds = us_phantom(PATIENTS[0])
    region = ultrasound_region(0, 100, 639, 479)
    region.RegionSpatialFormat = doppler.M_MODE_FORMAT
    region.PhysicalUnitsXDirection, region.PhysicalUnitsYDirection = doppler.SECONDS, doppler.CM
    region.PhysicalDeltaX, region.PhysicalDeltaY = S_PER_PX, 0.02
    ds.SequenceOfUltrasoundRegions = [region]
    ds.SeriesDescription = "M-mode phantom"
    return ds


def envelope(step: float = 1.0) -> Iterator[tuple[float, float]]:
    """The envelope's image points: one per ``step`` pixel columns."""
    columns = EJECTION / S_PER_PX
    x = 0.0
    while x <= columns + 1e-9:
        velocity = PEAK * math.sin(math.pi * x * S_PER_PX / EJECTION)
        yield START + x, DOPPLER_TOP + BASELINE + velocity / CM_S_PER_PX
        x += step


TRUE_VTI = PEAK * EJECTION * 2 / math.pi  # cm
TRUE_MEAN_GRADIENT = 4 * (PEAK / 100) ** 2 / 2  # mmHg: 4 v^2 averages half its peak
ONE_PIXEL = abs(CM_S_PER_PX)  # cm/s


@pytest.mark.parametrize("hand", [False, True], ids=["exact curve", "whole pixels"])
def test_a_traced_envelope_gives_its_vti_peak_and_mean_gradient(hand: bool) -> None:
    ds = doppler_phantom()
    trace = [(round(x), round(y)) if hand else (x, y) for x, y in envelope(step=3)]
    found = doppler.vti(ds, [*reversed(trace)])  # drawn right to left: still in time order
    assert found["value"] == pytest.approx(TRUE_VTI, rel=0.02)
    assert found["peak_velocity"] * 100 == pytest.approx(PEAK, abs=ONE_PIXEL)
    assert found["peak_gradient"] == pytest.approx(16.0, rel=0.04)  # 4 x 2.0^2
    assert found["mean_gradient"] == pytest.approx(TRUE_MEAN_GRADIENT, rel=0.03)
    assert found["mean_velocity"] * 100 == pytest.approx(TRUE_VTI / EJECTION, rel=0.02)
    assert found["duration_ms"] == pytest.approx(EJECTION * 1000, abs=3 * S_PER_PX * 1000)
    assert found["source"] == "PW spectral Doppler region 2 (s, cm/s)"


def test_a_velocity_and_its_gradient_at_a_point_either_side_of_the_baseline() -> None:
    ds = doppler_phantom()
    above = doppler.velocity(ds, (100, DOPPLER_TOP + BASELINE - 50))
    assert (above["value"], above["unit"], above["gradient"]) == (2.0, "m/s", 16.0)
    below = doppler.velocity(ds, (100, DOPPLER_TOP + BASELINE + 25))
    assert (below["value"], below["gradient"]) == (-1.0, 4.0)  # away from the probe


def test_intervals_and_m_mode_distance_time_and_slope() -> None:
    ds = doppler_phantom()
    rr = doppler.interval(ds, (100, 300), (260, 310))  # 160 px x 5 ms
    assert (rr["value"], rr["unit"], rr["rate"]) == (800.0, "ms", 75.0)
    mm = doppler.m_mode(m_mode_phantom(), (100, 150), (180, 190))
    assert (mm["value"], mm["unit"], mm["time_ms"], mm["slope"]) == (8.0, "mm", 400.0, 20.0)
    assert mm["source"] == "M-mode region 1 (s, cm)"


@pytest.mark.parametrize(
    ("points", "kind", "why"),
    [
        ([(100, 100)], "velocity", "not a spectral Doppler region"),  # the 2-D picture
        ([(100, 235)], "velocity", "no ultrasound region holds"),  # the gap between them
        ([(100, 100), (100, 300)], "m-mode", "different ultrasound regions"),
        ([(100, 300), (100, 320)], "interval", "same time"),
        ([(100, 300), (100, 300), (100, 300)], "vti", "spans no time"),
    ],
)
def test_points_outside_a_region_that_measures_it_measure_nothing(
    points: list, kind: str, why: str
) -> None:
    ds = doppler_phantom()
    with pytest.raises(doppler.NotMeasurable, match=why):
        if kind == "velocity":
            doppler.velocity(ds, points[0])
        elif kind == "vti":
            doppler.vti(ds, points)
        elif kind == "m-mode":
            doppler.m_mode(ds, *points)
        else:
            doppler.interval(ds, *points)


def test_a_region_that_lies_about_its_units_or_scale_measures_nothing() -> None:
    ds = doppler_phantom()
    ds.SequenceOfUltrasoundRegions[1].PhysicalUnitsYDirection = doppler.CM  # cm, not cm/s
    with pytest.raises(doppler.NotMeasurable, match="units are not seconds and cm/s"):
        doppler.velocity(ds, (100, 300))
    ds = doppler_phantom()
    ds.SequenceOfUltrasoundRegions[1].PhysicalDeltaY = 0.0
    with pytest.raises(doppler.NotMeasurable, match="physical scale"):
        doppler.velocity(ds, (100, 300))


@pytest.fixture
def client(config: Config, archive: Archive, ingestor: Ingestor) -> FlaskClient:
    return cardiologist(config, archive)


def cardiologist(config: Config, archive: Archive) -> FlaskClient:
    """A test client logged in as a cardiologist."""
    archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
    made = create_app(config, archive, b"k" * 32).test_client()
    as_user(made, "amina")
    return made


def test_the_measuring_api_reads_doppler_through_the_stored_regions(
    client: FlaskClient, ingestor: Ingestor
) -> None:
    """Stored (de-identified) the regions are what the machine sent: the API
    measures the envelope as the functions do, and refuses what they refuse."""
    stored = ingestor.ingest(incoming(doppler_phantom()))
    assert stored.status == 0, stored
    uid = str(stored.dataset.SOPInstanceUID)

    def measure(kind: str, points: list) -> object:
        return client.post(
            f"/api/instances/{uid}/measure",
            headers=HEADERS,
            json={"kind": kind, "points": points, "frame": 0},
        )

    traced = measure("vti", [list(p) for p in envelope(step=3)])
    assert traced.status_code == 200, traced.json  # type: ignore[attr-defined]
    assert traced.json["value"] == pytest.approx(TRUE_VTI, rel=0.02)  # type: ignore[attr-defined]
    assert measure("velocity", [[100, DOPPLER_TOP + BASELINE - 50]]).json["gradient"] == 16.0  # type: ignore[attr-defined]
    refused = measure("velocity", [[100, 100]])
    assert refused.status_code == 400  # type: ignore[attr-defined]
    assert "not a spectral Doppler region" in refused.json["message"]  # type: ignore[attr-defined]
    assert measure("vti", [[100, 300]] * 2).status_code == 400  # type: ignore[attr-defined]


def spectrum_phantom(rng: np.random.Generator, below: bool = False) -> Dataset:
    """The Doppler phantom as a machine draws a spectrum: bright between the
    baseline and the envelope, over a noisy dark background with speckle;
    ``below``: the flow away from the probe (under the baseline)."""
    ds = doppler_phantom()
    image = rng.normal(25, 8, (480, 640))
    baseline = DOPPLER_TOP + BASELINE
    for x, y in envelope():
        # From the envelope's row to the baseline's, the baseline row left dark.
        top, bottom = (baseline + 1, round(2 * baseline - y) + 1) if below else (round(y), baseline)
        image[top:bottom, int(x)] = rng.normal(170, 35, bottom - top)
    speckle = rng.random(image.shape) < 0.01
    image[speckle] = 230
    ds.PixelData = np.clip(image, 0, 255).astype(np.uint8).tobytes()
    return ds


@pytest.mark.parametrize("below", [False, True], ids=["toward", "away"])
@pytest.mark.parametrize("seed", range(4))
def test_the_suggested_envelope_gives_the_vti_within_two_percent(below: bool, seed: int) -> None:
    ds = spectrum_phantom(np.random.default_rng(seed), below)
    pixels = np.frombuffer(ds.PixelData, np.uint8).reshape(480, 640).astype(float)
    start, end = START, START + EJECTION / S_PER_PX
    row = DOPPLER_TOP + BASELINE + (10 if below else -10)
    region = doppler.region(ds, [(start, row), (end, row)], "spectral")
    trace = suggest(pixels, region, (start, row), (end, row))
    assert 3 <= len(trace) <= MOST_POINTS
    found = doppler.vti(ds, trace)
    assert found["value"] == pytest.approx(TRUE_VTI, rel=0.02)
    assert abs(found["peak_velocity"]) * 100 == pytest.approx(PEAK, abs=2 * ONE_PIXEL)
    assert all((y > DOPPLER_TOP + BASELINE) == below for _, y in trace[1:-1])


def test_no_envelope_where_there_is_no_spectrum() -> None:
    ds = doppler_phantom()
    blank = np.full((480, 640), 20.0)
    region = doppler.region(ds, [(100, 290), (200, 290)], "spectral")
    with pytest.raises(doppler.NotMeasurable, match="no spectrum"):
        suggest(blank, region, (100, 290), (200, 290))
    with pytest.raises(doppler.NotMeasurable, match="three columns"):
        suggest(blank, region, (100, 290), (101, 290))


def test_the_envelope_api_suggests_from_the_stored_pixels(
    client: FlaskClient, ingestor: Ingestor
) -> None:
    """Through de-identification and storage, the suggestion reads the
    frame the browser shows; clicks off a spectrum are a 400 saying why."""
    stored = ingestor.ingest(incoming(spectrum_phantom(np.random.default_rng(7))))
    assert stored.status == 0, stored
    uid = str(stored.dataset.SOPInstanceUID)
    row = DOPPLER_TOP + BASELINE - 10
    clicks = [[START, row], [START + EJECTION / S_PER_PX, row]]

    def suggest_at(points: list, frame: object = 0) -> Any:
        return client.post(
            f"/api/instances/{uid}/envelope",
            headers=HEADERS,
            json={"points": points, "frame": frame},
        )

    found = suggest_at(clicks)
    assert found.status_code == 200, found.json
    assert found.json["value"] == pytest.approx(TRUE_VTI, rel=0.02)
    again = client.post(
        f"/api/instances/{uid}/measure",
        headers=HEADERS,
        json={"kind": "vti", "points": found.json["points"], "frame": 0},
    )
    assert again.json["value"] == found.json["value"]  # what is kept measures the same
    for bad, why in [
        ([[100, 100], [200, 100]], "not a spectral Doppler region"),
        ([[100, row]], "needs 2 points"),
        ([[100, row], [101, row]], "three columns"),
    ]:
        refused = suggest_at(bad)
        assert refused.status_code == 400 and why in refused.json["message"], refused.json
    assert suggest_at(clicks, frame=3).status_code == 400
    assert (
        client.post(f"/api/instances/{uid}/envelope", headers=HEADERS, data="[").status_code == 400
    )


def _drawn_beyond(ds: Dataset, below: bool, what: str) -> Dataset:
    """The spectrum phantom with what machines draw in the region beyond
    the spectrum: the ECG trace along its outer edge (QRS spikes outward),
    or a scale label across the beat's columns."""
    image = np.frombuffer(ds.PixelData, np.uint8).reshape(480, 640).copy()
    outward = 1 if below else -1
    edge = 470 if below else DOPPLER_TOP + 4  # a few pixels in from the region's far edge
    if what == "ecg":
        for x in range(0, 640):
            spike = 6 if x % 80 < 5 else 0
            low, high = sorted((edge, edge + outward * spike))
            image[low : high + 2, x] = 240
    else:
        low, high = sorted((edge, edge + outward * 6))
        image[low:high, 60:120] = 250
    ds.PixelData = image.tobytes()
    return ds


@pytest.mark.parametrize("what", ["ecg", "label"])
@pytest.mark.parametrize("below", [False, True], ids=["toward", "away"])
def test_an_ecg_or_a_label_beyond_the_spectrum_is_not_its_envelope(below: bool, what: str) -> None:
    ds = _drawn_beyond(spectrum_phantom(np.random.default_rng(1), below), below, what)
    pixels = np.frombuffer(ds.PixelData, np.uint8).reshape(480, 640).astype(float)
    row = DOPPLER_TOP + BASELINE + (10 if below else -10)
    start, end = (START, row), (START + EJECTION / S_PER_PX, row)
    trace = suggest(pixels, doppler.region(ds, [start, end], "spectral"), start, end)
    assert doppler.vti(ds, trace)["value"] == pytest.approx(TRUE_VTI, rel=0.02)


def test_a_spectrum_that_reaches_the_edge_gets_no_suggestion() -> None:
    """Aliased or clipped: the true envelope is not in the picture."""
    ds = spectrum_phantom(np.random.default_rng(2))
    image = np.frombuffer(ds.PixelData, np.uint8).reshape(480, 640).copy()
    image[DOPPLER_TOP : DOPPLER_TOP + BASELINE, 80:110] = 200  # up to the region's top
    pixels = image.astype(float)
    row = DOPPLER_TOP + BASELINE - 10
    region = doppler.region(ds, [(START, row), (START + 60, row)], "spectral")
    with pytest.raises(doppler.NotMeasurable, match="edge of the region"):
        suggest(pixels, region, (START, row), (START + 60, row))


def test_a_region_without_its_baseline_gives_no_velocity_but_times() -> None:
    ds = doppler_phantom()
    spectral = ds.SequenceOfUltrasoundRegions[1]
    del spectral.ReferencePixelY0
    with pytest.raises(doppler.NotMeasurable, match="baseline"):
        doppler.velocity(ds, (100, 250))
    assert doppler.interval(ds, (100, 300), (260, 300))["value"] == 800.0


def test_overlapping_regions_take_the_one_that_measures_unless_two_disagree() -> None:
    ds = doppler_phantom()
    everything = ultrasound_region(0, 0, 639, 479)  # a picture-wide region listed first
    ds.SequenceOfUltrasoundRegions = [everything, *ds.SequenceOfUltrasoundRegions]
    assert doppler.velocity(ds, (100, DOPPLER_TOP + BASELINE - 50))["value"] == 2.0
    other = spectral_region()
    other.PhysicalDeltaY = 2 * CM_S_PER_PX
    ds.SequenceOfUltrasoundRegions = [*ds.SequenceOfUltrasoundRegions, other]
    with pytest.raises(doppler.NotMeasurable, match="different scales"):
        doppler.velocity(ds, (100, 250))


@pytest.mark.parametrize(
    ("trace", "why"),
    [
        ([(100, 280), (140, 260), (120, 250), (160, 280)], "back in time"),
        ([(100, 280), (140, 330), (180, 280)], "crosses the baseline"),
    ],
)
def test_a_trace_that_no_envelope_makes_is_refused(trace: list, why: str) -> None:
    with pytest.raises(doppler.NotMeasurable, match=why):
        doppler.vti(doppler_phantom(), trace)


def test_scales_beyond_any_machine_and_short_intervals() -> None:
    ds = doppler_phantom()
    ds.SequenceOfUltrasoundRegions[1].PhysicalDeltaY = -1e200
    with pytest.raises(doppler.NotMeasurable, match="beyond any echo machine"):
        doppler.velocity(ds, (100, 250))
    ds = doppler_phantom()
    ds.SequenceOfUltrasoundRegions[1].PhysicalDeltaY = -45.0  # allowed, but 22 m/s here
    with pytest.raises(doppler.NotMeasurable, match="beyond any blood flow"):
        doppler.velocity(ds, (100, 250))
    short = doppler.interval(doppler_phantom(), (100, 300), (110, 300))  # 50 ms
    assert short["value"] == 50.0 and short["rate"] is None


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "velocity", "points": [[10**400, 250]]},
        {"kind": ["velocity"], "points": [[100, 250]]},
        {"kind": "velocity", "points": [["100", "250"]]},
        {"kind": {"a": 1}, "points": []},
    ],
    ids=["huge integer", "kind a list", "text numbers", "kind an object"],
)
def test_junk_is_a_400_never_a_500(client: FlaskClient, ingestor: Ingestor, body: dict) -> None:
    stored = ingestor.ingest(incoming(doppler_phantom()))
    uid = str(stored.dataset.SOPInstanceUID)
    answer = client.post(f"/api/instances/{uid}/measure", headers=HEADERS, json=body)
    assert answer.status_code == 400, answer.get_data(as_text=True)[:300]
