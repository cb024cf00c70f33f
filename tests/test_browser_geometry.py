"""Calipers land where they are clicked: Chromium clicks at the page
position of known pixels of phantoms of known scale, at several window
sizes, at device pixel ratio 2, zoomed and panned, in both viewports of the
split view. The page position is computed here from the canvas box and the
image size (test_browser.on_screen), never through the page's transform.

Also the calibration as an object (scoped, drawn, listed, edited, cleared),
every run of a series, pending clicks, Delete, and the researcher's view.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from io import BytesIO

import pytest
from PIL import Image as Picture
from playwright.sync_api import expect
from werkzeug.security import generate_password_hash

from dicomnode.node import Node
from storage.keys import Level
from storage.query import Query
from tests import phantoms
from tests.conftest import incoming, make_config
from tests.test_browser import ARTIFACTS, PASSWORD, chromium, on_screen

pytestmark = [pytest.mark.slow, pytest.mark.peers]
# Thumbnails of the phantom study, in the page's order.
ECHO, RUN1, RUN2, CATHETER, STACK = range(5)
SIZES = {RUN1: phantoms.XA_RUN1, RUN2: phantoms.XA_RUN2, CATHETER: phantoms.XA_CATHETER}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    config = make_config(tmp_path_factory.mktemp("geometry"))
    with Node(replace(config, http_host="127.0.0.1"), web=True) as running:
        accounts = running.archive.index.accounts
        accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
        accounts.add("zarina", generate_password_hash(PASSWORD), "researcher")
        for ds in phantoms.study():
            assert running.ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
        yield running


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def study_url(node: Node) -> str:
    query = Query(Level.STUDY, {"StudyInstanceUID": "", "StudyDescription": phantoms.DESCRIPTION})
    (row,) = node.archive.index.find(query)
    return f"http://127.0.0.1:{node.http_port}/studies/{row['StudyInstanceUID']}"


@pytest.fixture
def open_study(browser, node: Node):
    """A logged-in page on the phantom study at a window size; the echo
    (first thumbnail) open in the first viewport, ``tool`` chosen."""
    contexts = []

    def opened(
        width: int = 1400,
        height: int = 900,
        dpr: float = 1,
        user: str = "amina",
        tool: str | None = None,
        locale: str | None = None,
    ):
        context = browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=dpr, locale=locale
        )
        contexts.append(context)
        page = context.new_page()
        page.errors = []  # type: ignore[attr-defined]
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.goto(f"http://127.0.0.1:{node.http_port}/login")
        page.fill("input[name=username]", user)
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        page.goto(study_url(node))
        page.wait_for_function(
            "() => window.viewerState && window.viewerState()[0].frames === 1"
            " && window.viewerState()[0].thumb === 0"
        )
        if tool:
            page.select_option("#tool", tool)
        return page

    yield opened
    for context in contexts:
        page_errors = [e for p in context.pages for e in p.errors]
        context.close()
        assert page_errors == []


def show(page, thumb: int, viewport: int = 0, frames: int | None = None) -> None:
    """Open a thumbnail in the active viewport and pause it on frame 1."""
    page.locator("#series .thumb").nth(thumb).click()
    page.wait_for_function("([v, n]) => window.viewerState()[v].thumb === n", arg=[viewport, thumb])
    if frames:
        page.wait_for_function(
            "([v, n]) => window.viewerState()[v].frames === n", arg=[viewport, frames]
        )
    page.evaluate(
        "(v) => { const vp = window.viewerApi.viewports[v]; vp.playing = false; vp.frame = 0;"
        " window.viewerApi.draw(vp); }",
        viewport,
    )


def box(page, viewport: int = 0) -> dict:
    return page.locator(".viewport canvas").nth(viewport).bounding_box()


def colour(page, x: float, y: float) -> tuple[int, int, int]:
    """The screen's RGB at a page point (what the eye sees there)."""
    shot = page.screenshot(clip={"x": x - 1, "y": y - 1, "width": 3, "height": 3})
    picture = Picture.open(BytesIO(shot)).convert("RGB")
    return picture.getpixel((picture.width // 2, picture.height // 2))


def grey(page, x: float, y: float) -> float:
    return sum(colour(page, x, y)) / 3


def assert_drawn_where_expected(page, viewport: int, image: phantoms.Image, **view) -> None:
    """The phantom's bright and dark pixels are on screen where the test's
    own letterbox maths puts them: drawing and clicking agree."""
    where = box(page, viewport)
    bright = grey(page, *on_screen(where, (image.columns, image.rows), image.bright, **view))
    dark = grey(page, *on_screen(where, (image.columns, image.rows), image.dark, **view))
    assert bright > 180 and dark < 110, (bright, dark)


def measure_line(
    page,
    viewport: int,
    image: phantoms.Image,
    a: tuple[float, float],
    b: tuple[float, float],
    **view,
) -> dict:
    """Click a and b (image points) on screen; the recorded measurement."""
    where = box(page, viewport)
    before = page.evaluate("() => window.measureApi.measurements().length")
    for point in (a, b):
        x, y = on_screen(where, (image.columns, image.rows), point, **view)
        assert where["x"] < x < where["x"] + where["width"], "the point must be on the canvas"
        assert where["y"] < y < where["y"] + where["height"], "the point must be on the canvas"
        page.mouse.click(x, y)
    page.wait_for_function("(n) => window.measureApi.measurements().length === n + 1", arg=before)
    measured = page.evaluate("() => window.measureApi.measurements().at(-1)")
    for recorded, clicked in zip(measured["points"], (a, b), strict=True):
        assert math.dist(recorded, clicked) <= 0.5, (recorded, clicked)  # half an image pixel
    truth = math.dist(a, b) * image.mm_per_px
    assert measured["unit"] == "mm", measured
    assert abs(measured["value"] - truth) <= 0.1 + image.mm_per_px, (measured, truth)
    return measured


WINDOWS = [
    pytest.param(1024, 768, 1, id="1024x768"),
    pytest.param(1600, 1000, 1, id="1600x1000"),
    pytest.param(1920, 1080, 1, id="1920x1080"),
    pytest.param(800, 1280, 1, id="portrait-800x1280"),
    pytest.param(1280, 800, 2, id="1280x800-dpr2"),
]


@pytest.mark.parametrize(("width", "height", "dpr"), WINDOWS)
def test_calipers_land_on_the_clicked_pixels(open_study, width, height, dpr) -> None:
    page = open_study(width, height, dpr, tool="length")
    # The echo at fit: the line from column 300 to 500 (61.5 mm on the
    # demo clip; here 0.5 mm/px), slanted so both axes count.
    assert_drawn_where_expected(page, 0, phantoms.US)
    measured = measure_line(page, 0, phantoms.US, (300.5, 200.5), (500.5, 260.5))
    assert "ultrasound region 1 (cm)" in measured["source"]
    # An X-ray run at fit, the 100 px line and a long diagonal.
    show(page, RUN1, frames=3)
    assert_drawn_where_expected(page, 0, phantoms.XA_RUN1)
    measured = measure_line(page, 0, phantoms.XA_RUN1, (100.5, 100.5), (200.5, 100.5))
    assert abs(measured["value"] - 100 * phantoms.XA_MM_PER_PX) <= 0.1 + phantoms.XA_MM_PER_PX
    assert "at isocentre" in measured["source"]
    measure_line(page, 0, phantoms.XA_RUN1, (20.25, 480.75), (490.5, 30.5))
    page.screenshot(path=str(ARTIFACTS / f"geometry-fit-{width}x{height}-dpr{dpr}.png"))


@pytest.mark.parametrize(("width", "height", "dpr"), WINDOWS)
def test_calipers_land_on_the_clicked_pixels_zoomed_and_panned(
    open_study, width, height, dpr
) -> None:
    page = open_study(width, height, dpr, tool="length")
    zoom = 1.25**2
    page.locator(".viewport").first.press("+")
    page.locator(".viewport").first.press("+")
    page.wait_for_function(f"() => Math.abs(window.viewerState()[0].zoom - {zoom}) < 1e-9")
    pan = (37.0, -23.0)  # shift-drag pans, whatever the tool
    where = box(page)
    x, y = where["x"] + where["width"] * 0.3, where["y"] + where["height"] * 0.6
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + pan[0] / 2, y + pan[1] / 2)
    page.mouse.move(x + pan[0], y + pan[1])
    page.mouse.up()
    page.keyboard.up("Shift")
    state = page.evaluate("() => window.viewerState()[0]")
    assert (state["panX"], state["panY"]) == pytest.approx(pan, abs=1e-3)
    assert page.evaluate("() => window.measureApi.measurements().length") == 0  # a pan, not a line
    view = {"zoom": zoom, "pan": pan}
    assert_drawn_where_expected(page, 0, phantoms.US, **view)
    measure_line(page, 0, phantoms.US, (260.5, 200.5), (380.5, 290.5), **view)
    page.screenshot(path=str(ARTIFACTS / f"geometry-zoomed-{width}x{height}-dpr{dpr}.png"))


@pytest.mark.parametrize(("width", "height", "dpr"), WINDOWS)
def test_calipers_land_on_the_clicked_pixels_in_both_viewports(
    open_study, width, height, dpr
) -> None:
    page = open_study(width, height, dpr, tool="length")
    page.click("#split")
    page.wait_for_function("() => window.viewerState().length === 2")
    show(page, RUN2, viewport=1, frames=9)  # a portrait image (384 x 512) on the right
    # The right viewport zoomed out and panned: the image smaller than fit.
    page.locator(".viewport").nth(1).press("-")
    page.wait_for_function("() => Math.abs(window.viewerState()[1].zoom - 0.8) < 1e-9")
    where = box(page, 1)
    x, y = where["x"] + where["width"] / 2, where["y"] + where["height"] / 2
    page.keyboard.down("Shift")
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 15, y + 11)
    page.mouse.up()
    page.keyboard.up("Shift")
    view = {"zoom": 0.8, "pan": (-15.0, 11.0)}
    assert_drawn_where_expected(page, 1, phantoms.XA_RUN2, **view)
    assert_drawn_where_expected(page, 0, phantoms.US)
    right = measure_line(page, 1, phantoms.XA_RUN2, (40.5, 60.5), (340.5, 480.5), **view)
    left = measure_line(page, 0, phantoms.US, (100.5, 300.5), (600.5, 100.5))
    assert right["uid"] != left["uid"]
    assert page.evaluate("() => window.viewerState().map((v) => v.thumb)") == [ECHO, RUN2]
    page.screenshot(path=str(ARTIFACTS / f"geometry-split-{width}x{height}-dpr{dpr}.png"))


