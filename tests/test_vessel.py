"""Vessel diameters and catheter edges on angiograms of known geometry.

The phantom is a contrast-filled tube drawn with partial-volume edges
(each pixel darkened by the share of it inside the tube) over a noisy,
unevenly lit background: a duct narrowing from 10 to 4 pixels and
widening again (its narrowest known), and a 6F catheter 9 pixels wide at
an angle. The profile finds the narrowest within half a pixel, at its
place; the catheter's edges are found from a sloppy, slanted line within
half a pixel of its true width; no tube, too little contrast or a line
that does not reach past the edges is refused saying why.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from flask.testing import FlaskClient
from pydicom.uid import ExplicitVRLittleEndian as EXPLICIT

from dicomnode.config import Config
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.samples import PATIENTS, xa_instance
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import HEADERS, cardiologist
from viewer.planning import calibration as cal
from viewer.planning.vessel import NoEdges, edges_across, profile, snapped
from viewer.planning.vessel import narrowest as pick

SIZE = 256
NARROWEST, AT, WIDE = 4.0, 130.0, 10.0


def duct_width(x: float) -> float:
    return WIDE - (WIDE - NARROWEST) * math.exp(-(((x - AT) / 18) ** 2))


def coverage(distance: np.ndarray, half_width: np.ndarray | float) -> np.ndarray:
    """The share of a pixel whose centre is ``distance`` from the axis
    that lies inside a tube of ``half_width`` (supersampled)."""
    return np.clip(half_width - np.abs(distance) + 0.5, 0, 1)


def angiogram(seed: int, catheter: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float) + 0.5
    image = 170 + 25 * np.sin(x / 90) * np.cos(y / 70) + rng.normal(0, 4, (SIZE, SIZE))
    if catheter:  # along the line y = x - 20, 9 pixels wide
        distance = (y - (x - 20)) / math.sqrt(2)
        inside = coverage(distance, 4.5)
    else:  # along y = 128
        inside = coverage(y - 128, duct_width_array(x))
    return image - 100 * inside


def duct_width_array(x: np.ndarray) -> np.ndarray:
    return (WIDE - (WIDE - NARROWEST) * np.exp(-(((x - AT) / 18) ** 2))) / 2


@pytest.mark.parametrize("seed", range(4))
def test_the_duct_profile_finds_its_narrowest_point(seed: int) -> None:
    stations = profile(angiogram(seed), (40.0, 127.0), (220.0, 129.5))  # drawn roughly down it
    narrowest = pick(stations)
    x = (narrowest.edges[0][0] + narrowest.edges[1][0]) / 2
    assert narrowest.width_px == pytest.approx(NARROWEST, abs=0.5)
    assert x == pytest.approx(AT, abs=4)
    for station in stations[::20]:
        centre = (station.edges[0][0] + station.edges[1][0]) / 2
        assert station.width_px == pytest.approx(duct_width(centre), abs=0.6)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("slant", [0, 25, -35, 50])
def test_a_catheter_line_snaps_to_its_edges(seed: int, slant: int) -> None:
    """Drawn across the catheter at a slant, from well outside it."""
    image = angiogram(seed, catheter=True)
    centre = (120.0, 100.0)  # on the catheter: 100 = 120 - 20
    normal = math.radians(135 + slant)  # across the 45-degree catheter, off by the slant
    a = (centre[0] - 14 * math.cos(normal), centre[1] - 14 * math.sin(normal))
    b = (centre[0] + 14 * math.cos(normal), centre[1] + 14 * math.sin(normal))
    e1, e2 = snapped(image, a, b)
    assert math.dist(e1, e2) == pytest.approx(9.0, abs=0.5)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (((40.0, 40.0), (40.0, 60.0)), "no dark tube"),  # empty background
        (((130.0, 126.0), (130.0, 129.0)), r"no dark tube|beyond the line"),  # inside it only
        (((130.0, 128.0), (130.5, 128.0)), "past both its edges"),
    ],
)
def test_no_tube_no_edges(line: tuple, why: str) -> None:
    with pytest.raises(NoEdges, match=why):
        edges_across(angiogram(0), *line)


def test_a_line_along_nothing_has_no_profile() -> None:
    with pytest.raises(NoEdges, match="no single vessel along most of the line"):
        profile(angiogram(0), (20.0, 40.0), (200.0, 40.0))


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    return cardiologist(config, archive)


def test_the_api_profiles_a_stored_run_and_snaps_a_catheter_line(
    client: FlaskClient, ingestor: Ingestor
) -> None:
    """Through de-identification and storage: the narrowest diameter comes
    as a length with the run's scale (isocentre from the geometry), and a
    catheter line drawn at a slant snaps to the catheter's 9 pixels."""
    ds = xa_instance(PATIENTS[0], frames=1, rows=SIZE, cols=SIZE, transfer_syntax=EXPLICIT)
    duct = np.clip(angiogram(3), 0, 255).astype(np.uint8)
    ds.PixelData = duct.tobytes()
    stored = ingestor.ingest(incoming(ds))
    assert stored.status == 0, stored
    uid = str(stored.dataset.SOPInstanceUID)
    answer = client.post(
        f"/api/instances/{uid}/profile",
        headers=HEADERS,
        json={"points": [[40, 127], [220, 129.5]], "frame": 0},
    )
    assert answer.status_code == 200, answer.json
    narrowest = answer.json["narrowest"]
    mm_per_px = 0.154 * 750 / 1100  # imager spacing at the isocentre
    assert narrowest["unit"] == "mm"
    assert narrowest["value"] == pytest.approx(NARROWEST * mm_per_px, abs=0.5 * mm_per_px)
    assert len(answer.json["stations"]) > 150
    refused = client.post(
        f"/api/instances/{uid}/profile",
        headers=HEADERS,
        json={"points": [[20, 40], [200, 40]], "frame": 0},
    )
    assert refused.status_code == 400 and "no single vessel" in refused.json["message"]
    for junk in ({"points": [[1, 1]]}, {"points": "x"}, [], {"points": [[0, 0], [9e9, 0]]}):
        bad = client.post(f"/api/instances/{uid}/edges", headers=HEADERS, json=junk)
        assert bad.status_code == 400, junk


