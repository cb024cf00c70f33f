"""The traced area (a freehand outline) and the bidirectional tool (a long
and a short axis), as a cardiologist draws them over a defect seen en face
or a duct's ampulla, and as a careless hand or a hostile client sends them:
a figure-eight, a line with no inside, an outline across two ultrasound
regions, axes that do not cross or are not square, pixels that are not
square. Values within 2 % of the truth; every refusal a 400 saying why."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from flask.testing import FlaskClient
from PIL import Image, ImageDraw
from pydicom import dcmread
from pydicom.dataset import Dataset

from dicomnode.config import Config
from dicomnode.consult import keyimages
from dicomnode.ingest.pipeline import Ingestor
from dicomnode.ops.samples import PATIENTS, ultrasound_region, us_phantom, xa_instance
from storage.archive import Archive
from tests.conftest import incoming
from tests.test_doppler import HEADERS, cardiologist
from tests.test_doppler_plan import saved_report
from tests.test_planning import _walk
from viewer.planning import shapes

SPACING = 0.2  # mm per pixel of the angiogram


def circle(cx: float, cy: float, r: float, n: int = 120) -> list[tuple[float, float]]:
    return [
        (cx + r * math.cos(2 * math.pi * k / n), cy + r * math.sin(2 * math.pi * k / n))
        for k in range(n)
    ]


def angio() -> Dataset:
    ds = xa_instance(PATIENTS[0], frames=2, rows=128, cols=128)
    ds.PixelSpacing = [SPACING, SPACING]
    return ds


def echo() -> Dataset:
    """Two tissue regions side by side; the right one's pixels are twice as
    tall as they are wide (0.01 cm across, 0.02 cm down)."""
    ds = us_phantom(PATIENTS[0])
    left, right = ultrasound_region(0, 0, 299, 479), ultrasound_region(320, 0, 639, 479)
    right.PhysicalDeltaX, right.PhysicalDeltaY = 0.01, 0.02
    ds.SequenceOfUltrasoundRegions = [left, right]
    return ds


# -- the arithmetic, off the web ------------------------------------------------


def test_a_traced_circle_has_the_circles_area_either_way_round() -> None:
    outline = circle(60, 60, 25)
    truth = math.pi * (25 * SPACING) ** 2
    for way in (outline, outline[::-1]):
        found = shapes.area(angio(), way)
        assert found.unit == "mm²" and found.value == pytest.approx(truth, rel=0.02)


def test_an_outline_on_pixels_that_are_not_square() -> None:
    square = [(400, 100), (440, 100), (440, 140), (400, 140)]  # 40 × 40 px
    found = shapes.area(echo(), square)
    assert found.value == pytest.approx(40 * 0.1 * 40 * 0.2) and found.unit == "mm²"


def test_a_mouse_drag_repeats_points_and_comes_back_to_its_start() -> None:
    outline = [p for p in circle(60, 60, 20, 90) for _ in range(2)]  # each point twice
    outline.append(outline[0])  # closed on the first point
    assert shapes.outline_fault(outline) is None
    assert shapes.area(angio(), outline).value == pytest.approx(
        math.pi * (20 * SPACING) ** 2, rel=0.02
    )


@pytest.mark.parametrize(
    ("outline", "why"),
    [
        ([(10, 10), (50, 50), (50, 10), (10, 50)], "crosses itself"),  # a figure-eight
        ([(10, 10), (30, 30), (50, 50)], "encloses less than one image pixel"),  # a line
        ([(10, 10), (10.3, 10), (10.3, 10.3)], "encloses less than one image pixel"),
        ([(10, 10), (20, 10)], "at least three points"),
        (
            # A loop, then back across its own start: the overshoot a hurried hand makes.
            [*circle(60, 60, 20, 60), (78.0, 66.0), (84.0, 70.0)],
            "crosses itself",
        ),
    ],
    ids=["figure-eight", "a line", "a speck", "two points", "overshoot"],
)
def test_an_outline_that_encloses_nothing_measurable_is_refused(
    outline: list[tuple[float, float]], why: str
) -> None:
    reason = shapes.outline_fault(outline)
    assert reason is not None and why in reason, reason


def test_an_outline_across_two_regions_stays_in_pixels_saying_why() -> None:
    found = shapes.area(echo(), [(250, 100), (350, 100), (350, 150), (250, 150)])
    assert found.unit == "px²" and "different ultrasound regions" in found.source


def test_two_axes_give_the_long_and_short_axis() -> None:
    long_first = [(30, 60), (80, 60), (55, 45), (55, 75)]  # 50 px across, 30 px down
    short_first = long_first[2:] + long_first[:2]
    for points in (long_first, short_first):
        found = shapes.axes(angio(), points)
        assert found["value"] == pytest.approx(50 * SPACING)
        assert found["short"] == pytest.approx(30 * SPACING) and found["unit"] == "mm"


def test_axes_square_in_the_body_though_not_on_the_screen() -> None:
    # The right region's pixels: 0.1 mm across, 0.2 mm down. The long axis
    # runs (40, 20) px = (4, 4) mm; both short axes cross it at its middle.
    a, b = (400.0, 200.0), (440.0, 220.0)
    with pytest.raises(ValueError, match="right angle"):  # square on screen: (-4, 8) mm
        shapes.axes(echo(), [a, b, (430.0, 190.0), (410.0, 230.0)])
    found = shapes.axes(echo(), [a, b, (430.0, 205.0), (410.0, 215.0)])  # (-2, 2) mm: square
    assert found["value"] == pytest.approx(math.hypot(4, 4))
    assert found["short"] == pytest.approx(math.hypot(2, 2))


@pytest.mark.parametrize(
    ("points", "why"),
    [
        ([(30, 60), (80, 60), (90, 45), (90, 75)], "must cross"),  # beside the long axis
        ([(30, 60), (80, 60), (45, 45), (65, 75)], "right angle"),  # at 56 degrees
        ([(30, 60), (80, 60), (55, 60), (55, 60.5)], "shorter than one image pixel"),
        ([(30, 60), (30, 60), (55, 45), (55, 75)], "shorter than one image pixel"),
    ],
    ids=["apart", "oblique", "short axis a click", "long axis a click"],
)
def test_axes_that_are_not_a_long_and_short_axis_are_refused(
    points: list[tuple[float, float]], why: str
) -> None:
    with pytest.raises(ValueError, match=why):
        shapes.axes(angio(), points)


# -- through the web ----------------------------------------------------------------


@pytest.fixture
def client(config: Config, archive: Archive) -> FlaskClient:
    return cardiologist(config, archive)


def _stored(ingestor: Ingestor, ds: Dataset) -> str:
    done = ingestor.ingest(incoming(ds))
    assert done.status == 0, done
    return str(done.dataset.SOPInstanceUID)


def _measure(client: FlaskClient, uid: str, kind: str, points: Any) -> Any:
    return client.post(
        f"/api/instances/{uid}/measure",
        headers=HEADERS,
        json={"kind": kind, "points": points, "frame": 0},
    )


def test_the_api_measures_an_outline_and_two_axes(client: FlaskClient, ingestor: Ingestor) -> None:
    uid = _stored(ingestor, angio())
    area = _measure(client, uid, "area", [list(p) for p in circle(60, 60, 25)])
    assert area.status_code == 200, area.json
    assert area.json["value"] == pytest.approx(math.pi * 25, rel=0.02)  # (25 × 0.2)² π mm²
    assert area.json["unit"] == "mm²" and area.json["source"] == "Pixel Spacing"
    both = _measure(client, uid, "bidirectional", [[30, 60], [80, 60], [55, 45], [55, 75]])
    assert both.status_code == 200, both.json
    assert (both.json["value"], both.json["short"]) == (pytest.approx(10), pytest.approx(6))


@pytest.mark.parametrize(
    ("kind", "points", "why"),
    [
        ("area", [[10, 10], [50, 50], [50, 10], [10, 50]], "crosses itself"),
        ("area", [[10, 10], [20, 20]], "area: an outline of 3 to"),
        (
            "area",
            [[10 + k % 100, 10 + k // 100] for k in range(shapes.MOST_OUTLINE + 1)],
            "area: an outline of 3 to",
        ),
        ("area", "a circle", "area: an outline of 3 to"),
        ("area", [[10, 10], [50, 10], [50, float("nan")]], "points"),
        ("area", [[10, 10], [5000, 10], [50, 50]], "outside the image"),
        ("bidirectional", [[30, 60], [80, 60], [55, 45]], "needs 4 points"),
        ("bidirectional", [[30, 60], [80, 60], [90, 45], [90, 75]], "must cross"),
    ],
    ids=[
        "figure-eight",
        "two points",
        "too many",
        "not a list",
        "nan",
        "outside",
        "three",
        "apart",
    ],
)
def test_the_api_refuses_what_measures_nothing(
    client: FlaskClient, ingestor: Ingestor, kind: str, points: Any, why: str
) -> None:
    uid = _stored(ingestor, angio())
    answer = _measure(client, uid, kind, points)
    assert answer.status_code == 400 and why in answer.json["message"], answer.json


def test_an_outline_drawn_pixel_by_pixel_is_within_the_bound(
    client: FlaskClient, ingestor: Ingestor
) -> None:
    # What the browser sends for a slow drag: a point every two screen
    # pixels, at most MOST_OUTLINE; one image pixel per point here.
    uid = _stored(ingestor, angio())
    ring = circle(64, 64, 60, shapes.MOST_OUTLINE)
    answer = _measure(client, uid, "area", [[round(x, 2), round(y, 2)] for x, y in ring])
    assert answer.status_code == 200, answer.json
    assert answer.json["value"] == pytest.approx(math.pi * (60 * SPACING) ** 2, rel=0.01)


def test_every_pixel_inside_a_traced_area_is_counted_once() -> None:
    # The shoelace against a count of pixel centres inside the outline.
    outline = circle(64, 64, 30, 300)
    y, x = np.mgrid[0:128, 0:128] + 0.5
    inside = (x - 64) ** 2 + (y - 64) ** 2 <= 30**2
    found = shapes.area(angio(), outline)
    assert found.value == pytest.approx(inside.sum() * SPACING**2, rel=0.02)


# -- in a plan, its SR, its print page and the report's key images -------------------


def test_a_plan_keeps_an_outline_and_two_axes_and_its_sr_codes_them(
    client: FlaskClient, ingestor: Ingestor, archive: Archive, tmp_path: Path
) -> None:
    done = ingestor.ingest(incoming(angio()))
    assert done.status == 0, done
    uid, study = str(done.dataset.SOPInstanceUID), str(done.dataset.StudyInstanceUID)
    ring = [[round(x, 2), round(y, 2)] for x, y in circle(60, 60, 25, 40)]
    drawn = []
    for kind, points in (
        ("area", ring),
        ("bidirectional", [[30, 60], [80, 60], [55, 45], [55, 75]]),
        ("angle", [[60, 60], [100, 60], [60, 100]]),  # the vertex first
    ):
        found = _measure(client, uid, kind, points)
        assert found.status_code == 200, found.json
        drawn.append({"uid": uid, "frame": 0, "kind": kind, "points": points, **found.json})
    drawn[1]["short"] = 1.0  # the browser's word for the short axis is not what is kept
    plan = {"defect": "secundum ASD", "plan": "new", "slots": [], "measurements": drawn}
    _, path = saved_report(client, archive, study, plan, tmp_path)
    report = dcmread(path)
    numbers = {}
    for item in _walk(report.ContentSequence):
        if item.ValueType == "NUM":
            code = item.ConceptNameCodeSequence[0]
            unit = item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue
            shapes_of = [
                i for i in _walk(item.get("ContentSequence", [])) if i.ValueType == "SCOORD"
            ]
            if not shapes_of:
                continue  # the child's BSA
            shape = shapes_of[0]
            numbers[(code.CodeValue, unit)] = (
                float(item.MeasuredValueSequence[0].NumericValue),
                shape.GraphicType,
                [float(v) for v in shape.GraphicData],
            )
    area, kind, data = numbers[("42798000", "mm2")]
    assert area == pytest.approx(math.pi * 25, rel=0.02) and kind == "POLYLINE"
    assert data[:2] == data[-2:] and len(data) == 2 * (len(ring) + 1)  # closed on its start
    assert numbers[("103339001", "mm")][:2] == (10.0, "POLYLINE")  # long axis
    assert numbers[("103340004", "mm")][0] == 6.0  # short axis, as measured
    assert numbers[("103340004", "mm")][2] == [55.0, 45.0, 55.0, 75.0]
    read = hd.sr.srread(path)
    (group,) = read.content.get_image_measurement_groups()
    assert {m.name.value for m in group.get_measurements()} >= {
        "42798000",
        "103339001",
        "103340004",
    }

    page = client.get(f"/studies/{study}/plan/print").get_data(as_text=True)
    assert re.search(r'<polygon class="caliper" data-label="1" points="(\S+,\S+ ){40}"', page)
    assert len(re.findall(r'<line class="caliper" data-label="2"', page)) == 2
    assert "10.0 × 6.0 mm" in page  # both axes on paper, as on screen
    # The angle's arms meet at its vertex, drawn between their ends.
    assert re.search(
        r'<polyline class="caliper" data-label="3" points="100\S*,60\S* 60\S*,60\S* 60\S*,100\S* "',
        page,
    ), re.findall("<polyline[^>]*>", page)


def test_the_reports_key_image_draws_each_shape_as_the_viewer_does() -> None:
    image = Image.new("RGB", (120, 120))
    pen = ImageDraw.Draw(image)
    keyimages._draw(pen, {"kind": "angle", "points": [[60, 60], [100, 60], [60, 100]]}, 1.0, 1)
    assert image.getpixel((60, 80)) == keyimages.CALIPER  # the second arm, from the vertex
    assert image.getpixel((80, 80)) == (0, 0, 0)  # no chord between the arms' ends
    image = Image.new("RGB", (120, 120))
    pen = ImageDraw.Draw(image)
    keyimages._draw(
        pen, {"kind": "bidirectional", "points": [[10, 60], [110, 60], [60, 30], [60, 90]]}, 1.0, 1
    )
    assert image.getpixel((60, 40)) == keyimages.CALIPER and image.getpixel((85, 75)) == (0, 0, 0)
    image = Image.new("RGB", (120, 120))
    pen = ImageDraw.Draw(image)
    keyimages._draw(
        pen, {"kind": "area", "points": [[20, 20], [100, 20], [100, 100], [20, 100]]}, 1.0, 1
    )
    assert image.getpixel((20, 60)) == keyimages.CALIPER  # closed: the edge back to the start


# -- what an outside attack found (helper review) ---------------------------------


@pytest.mark.parametrize(
    "outline",
    [
        [(10, 10), (50, 10), (50, 50), (10, 50)] * 2,  # a square traced twice
        [*circle(60, 60, 20, 60), *circle(60, 60, 20, 60)],  # a circle traced twice
        # Two loops meeting at a point, (30, 30).
        [(10, 10), (30, 10), (30, 30), (50, 30), (50, 50), (30, 50), (30, 30), (10, 30)],
        # A figure-eight crossing through a vertex.
        [(10, 10), (30, 30), (50, 50), (50, 10), (30, 30), (10, 50)],
        # A figure-eight whose crossing lay off the image: clamped, its loops
        # press along the image's edge.
        [(0, 10), (30, 10), (30, 30), (0, 30), (0, 20), (0, 40), (30, 40), (30, 60), (0, 60)],
    ],
    ids=["square twice", "circle twice", "loops at a point", "through a vertex", "along the edge"],
)
def test_an_outline_that_touches_or_retraces_itself_is_refused(
    outline: list[tuple[float, float]],
) -> None:
    assert shapes.outline_fault(outline) == shapes.CROSSES


@pytest.mark.parametrize(
    "points",
    [
        [(30, 60), (80, 60), (80, 60), (80, 90)],  # an L: the short axis starts at the long's end
        [(30, 60), (80, 60), (55, 60), (55, 90)],  # a T: it starts on the long axis
    ],
    ids=["L", "T"],
)
def test_axes_that_only_touch_are_refused(points: list[tuple[float, float]]) -> None:
    with pytest.raises(ValueError, match="must cross"):
        shapes.axes(angio(), points)


@pytest.mark.parametrize("delta", [1e-300, 1e-200, float("nan"), float("inf"), 1e300, 5.0])
def test_a_region_whose_scale_is_no_probes_measures_in_pixels(
    client: FlaskClient, ingestor: Ingestor, delta: float
) -> None:
    ds = echo()
    ds.SequenceOfUltrasoundRegions[0].PhysicalDeltaX = delta
    uid = _stored(ingestor, ds)
    for kind, points in (
        ("area", [[50, 100], [90, 100], [90, 140], [50, 140]]),
        ("length", [[50, 100], [90, 100]]),
        ("bidirectional", [[50, 100], [90, 100], [70, 90], [70, 110]]),
    ):
        answer = _measure(client, uid, kind, points)
        assert answer.status_code == 200, (kind, answer.get_data(as_text=True))
        assert answer.json["unit"] in ("px", "px²") and "no probe's" in answer.json["source"]
        assert math.isfinite(answer.json["value"]) and answer.json["value"] > 0


def test_a_calibration_line_on_pixels_that_are_not_square_is_refused(
    client: FlaskClient, ingestor: Ingestor
) -> None:
    uid = _stored(ingestor, echo())  # the right region: 0.1 mm across, 0.2 mm down
    calibration = {
        "id": 1,
        "points": [[400, 100], [400, 150]],
        "mm": 10.0,
        "scope": {"kind": "frame", "uid": uid, "frame": 0},
    }
    answer = client.post(
        f"/api/instances/{uid}/measure",
        headers=HEADERS,
        json={
            "kind": "area",
            "points": [[400, 100], [440, 100], [440, 140], [400, 140]],
            "frame": 0,
            "calibration": calibration,
        },
    )
    assert answer.status_code == 400 and "not square" in answer.json["message"], answer.json


def test_the_print_page_and_the_reports_key_image_give_both_axes() -> None:
    assert keyimages._value(
        {"kind": "bidirectional", "value": 10.0, "short": 6.0, "unit": "mm"}
    ) == ("10.0 × 6.0 mm")