def test_the_geometry_follows_a_resized_window(open_study) -> None:
    """The same points after the window changes shape: the box is re-read."""
    page = open_study(1400, 900, tool="length")
    page.set_viewport_size({"width": 900, "height": 1100})
    page.wait_for_function(
        "() => { const c = document.querySelector('.viewport canvas');"
        " return c.width === Math.round(c.getBoundingClientRect().width * devicePixelRatio); }"
    )
    assert_drawn_where_expected(page, 0, phantoms.US)
    measure_line(page, 0, phantoms.US, (300.5, 200.5), (500.5, 260.5))


def test_a_click_on_the_letterbox_records_nothing(open_study) -> None:
    page = open_study(1600, 1000, tool="length")
    where = box(page)
    left, _ = on_screen(where, (640, 480), (0, 0))
    assert left - where["x"] > 20  # the echo is letterboxed left and right here
    page.mouse.click(where["x"] + 5, where["y"] + where["height"] / 2)
    assert page.evaluate("() => window.measureApi.pending()") == 0


def calibrate_on_the_catheter(page) -> dict:
    show(page, CATHETER, frames=4)
    page.select_option("#tool", "calibrate")
    assert page.locator("#french").input_value() == str(phantoms.CATHETER_FRENCH)
    where, size = box(page), (512, 512)
    for column in phantoms.CATHETER:  # across the 24 px band
        page.mouse.click(*on_screen(where, size, (column, 300.5)))
    expect(page.locator("#calibrations li")).to_have_count(1)
    return page.evaluate("() => window.measureApi.calibrations()[0]")


