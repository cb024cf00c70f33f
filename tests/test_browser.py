"""The viewer in headless Debian Chromium driven by Playwright: what a
cardiologist does, click by click. Screenshots go to test-artifacts/."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, expect
from werkzeug.security import generate_password_hash

from dicomnode.config import Config
from dicomnode.ingest.importer import split_file
from dicomnode.ingest.pipeline import Incoming
from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, sample_file, xa_instance
from tests.conftest import incoming

pytestmark = [pytest.mark.slow, pytest.mark.peers]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PASSWORD = "correct horse battery"
# The workplace's closed network: no background fetches, no sandbox as root.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """The Debian Chromium under Playwright, as every browser test runs it
    (never a downloaded browser; the closed network's flags)."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        pytest.fail("Debian chromium is not installed: run `make peers`")
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def web_node(config: Config) -> Iterator[Node]:
    with Node(replace(config, http_host="127.0.0.1"), web=True) as node:
        node.archive.index.accounts.add("amina", generate_password_hash(PASSWORD), "cardiologist")
        data, syntax = split_file(sample_file("color3d_jpeg_baseline.dcm").read_bytes())
        assert node.ingestor.ingest(Incoming(data, syntax, calling_ae="BISHKEK_ECHO")).status == 0
        xa = xa_instance(PATIENTS[0], frames=20, rows=128, cols=128)
        assert node.ingestor.ingest(incoming(xa, calling_ae="BISHKEK_CATH")).status == 0
        yield node


@pytest.fixture
def page(web_node: Node):
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.base = f"http://127.0.0.1:{web_node.http_port}"  # type: ignore[attr-defined]
        blocked: list[str] = []  # the CSP allows no inline script: nothing may need one
        page.on(
            "console",
            lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
        )
        yield page
    assert blocked == [], blocked


# Two window sizes and pixel ratios the measuring tests run at.
SIZES = [(1400, 900, 1), (1024, 700, 2)]
SIZE_IDS = ["1400x900", "1024x700@2x"]


@contextmanager
def sized_page(node: Node, width: int, height: int, ratio: float) -> Iterator[Any]:
    """A page of ``width`` x ``height`` CSS pixels at ``ratio`` device pixels each."""
    with chromium() as browser:
        context = browser.new_context(
            viewport={"width": width, "height": height}, device_scale_factor=ratio
        )
        page = context.new_page()
        page.base = f"http://127.0.0.1:{node.http_port}"
        yield page
        context.close()


def log_in(page, password: str = PASSWORD, user: str = "amina") -> None:
    page.goto(page.base + "/")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def on_screen(
    box: dict,
    size: tuple[int, int],
    point: tuple[float, float],
    zoom: float = 1.0,
    pan: tuple[float, float] = (0.0, 0.0),
) -> tuple[float, float]:
    """Where an image point (continuous: pixel i spans [i, i + 1)) is on the
    page, computed here from the canvas box alone: the image of ``size``
    (columns, rows) fitted into the box and centred (what CSS object-fit:
    contain does), zoomed about the box centre, then panned in CSS pixels.
    Deliberately not the page's own transform, which it is here to check."""
    columns, rows = size
    scale = min(box["width"] / columns, box["height"] / rows) * zoom
    left = box["x"] + (box["width"] - columns * scale) / 2 + pan[0]
    top = box["y"] + (box["height"] - rows * scale) / 2 + pan[1]
    return left + point[0] * scale, top + point[1] * scale


def test_wrong_password_stays_on_the_login_page(page) -> None:
    log_in(page, "wrong password!")
    assert page.locator("[role=alert]").inner_text() == "Wrong user name or password."
    assert "/login" in page.url


def test_find_an_echo_and_play_it_at_its_frame_rate(page) -> None:
    log_in(page)
    page.select_option("select[name=modality]", "US")
    page.click("form.search button[type=submit]")
    page.wait_for_url("**modality=US**")
    rows = page.locator("table.studies tbody a")
    expect(rows).to_have_count(1)  # waits for the result page, not a race with it
    rows.first.click()
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 120")
    page.wait_for_function("() => window.viewerState()[0].playing")
    # Every frame arrived: the player waits for one still on its way, which
    # on a loaded machine is the network's rate, not the clip's.
    page.wait_for_function("() => window.viewerState()[0].loaded", timeout=120_000)
    # Frames advanced over two seconds of animation, timed on the page's own
    # animation clock (the one the player uses), not the test's: a loaded
    # machine delays both alike. Counted step by step, so a long stall
    # between two animation frames cannot wrap the 120-frame loop unseen.
    advanced, seconds = page.evaluate(
        """() => new Promise((done) => {
            let start = null, last = null, advanced = 0;
            const check = (now) => {
              const frame = window.viewerState()[0].frame;
              if (start === null) { start = now; last = frame; }
              advanced += (frame - last + 120) % 120;
              last = frame;
              if (now - start < 2000) return requestAnimationFrame(check);
              done([advanced, (now - start) / 1000]);
            };
            requestAnimationFrame(check);
        })"""
    )
    assert abs(advanced / seconds - 30) <= 1, (advanced, seconds)  # Frame Time 33.3 ms
    page.screenshot(path=str(ARTIFACTS / "echo-playing.png"))
    page.keyboard.press("Space")
    assert page.evaluate("() => window.viewerState()[0].playing") is False
    frame = page.evaluate("() => window.viewerState()[0].frame")
    page.keyboard.press("ArrowRight")
    assert page.evaluate("() => window.viewerState()[0].frame") == (frame + 1) % 120
    page.keyboard.press("i")
    assert page.evaluate("() => window.viewerState()[0].invert") is True
    assert page.locator("#counter").inner_text() == f"{(frame + 1) % 120 + 1} / 120"


def test_window_level_drag_changes_the_angio_image(page) -> None:
    log_in(page)
    page.select_option("select[name=modality]", "XA")
    page.click("form.search button[type=submit]")
    page.locator("table.studies tbody a").first.click()
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 20")
    page.keyboard.press("Space")  # pause, so only window/level changes the pixels
    canvas = page.locator(".viewport canvas").first
    before = canvas.screenshot()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + 150, y - 60, steps=5)
    page.mouse.up()
    assert page.evaluate("() => window.viewerState()[0].contrast") > 1.5
    after = canvas.screenshot()
    assert before != after
    page.screenshot(path=str(ARTIFACTS / "angio-window-level.png"))


