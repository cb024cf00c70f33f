"""Reading a run as an echo station reads: the wheel steps frames and,
with Ctrl, zooms; the window is shown and typed as numbers (centre,
width) and follows a drag; a measurement takes a label, at two window
sizes and pixel ratios."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, xa_instance
from tests.browser_sizes import page, show_study  # noqa: F401 (fixture)
from tests.test_browser import (  # noqa: F401 (fixture)
    log_in,
    web_node,
)

pytestmark = [pytest.mark.slow, pytest.mark.peers]


def test_wheel_numeric_window_and_labels(page: Page, web_node: Node) -> None:  # noqa: F811
    run = xa_instance(PATIENTS[1], frames=10, rows=64, cols=64)
    log_in(page)
    show_study(page, web_node, run)
    page.evaluate("() => window.viewerApi.show(window.viewerState()[0].uid, 0)")
    expect(page.locator("#instance-picker")).to_be_hidden()  # a run: its frames are the slider's
    canvas = page.locator(".viewport canvas").first
    canvas.hover()
    for _ in range(3):
        page.mouse.wheel(0, 100)
    page.wait_for_function("() => window.viewerState()[0].frame === 3")
    page.mouse.wheel(0, -100)
    page.wait_for_function("() => window.viewerState()[0].frame === 2")
    page.keyboard.down("Control")
    page.mouse.wheel(0, -100)
    page.keyboard.up("Control")
    page.wait_for_function("() => window.viewerState()[0].zoom > 1")
    assert page.evaluate("() => window.viewerState()[0].frame") == 2  # zooming kept the frame

    centre, width = page.locator("#wl-center"), page.locator("#wl-width")
    expect(centre).to_have_value("128")  # as sent: the whole 8-bit range
    expect(width).to_have_value(re.compile("^25[56]$"))  # 8 bits: windowed (256) or filtered
    centre.fill("90")
    width.fill("60")
    width.press("Enter")
    shown = page.evaluate("() => window.viewerState()[0].window")
    assert shown["center"] == pytest.approx(90, abs=0.01)
    assert shown["width"] == pytest.approx(60, abs=0.01)
    page.select_option("#preset", "1,1")
    expect(centre).to_have_value("128")

    page.select_option("#tool", "length")
    box = canvas.bounding_box()
    assert box is not None
    for x in (0.4, 0.6):
        canvas.click(position={"x": box["width"] * x, "y": box["height"] * 0.5})
    label = page.locator("#measurements li input.label").first
    label.fill("PDA, pulmonary end")
    label.press("Tab")
    assert page.evaluate("() => window.measureApi.measurements()[0].label") == "PDA, pulmonary end"


def test_the_window_presets_are_the_shown_images_modalitys(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    from dicomnode.ops import worked

    log_in(page)
    shown = (
        "() => [...document.querySelectorAll('#preset option')]"
        ".filter((o) => !o.hidden).map((o) => o.textContent)"
    )
    show_study(page, web_node, xa_instance(PATIENTS[1], frames=4, rows=32, cols=32))
    assert page.evaluate(shown) == ["As sent", "Contrast (angio)", "Dense vessels", "Soft"]
    page.select_option("#preset", "0.8,2.2")
    assert page.evaluate("() => window.viewerState()[0].contrast") == pytest.approx(2.2)
    show_study(page, web_node, worked.asd()[0])  # an echo plane
    assert page.evaluate(shown) == [
        "As sent",
        "Echo: brighter",
        "Echo: more contrast",
        "Echo: darker blood pool",
    ]
    expect(page.locator("#preset")).to_have_value("1,1")  # the angio preset is not kept


def test_the_magnifier_shows_the_pixels_under_the_pointer_larger(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    import numpy as np
    from pydicom.uid import ExplicitVRLittleEndian

    ds = xa_instance(
        PATIENTS[2], frames=1, rows=64, cols=64, transfer_syntax=ExplicitVRLittleEndian
    )
    image = np.zeros((64, 64), dtype=np.uint8)
    image[31:33, 31:33] = 255  # a white speck of 2 × 2 pixels at the centre
    ds.PixelData = image.tobytes()
    log_in(page)
    box = show_study(page, web_node, ds)
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def bright() -> int:
        shot = page.locator(".viewport canvas").first.screenshot()
        from io import BytesIO

        from PIL import Image

        pixels = np.asarray(Image.open(BytesIO(shot)).convert("RGB")).min(
            axis=2
        )  # white, not the ring's yellow
        row = pixels[:, pixels.shape[1] // 2 - 40 : pixels.shape[1] // 2 + 40].max(axis=1)
        return int((row > 128).sum())  # how tall the speck is, in screen pixels

    plain = bright()
    page.keyboard.press("m")
    page.mouse.move(*centre)
    page.wait_for_function("() => window.viewerState()[0].lens !== null")
    magnified = bright()
    # Three times as tall as the speck's 2 pixels drawn, pixel for pixel.
    scale = page.evaluate(
        "() => window.viewerApi.geometry(window.viewerApi.active()).scale * window.devicePixelRatio"
    )
    # (a screen pixel or two of edge either side, more at a pixel ratio of 2)
    assert 2 * scale * 3 - 3 <= magnified <= 2 * scale * 3 + 24, (plain, magnified, scale)
    assert magnified > 2 * plain
    page.keyboard.press("m")
    page.wait_for_function("() => window.viewerState()[0].lens === null")


def test_space_plays_after_a_checkbox_is_clicked_by_its_label(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    log_in(page)
    show_study(page, web_node, xa_instance(PATIENTS[1], frames=6, rows=32, cols=32))
    page.evaluate("() => window.viewerApi.show(window.viewerState()[0].uid, 0)")  # stopped
    page.locator("label", has_text="Loop").click()  # the word, as most people click it
    assert page.is_checked("#loop") is False
    page.keyboard.press(" ")
    page.wait_for_function("() => window.viewerState()[0].playing")
    assert page.is_checked("#loop") is False  # the space played; it did not tick the box back