def test_a_catheter_calibration_is_an_object_of_its_series(open_study) -> None:
    page = open_study()
    calibration = calibrate_on_the_catheter(page)
    assert calibration["french"] == 6 and calibration["scope"]["kind"] == "series"
    listed = page.locator("#calibrations li").first.inner_text()
    assert "Calibration 1: catheter 6F" in listed and "0.083 mm/px" in listed, listed
    # Drawn on its frame: the calibration line's colour over the dark catheter.
    where, size = box(page), (512, 512)
    r, g, b = colour(page, *on_screen(where, size, (262.0, 300.5)))
    assert g > 150, (r, g, b)  # the line (cyan, yellow while selected), not the catheter's black
    page.screenshot(path=str(ARTIFACTS / "calibration-drawn.png"))
    # A measurement on its series uses it (10 mm: 120 px at 1/12 mm/px)...
    page.select_option("#tool", "length")
    image = replace(phantoms.XA_CATHETER, mm_per_px=phantoms.CATHETER_MM_PER_PX)
    on_catheter = measure_line(page, 0, image, (150.5, 100.5), (150.5, 220.5))
    assert on_catheter["source"] == "catheter 6F (calibration 1)"
    assert on_catheter["calibration_id"] == 1
    # ...one on another series does not.
    show(page, RUN1, frames=3)
    elsewhere = measure_line(page, 0, phantoms.XA_RUN1, (150.5, 100.5), (150.5, 220.5))
    assert elsewhere["calibration_id"] is None and "at isocentre" in elsewhere["source"]
    # Edited: its end dragged from 24 to 12 px; what used it is measured again.
    show(page, CATHETER, frames=4)
    where = box(page)
    page.mouse.move(*on_screen(where, size, (phantoms.CATHETER[1], 300.5)))
    page.mouse.down()
    page.mouse.move(*on_screen(where, size, (phantoms.CATHETER[0] + 12, 300.5)), steps=4)
    page.mouse.up()
    page.wait_for_function("() => Math.abs(window.measureApi.measurements()[0].value - 20) < 0.2")
    assert page.evaluate("() => window.measureApi.measurements()[1].calibration_id") is None
    # Cleared: the measurement falls back to the image's own scale.
    page.locator("#calibrations li button", has_text="Clear").click()
    expect(page.locator("#calibrations li")).to_have_count(0)
    page.wait_for_function("() => window.measureApi.measurements()[0].calibration_id === null")
    fallback = page.evaluate("() => window.measureApi.measurements()[0]")
    assert fallback["value"] == pytest.approx(120 * phantoms.XA_MM_PER_PX, abs=0.1)
    assert "at isocentre" in fallback["source"]
    assert page.evaluate("() => window.measureApi.calibrations()") == []