def test_a_forged_post_without_the_csrf_token_is_refused(page) -> None:
    log_in(page)
    status = page.evaluate("() => fetch('/logout', {method: 'POST'}).then(r => r.status)")
    assert status == 400
    page.goto(page.base + "/")
    assert "/login" not in page.url  # still logged in: the forged logout did nothing
    page.click("header button[type=submit]")  # the real form carries the token
    assert "/login" in page.url


def open_phantom(page, web_node: Node) -> None:
    """The calibration phantom open in the viewer, the length tool chosen."""
    from dicomnode.ops.samples import us_phantom

    assert web_node.ingestor.ingest(incoming(us_phantom(PATIENTS[3]))).status == 0
    log_in(page)
    page.fill("input[name=text]", "Catheterisation")  # the phantom's study description
    page.click("form.search button[type=submit]")
    page.locator("table.studies tbody a").first.click()
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 1")
    page.select_option("#tool", "length")


def test_a_drawn_length_on_the_phantom_is_20_mm(page, web_node: Node) -> None:
    open_phantom(page, web_node)
    box = page.locator(".viewport canvas").first.bounding_box()
    page.mouse.click(*on_screen(box, (640, 480), (200.5, 240.5)))
    page.mouse.click(*on_screen(box, (640, 480), (240.5, 240.5)))
    page.locator("#measurements li").first.wait_for()
    text = page.locator("#measurements li").first.inner_text()
    value = float(re.search(r"length ([\d.]+) mm", text)[1])
    assert abs(value - 20.0) <= 0.1 + 0.5, text  # 0.1 mm plus one pixel (0.5 mm)
    assert "ultrasound region 1 (cm)" in text


def test_measure_fill_the_asd_worksheet_and_save(page, web_node: Node) -> None:
    log_in(page)
    page.select_option("select[name=modality]", "US")
    page.click("form.search button[type=submit]")
    page.locator("table.studies tbody a").first.click()
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 120")
    page.keyboard.press("Space")
    page.select_option("#tool", "length")
    box = page.locator(".viewport canvas").first.bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return on_screen(box, (640, 480), (x, y))  # the clip is 640 x 480

    page.mouse.click(*at(300, 200))
    page.mouse.click(*at(400, 200))
    item = page.locator("#measurements li").first
    item.wait_for()
    text = item.inner_text()
    assert " mm " in text and "ultrasound region" in text, text
    page.locator("#slots button").first.click()  # ASD maximal diameter <- that length
    assert float(page.locator("#slots input").first.input_value()) > 0
    page.fill("#rims input[data-rim=aortic]", "3")
    page.fill("#rims input[data-rim=IVC]", "9")
    page.click("#save-plan")
    result = page.locator("#plan-result")
    result.locator("li").nth(2).wait_for()
    summary = result.inner_text()
    assert "version 1" in summary and "Deficient rims (< 5 mm): aortic" in summary
    assert "Candidate devices:" in summary and "not an order" in summary
    page.screenshot(path=str(ARTIFACTS / "asd-plan.png"))
    series = web_node.archive.index.stats()["modalities"]
    assert series.get("SR") == 1  # the plan's report is in the archive
    # Reopened, the study shows the saved plan and its measurement again.
    page.reload()
    page.locator("#plan-version").filter(has_text="version 1").wait_for()
    assert " mm " in page.locator("#measurements li").first.inner_text()
    assert page.locator("#rims input[data-rim=aortic]").input_value() == "3"
    assert "Closure plan (secundum ASD)" in page.locator("#series li.report").inner_text()


