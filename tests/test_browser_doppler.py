"""Doppler and M-mode tools in the browser, clicked where a cardiologist
clicks, at two window sizes and pixel ratios, read back as the list shows
them: a velocity and its gradient, an interval and its rate, within 2 % or
one pixel's worth of the phantom's truth; a click in the 2-D picture
measures nothing and says why."""

from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import Page, expect

from dicomnode.node import Node
from tests.browser_sizes import page, show_study  # noqa: F401 (fixture)
from tests.test_browser import log_in, on_screen, web_node  # noqa: F401 (fixture)
from tests.test_doppler import (
    BASELINE,
    CM_S_PER_PX,
    DOPPLER_TOP,
    EJECTION,
    S_PER_PX,
    START,
    TRUE_VTI,
    doppler_phantom,
    envelope,
    spectrum_phantom,
)

pytestmark = [pytest.mark.slow, pytest.mark.peers]
SINGLE = "window.viewerState()[0].frames === 1"
SIZE = (640, 480)


def test_velocity_gradient_and_interval_read_as_the_phantom_says(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    log_in(page)
    box = show_study(page, web_node, doppler_phantom(), SINGLE)
    items = page.locator("#measurements li")

    page.select_option("#tool", "velocity")
    peak_row = DOPPLER_TOP + BASELINE - 50  # 50 pixels above the baseline: 200 cm/s
    page.mouse.click(*on_screen(box, SIZE, (100.5, peak_row)))
    expect(items).to_have_count(1)
    text = items.first.inner_text()
    velocity = float(re.search(r"velocity (-?[\d.]+) m/s", text)[1])  # type: ignore[index]
    gradient = float(re.search(r"· ([\d.]+) mmHg", text)[1])  # type: ignore[index]
    pixel = abs(CM_S_PER_PX) / 100  # m/s
    assert abs(velocity - 2.0) <= 0.02 * 2.0 + pixel, text
    assert abs(gradient - 4 * velocity**2) <= 0.1, text  # the gradient of the velocity read
    assert "PW spectral Doppler region 2 (s, cm/s)" in text

    page.select_option("#tool", "interval")
    page.mouse.click(*on_screen(box, SIZE, (100.5, 320.5)))
    page.mouse.click(*on_screen(box, SIZE, (260.5, 320.5)))  # 160 pixels of 5 ms
    expect(items).to_have_count(2)
    text = items.nth(1).inner_text()
    ms = float(re.search(r"interval ([\d.]+) ms", text)[1])  # type: ignore[index]
    assert abs(ms - 800.0) <= 0.02 * 800 + S_PER_PX * 1000, text
    assert "/min" in text

    page.select_option("#tool", "velocity")
    page.mouse.click(*on_screen(box, SIZE, (100.5, 120.5)))  # the 2-D picture above
    expect(page.locator("#measure-message")).to_contain_text("not a spectral Doppler region")
    expect(items).to_have_count(2)  # nothing added


def test_a_suggested_envelope_and_a_hand_trace_give_the_vti(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    """Two clicks at the start and end of the beat: the envelope comes back
    drawn, its VTI within 2 % of the phantom's; dragging a point of it
    toward the baseline lowers the value (what is kept is what is measured).
    A hand trace of ten clicks ended with Enter reads the same VTI."""
    log_in(page)
    box = show_study(page, web_node, spectrum_phantom(np.random.default_rng(3)), SINGLE)
    items = page.locator("#measurements li")

    def vti(text: str) -> float:
        return float(re.search(r"VTI ([\d.]+) cm", text)[1])  # type: ignore[index]

    page.select_option("#tool", "vti-auto")
    row = DOPPLER_TOP + BASELINE - 10.5
    page.mouse.click(*on_screen(box, SIZE, (START + 0.5, row)))
    page.mouse.click(*on_screen(box, SIZE, (START + EJECTION / S_PER_PX + 0.5, row)))
    expect(items).to_have_count(1)
    text = items.first.inner_text()
    assert vti(text) == pytest.approx(TRUE_VTI, rel=0.02), text
    assert "mmHg" in text and "PW spectral Doppler region 2" in text
    expect(page.locator("#measure-message")).to_contain_text("drag any point")

    # Drag the trace's middle point 20 pixels toward the baseline: less VTI.
    trace = page.evaluate("() => window.measureApi.measurements()[0].points")
    x, y = trace[len(trace) // 2]
    page.mouse.move(*on_screen(box, SIZE, (x, y)))
    page.mouse.down()
    page.mouse.move(*on_screen(box, SIZE, (x, y + 20)), steps=4)
    page.mouse.up()
    expect(items.first).not_to_contain_text(f"VTI {vti(text)} cm")
    assert vti(items.first.inner_text()) < vti(text)

    page.keyboard.press("Delete")  # the corrected one, selected: gone
    expect(items).to_have_count(0)
    page.select_option("#tool", "vti")
    for x, y in list(envelope(step=EJECTION / S_PER_PX / 9)):
        page.mouse.click(*on_screen(box, SIZE, (x, y)))
    page.keyboard.press("Enter")
    expect(items).to_have_count(1)
    assert vti(items.first.inner_text()) == pytest.approx(TRUE_VTI, rel=0.02)