def calibrate_length(page, size: tuple[int, int], a, b, mm: str) -> None:
    page.select_option("#tool", "calibrate-length")
    page.fill("#known-mm", mm)
    where = box(page)
    for point in (a, b):
        page.mouse.click(*on_screen(where, size, point))


def test_a_series_calibration_is_offered_only_on_runs_of_its_geometry(open_study) -> None:
    """The phantom's two runs share a series but not a size (512 and 384
    columns): a calibration drawn on run 1 is not offered on run 2."""
    page = open_study()
    show(page, RUN1, frames=3)
    calibrate_length(page, (512, 512), (100.5, 300.5), (200.5, 300.5), "10")  # 0.1 mm/px
    expect(page.locator("#calibrations li")).to_have_count(1)
    assert "applies to its series" in page.locator("#calibrations li").inner_text()
    page.wait_for_function("() => window.measureApi.calibration()?.id === 1")
    page.select_option("#tool", "length")
    image = replace(phantoms.XA_RUN1, mm_per_px=0.1)
    on_run1 = measure_line(page, 0, image, (150.5, 100.5), (150.5, 220.5))
    assert on_run1["calibration_id"] == 1 and on_run1["source"].startswith("known length 10")
    # Run 2: none applies (the page says so), its own scale measures.
    show(page, RUN2, frames=9)
    page.wait_for_function("() => window.measureApi.calibration() === null")
    on_run2 = measure_line(page, 0, phantoms.XA_RUN2, (150.5, 100.5), (150.5, 220.5))
    assert on_run2["calibration_id"] is None and "at isocentre" in on_run2["source"]
    assert page.locator("#measure-message").inner_text() == ""
    # Back on run 1, it applies again.
    show(page, RUN1, frames=3)
    page.wait_for_function("() => window.measureApi.calibration()?.id === 1")


