"""Angiographic diameters in the browser: a line drawn down the duct gives
its narrowest diameter as a length in mm with the run's scale; a catheter
calibration line drawn at a slant snaps to the catheter's edges, at two
window sizes and pixel ratios."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from pydicom.uid import ExplicitVRLittleEndian

from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, xa_instance
from tests.browser_sizes import page, show_study  # noqa: F401 (fixture)
from tests.test_browser import (  # noqa: F401 (fixture)
    log_in,
    on_screen,
    web_node,
)
from tests.test_vessel import NARROWEST, SIZE, angiogram

pytestmark = [pytest.mark.slow, pytest.mark.peers]


def _open(page: Page, node: Node, catheter: bool) -> dict:  # noqa: F811
    ds = xa_instance(
        PATIENTS[2], frames=1, rows=SIZE, cols=SIZE, transfer_syntax=ExplicitVRLittleEndian
    )
    ds.PixelData = np.clip(angiogram(2, catheter=catheter), 0, 255).astype(np.uint8).tobytes()
    return show_study(page, node, ds)


def test_the_narrowest_of_the_duct_and_a_snapped_catheter(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    log_in(page)
    box = _open(page, web_node, catheter=False)
    page.select_option("#tool", "profile")
    page.mouse.click(*on_screen(box, (SIZE, SIZE), (40, 127)))
    page.mouse.click(*on_screen(box, (SIZE, SIZE), (220, 129.5)))
    items = page.locator("#measurements li")
    expect(items).to_have_count(1)
    text = items.first.inner_text()
    mm = float(re.search(r"length ([\d.]+) mm", text)[1])  # type: ignore[index]
    mm_per_px = 0.154 * 750 / 1100
    assert mm == pytest.approx(NARROWEST * mm_per_px, abs=0.5 * mm_per_px + 0.05), text
    expect(page.locator("#measure-message")).to_contain_text("Narrowest of")

    box = _open(page, web_node, catheter=True)
    page.select_option("#tool", "calibrate")
    normal = math.radians(135 + 25)  # 25 degrees off the catheter's normal
    for sign in (-1, 1):
        page.mouse.click(
            *on_screen(
                box,
                (SIZE, SIZE),
                (120 + sign * 14 * math.cos(normal), 100 + sign * 14 * math.sin(normal)),
            )
        )
    expect(page.locator("#measure-message")).to_contain_text("Snapped to the catheter")
    (calibration,) = page.evaluate("() => window.measureApi.calibrations()")
    assert math.dist(*calibration["points"]) == pytest.approx(9.0, abs=0.5)
