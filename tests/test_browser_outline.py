"""The traced area and the long and short axis in the browser, as a
cardiologist draws them over a defect: an outline dragged freehand round a
circle and closed by coming back to its start, one clicked corner by
corner and closed with Enter, two crossing axes clicked; a figure-eight is
refused saying why and adds nothing. At two window sizes and pixel ratios,
the values within 2 % of the truth."""

from __future__ import annotations

import math
import re

import pytest
from playwright.sync_api import Page, expect

from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, xa_instance
from tests.browser_sizes import page, show_study  # noqa: F401 (fixture)
from tests.test_browser import log_in, on_screen, web_node  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.peers]
SIZE, SPACING = 128, 0.2


def _value(text: str) -> float:
    return float(re.search(r"([\d.]+) mm", text)[1])  # type: ignore[index]


def test_outlines_and_axes_drawn_as_a_person_draws_them(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    log_in(page)
    ds = xa_instance(PATIENTS[3], frames=1, rows=SIZE, cols=SIZE)
    ds.PixelSpacing = [SPACING, SPACING]
    box = show_study(page, web_node, ds)
    at = lambda x, y: on_screen(box, (SIZE, SIZE), (x, y))  # noqa: E731
    items = page.locator("#measurements li")

    # Freehand: pressed, dragged round a circle of 40 px, back to the start.
    page.select_option("#tool", "area")
    ring = [
        (64 + 40 * math.cos(a / 90 * 2 * math.pi), 64 + 40 * math.sin(a / 90 * 2 * math.pi))
        for a in range(91)
    ]
    page.mouse.move(*at(*ring[0]))
    page.mouse.down()
    for x, y in ring[1:]:
        page.mouse.move(*at(x, y), steps=2)
    expect(items).to_have_count(1)  # closed on coming back, before the button is let go
    page.mouse.up()
    truth = math.pi * (40 * SPACING) ** 2
    assert _value(items.nth(0).inner_text()) == pytest.approx(truth, rel=0.02)
    assert "mm²" in items.nth(0).inner_text()

    # Clicked corner by corner, closed with Enter.
    for x, y in ((20, 20), (60, 20), (60, 50), (20, 50)):
        page.mouse.click(*at(x, y))
    page.keyboard.press("Enter")
    expect(items).to_have_count(2)
    assert _value(items.nth(1).inner_text()) == pytest.approx(40 * 30 * SPACING**2, rel=0.02)

    # A figure-eight: refused, saying why; nothing added.
    for x, y in ((75, 75), (115, 115), (115, 75), (75, 115)):
        page.mouse.click(*at(x, y))
    page.keyboard.press("Enter")
    expect(page.locator("#measure-message")).to_contain_text("crosses itself")
    expect(items).to_have_count(2)

    # The long and short axis.
    page.select_option("#tool", "bidirectional")
    for x, y in ((72, 112), (122, 112), (97, 97), (97, 127)):  # clear of the handles
        page.mouse.click(*at(x, y))
    expect(items).to_have_count(3)
    text = items.nth(2).inner_text()
    found = re.search(r"([\d.]+) × ([\d.]+) mm", text)
    assert found, text
    assert float(found[1]) == pytest.approx(50 * SPACING, abs=0.1)
    assert float(found[2]) == pytest.approx(30 * SPACING, abs=0.1)


def test_a_length_gets_its_z_score_once_its_structure_is_named(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    from dicomnode.ops import worked

    log_in(page)
    box = show_study(page, web_node, worked.asd()[0])  # 18 kg, 108 cm: BSA 0.73 m²
    page.select_option("#tool", "length")
    for x in (120, 520):  # 40.0 mm
        page.mouse.click(*on_screen(box, (640, 480), (x, 240)))
    item = page.locator("#measurements li").first
    expect(item).to_contain_text("40.0 mm")
    item.locator("select.structure").select_option("LVIDd")
    expect(item).to_contain_text(
        "z 1.1 for the LV end-diastolic dimension (mean 35.9 mm at BSA 0.73 m²)"
    )
    item.locator("select.structure").select_option("")
    expect(item).not_to_contain_text("z 1.1")