def test_a_calibration_too_short_or_of_no_real_scale_is_refused_on_the_page(open_study) -> None:
    page = open_study()
    show(page, CATHETER, frames=4)
    size = (512, 512)
    calibrate_length(page, size, (100.5, 300.5), (103.5, 300.5), "2")  # 3 px
    expect(page.locator("#measure-message")).to_contain_text("too short")
    calibrate_length(page, size, (100.5, 300.5), (120.5, 300.5), "1000")  # 50 mm per pixel
    expect(page.locator("#measure-message")).to_contain_text("mm per pixel")
    assert page.evaluate("() => window.measureApi.calibrations()") == []
    calibrate_length(page, size, (100.5, 300.5), (120.5, 300.5), "2")  # 0.1 mm per pixel
    expect(page.locator("#calibrations li")).to_have_count(1)


def test_the_overlay_writes_numbers_for_the_reader(open_study) -> None:
    """A Russian reader sees 30,03 кадр/с, not 30.03."""
    page = open_study(locale="ru-RU")
    assert page.evaluate("() => document.documentElement.lang") == "ru"
    page.evaluate(
        "() => { const vp = window.viewerApi.viewports[0]; vp.meta.fps = 30.03;"
        " window.viewerApi.draw(vp); }"
    )
    overlay = page.locator(".viewport .overlay").first.inner_text()
    assert "30,03" in overlay and "30.03" not in overlay, overlay


def test_an_echo_calibration_belongs_to_its_frame(open_study) -> None:
    page = open_study(tool="calibrate-length")
    page.fill("#known-mm", "20")
    where = box(page)
    page.mouse.click(*on_screen(where, (640, 480), (200.0, 240.5)))
    page.mouse.click(*on_screen(where, (640, 480), (241.0, 240.5)))
    expect(page.locator("#calibrations li")).to_have_count(1)
    scope = page.evaluate("() => window.measureApi.calibrations()[0].scope")
    assert scope["kind"] == "frame" and scope["frame"] == 0 and "series" not in scope
    assert "this frame only" in page.locator("#calibrations li").inner_text()


def test_a_saved_plan_restores_calibrations_and_notes_a_legacy_one(open_study) -> None:
    page = open_study()
    calibration = calibrate_on_the_catheter(page)
    page.evaluate(
        "(c) => window.measureApi.load({measurements: [], calibrations: [c]})", calibration
    )
    expect(page.locator("#calibrations li")).to_have_count(1)
    page.evaluate(
        "() => window.measureApi.load({measurements: [],"
        " calibration: {points: [[0, 0], [10, 0]], french: 6}})"
    )
    expect(page.locator("#calibrations li")).to_have_count(0)
    expect(page.locator("#calibration")).to_contain_text("was not restored")
    uid = page.evaluate("() => window.viewerState()[0].uid")
    page.evaluate(
        "(uid) => window.measureApi.load({measurements: [],"
        " calibration: {points: [[0, 0], [10, 0]], french: 6, uid}})",
        uid,
    )
    restored = page.evaluate("() => window.measureApi.calibrations()")
    assert [c["scope"]["kind"] for c in restored] == ["series"]


def test_every_run_of_a_series_plays(open_study) -> None:
    page = open_study()
    thumbs = page.locator("#series .thumb")
    expect(thumbs).to_have_count(5)
    assert "run 1 of 2" in thumbs.nth(RUN1).inner_text()
    assert "run 2 of 2" in thumbs.nth(RUN2).inner_text()
    thumbs.nth(RUN2).click()
    page.wait_for_function("() => window.viewerState()[0].frames === 9")
    page.wait_for_function("() => window.viewerState()[0].playing")
    page.wait_for_function("() => window.viewerState()[0].frame >= 2")  # it plays
    # The keys move through the list from where the click left it.
    page.locator("body").press("ArrowDown")
    page.wait_for_function("() => window.viewerState()[0].thumb === 3")
    page.locator("body").press("ArrowUp")
    page.locator("body").press("ArrowUp")
    page.wait_for_function(
        "() => window.viewerState()[0].thumb === 1 && window.viewerState()[0].frames === 3"
    )
    expect(thumbs.nth(RUN1)).to_have_class("thumb current")