def test_the_edges_api_snaps_a_catheter_line(client: FlaskClient, ingestor: Ingestor) -> None:
    ds = xa_instance(PATIENTS[0], frames=1, rows=SIZE, cols=SIZE, transfer_syntax=EXPLICIT)
    ds.PixelData = np.clip(angiogram(5, catheter=True), 0, 255).astype(np.uint8).tobytes()
    stored = ingestor.ingest(incoming(ds))
    uid = str(stored.dataset.SOPInstanceUID)
    normal = math.radians(135 + 25)
    line = [
        [120 - 14 * math.cos(normal), 100 - 14 * math.sin(normal)],
        [120 + 14 * math.cos(normal), 100 + 14 * math.sin(normal)],
    ]
    answer = client.post(
        f"/api/instances/{uid}/edges", headers=HEADERS, json={"points": line, "frame": 0}
    )
    assert answer.status_code == 200, answer.json
    assert math.dist(*answer.json["points"]) == pytest.approx(9.0, abs=0.5)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"ImagerPixelSpacing": ["0", "0"]}, "pixel spacing"),
        ({"ImagerPixelSpacing": ["-0.154", "0.154"]}, "pixel spacing"),
        ({"ImagerPixelSpacing": ["1e9", "1e9"]}, "pixel spacing"),
        ({"DistanceSourceToPatient": "2000"}, "magnification"),  # beyond the detector
        ({"DistanceSourceToPatient": "1e-30"}, "magnification"),
        ({"PixelSpacing": ["0", "0.2"]}, "pixel spacing"),
    ],
)
def test_a_scale_no_x_ray_system_has_leaves_lengths_in_pixels(change: dict, why: str) -> None:
    """Rather than 0.0 mm, or a diameter 2.7 times too large."""
    ds = xa_instance(PATIENTS[0], frames=1, rows=64, cols=64, transfer_syntax=EXPLICIT)
    for keyword, value in change.items():
        setattr(ds, keyword, value)
    found = cal.length(ds, (10.0, 10.0), (20.0, 10.0))
    assert found.unit == "px" and why in found.source


def troubled(seed: int, trouble: str) -> np.ndarray:
    """The duct with what angiograms put near it: low contrast, a catheter
    crossing it, a branch leaving it, a vessel beside it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float) + 0.5
    image = 170 + 25 * np.sin(x / 90) * np.cos(y / 70) + rng.normal(0, 4, (SIZE, SIZE))
    image -= (20 if trouble == "low contrast" else 100) * coverage(y - 128, duct_width_array(x))
    if trouble == "crossing catheter":
        image -= 60 * coverage(x - 107, 4.5)
    elif trouble == "branch":
        across = ((y - 128) - (x - 100) * math.tan(math.radians(30))) * math.cos(math.radians(30))
        image -= 100 * coverage(across, 3.5) * (x > 100)
    elif trouble == "vessel beside it":
        image -= 100 * coverage(y - 144, 5)
    return image


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    "trouble", ["low contrast", "crossing catheter", "branch", "vessel beside it"]
)
def test_the_narrowest_holds_against_what_lies_near_the_duct(seed: int, trouble: str) -> None:
    """One station's noise, a catheter's crossing, a branch's pull do not
    make the narrowest: it is the duct's, at its place."""
    stations = profile(troubled(seed, trouble), (40.0, 127.0), (220.0, 129.5))
    found = pick(stations)
    assert found.width_px == pytest.approx(NARROWEST, abs=0.6)
    assert (found.edges[0][0] + found.edges[1][0]) / 2 == pytest.approx(AT, abs=4)


def test_a_catheter_line_too_slanted_or_too_faint_is_not_snapped() -> None:
    image = angiogram(1, catheter=True)
    normal = math.radians(135 + 70)
    line = [(120 + s * 14 * math.cos(normal), 100 + s * 14 * math.sin(normal)) for s in (-1, 1)]
    with pytest.raises(NoEdges, match=r"far off square|not enough contrast|not clear"):
        snapped(image, *line)
    faint = 170 + np.random.default_rng(2).normal(0, 4, (SIZE, SIZE))
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float) + 0.5
    faint -= 15 * coverage((y - (x - 20)) / math.sqrt(2), 4.5)
    straight = [
        (120 + s * 14 * math.cos(math.radians(135)), 100 + s * 14 * math.sin(math.radians(135)))
        for s in (-1, 1)
    ]
    with pytest.raises(NoEdges, match=r"not enough contrast|not clear"):
        snapped(faint, *straight)