def test_a_drawn_length_can_be_edited_by_dragging_its_end(page, web_node: Node) -> None:
    open_phantom(page, web_node)
    box = page.locator(".viewport canvas").first.bounding_box()

    def at(x: float, y: float) -> tuple[float, float]:
        return on_screen(box, (640, 480), (x, y))

    page.mouse.click(*at(200, 240))
    page.mouse.click(*at(240, 240))  # 40 px: 20 mm
    item = page.locator("#measurements li").first
    item.wait_for()
    page.mouse.move(*at(240, 240))
    page.mouse.down()
    page.mouse.move(*at(280, 240), steps=5)
    page.mouse.up()
    page.wait_for_function(
        "() => document.querySelector('#measurements li').textContent.startsWith('length 40.0')"
    )
    assert page.locator("#measurements li").count() == 1  # edited, not a second one


def test_researcher_previews_exports_and_downloads_a_cohort(page, web_node: Node) -> None:
    accounts = web_node.archive.index.accounts
    accounts.add("zarina", generate_password_hash(PASSWORD), "researcher")
    page.goto(page.base + "/")
    page.fill("input[name=username]", "zarina")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.click("text=Research export")
    page.fill("#cohort input[name=modality]", "XA")
    page.click("#preview")
    counts = page.locator("#counts")
    counts.wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('counts').textContent !== ''")
    assert counts.inner_text().startswith("1 patients, 1 studies, 1 series, 1 instances")
    page.click("#start")
    link = page.locator("#jobs a", has_text="Download")
    link.wait_for(timeout=60_000)
    assert page.locator("#jobs progress").first.get_attribute("value") == "100"
    with page.expect_download() as download:
        link.click()
    saved = download.value.path()
    assert saved is not None and Path(saved).read_bytes()[:2] == b"PK"
    page.screenshot(path=str(ARTIFACTS / "research-export.png"))


def test_the_issue_lines_read_what_the_server_computes(page) -> None:
    """The issue's lines: pixels 300 to 500 on a colour echo (on the demo
    clip, 43.9 mm read where the server computes 61.5 mm when clicks were
    mapped over the letterbox) and a 100 px line on an XA run (~10.5 mm,
    read as 5.6 mm): what a click records is what the server computes for
    those pixels."""
    log_in(page)
    for modality, size, a, b, expected in (
        ("US", (640, 480), (300.5, 200.5), (500.5, 200.5), None),
        ("XA", (128, 128), (14.5, 64.5), (114.5, 64.5), 10.5),
    ):
        page.goto(page.base + f"/?modality={modality}")
        page.locator("table.studies tbody a").first.click()
        page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames > 1")
        page.keyboard.press("Space")
        page.select_option("#tool", "length")
        box = page.locator(".viewport canvas").first.bounding_box()
        page.mouse.click(*on_screen(box, size, a))
        page.mouse.click(*on_screen(box, size, b))
        page.wait_for_function("() => window.measureApi.measurements().length === 1")
        drawn = page.evaluate("() => window.measureApi.measurements()[0]")
        server = page.evaluate(
            """([uid, frame, points]) => fetch(`/api/instances/${uid}/measure`, {
                method: "POST", body: JSON.stringify({kind: "length", points, frame}),
                headers: {"Content-Type": "application/json", "X-CSRF-Token":
                  document.querySelector("meta[name=csrf-token]").content}}).then(r => r.json())""",
            [drawn["uid"], drawn["frame"], [list(a), list(b)]],
        )
        per_px = server["value"] / 200 if modality == "US" else server["value"] / 100
        assert abs(drawn["value"] - server["value"]) <= 0.1 + per_px, (drawn, server)
        assert expected is None or abs(server["value"] - expected) <= 0.1 + per_px, server