def test_a_measurement_on_a_stack_names_the_image_shown(open_study) -> None:
    """In a stack of single-frame instances each frame is another instance:
    the measurement is of that one (its own header, frame 0)."""
    page = open_study()
    show(page, STACK, frames=3)
    instances = page.locator("#series .thumb").nth(STACK).get_attribute("data-instances")
    # The image picker names each image of the stack and goes straight to one.
    expect(page.locator("#instance-picker")).to_be_visible()
    assert page.locator("#instance option").all_inner_texts() == ["1 / 3", "2 / 3", "3 / 3"]
    page.select_option("#instance", "2")
    page.wait_for_function("() => window.viewerState()[0].frame === 2")
    page.locator(".viewport").first.press("ArrowLeft")
    page.wait_for_function("() => window.viewerState()[0].frame === 1")
    expect(page.locator("#instance")).to_have_value("1")  # and follows the keys
    page.select_option("#tool", "length")
    measured = measure_line(page, 0, phantoms.STACK, (10.5, 20.5), (50.5, 20.5))
    assert measured["uid"] == instances.split()[1] and measured["frame"] == 0
    # The list names the image of the stack, and the stack never played itself.
    expect(page.locator("#measurements li").first).to_contain_text("image 2/3")
    assert page.evaluate("() => window.viewerState()[0].playing") is False
    expect(page.locator(".viewport .overlay").first).to_contain_text("image 2/3")


def test_a_pending_click_never_outlives_its_tool(open_study) -> None:
    page = open_study()
    where, size = box(page), (640, 480)
    page.select_option("#tool", "length")
    page.mouse.click(*on_screen(where, size, (100.5, 100.5)))
    assert page.evaluate("() => window.measureApi.pending()") == 1
    r, g, b = colour(page, *on_screen(where, size, (100.5, 100.5)))
    assert r > 200 and b < 120, (r, g, b)  # the pending point is drawn (orange)
    page.screenshot(path=str(ARTIFACTS / "pending-point.png"))
    page.select_option("#tool", "angle")
    assert page.evaluate("() => window.measureApi.pending()") == 0
    page.mouse.click(*on_screen(where, size, (300.5, 300.5)))
    page.mouse.click(*on_screen(where, size, (400.5, 300.5)))
    assert page.evaluate("() => window.measureApi.measurements().length") == 0
    page.locator("body").press("Escape")
    assert page.evaluate("() => window.measureApi.pending()") == 0
    for point in ((300.5, 300.5), (400.5, 300.5), (300.5, 200.5)):
        page.mouse.click(*on_screen(where, size, point))
    page.wait_for_function("() => window.measureApi.measurements().length === 1")
    angle = page.evaluate("() => window.measureApi.measurements()[0]")
    assert angle["kind"] == "angle" and angle["value"] == pytest.approx(90, abs=0.5)


def test_delete_removes_the_selected_measurement(open_study) -> None:
    page = open_study()
    where, size = box(page), (640, 480)
    page.select_option("#tool", "length")
    lines = (((100.5, 100.5), (200.5, 100.5)), ((100.5, 300.5), (300.5, 300.5)))
    for count, (a, b) in enumerate(lines, start=1):
        page.mouse.click(*on_screen(where, size, a))
        page.mouse.click(*on_screen(where, size, b))
        # Each line listed before the next is drawn: their answers could cross.
        expect(page.locator("#measurements li")).to_have_count(count)
    page.locator("#measurements li").first.click(position={"x": 4, "y": 6})  # its text: selects it
    expect(page.locator("#measurements li.selected")).to_have_count(1)
    page.locator("body").press("Delete")
    expect(page.locator("#measurements li")).to_have_count(1)
    assert page.evaluate("() => window.measureApi.measurements()[0].points[1][0]") == pytest.approx(
        300.5, abs=0.5
    )
    page.locator("#measurements li button", has_text="Delete").click()
    expect(page.locator("#measurements li")).to_have_count(0)


def test_a_researcher_is_offered_no_measuring_tools(open_study) -> None:
    page = open_study(user="zarina")
    assert page.locator("#tool").count() == 0
    posted: list[str] = []
    page.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
    where = box(page)
    page.mouse.click(*on_screen(where, (640, 480), (300.5, 200.5)))
    page.mouse.click(*on_screen(where, (640, 480), (400.5, 200.5)))
    assert page.evaluate("() => window.measureApi.measurements().length") == 0
    assert posted == []
    show(page, RUN1, frames=3)  # viewing still works
