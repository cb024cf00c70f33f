"""docs/worked-examples.md followed in the browser, clicking where the page
says, at two window sizes and pixel ratios: a rim's end is often another
line's end, and a click there must start a new line rather than pick up the
old one (an outside cardiologist's review found the perimembranous VSD's
aortic distance measured as the RV face, 4.2 mm for 3.0). Each length the
list shows is the page's."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from dicomnode.node import Node
from dicomnode.ops import worked
from tests.browser_sizes import page  # noqa: F401 (fixture)
from tests.conftest import incoming
from tests.test_browser import log_in, on_screen, web_node  # noqa: F401 (fixture)
from tests.test_worked_examples import sections, steps

pytestmark = [pytest.mark.slow, pytest.mark.peers]


@pytest.mark.parametrize("defect", ["secundum ASD", "perimembranous VSD", "muscular VSD"])
def test_the_echo_examples_clicked_as_the_page_says(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
    defect: str,
) -> None:
    for ds in worked.EXAMPLES[defect]():
        done = web_node.ingestor.ingest(incoming(ds))
        assert done.status == 0, done
    log_in(page)
    page.goto(f"{page.base}/studies/{done.dataset.StudyInstanceUID}")  # type: ignore[attr-defined]
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].loaded")
    items = page.locator("#measurements li")
    measured = 0
    for step in steps(sections()[defect]):
        if step.tool != "length":
            continue
        page.locator("#series .thumb", has_text=step.image).first.click()
        page.wait_for_function(
            "() => window.viewerState()[0].loaded && !window.viewerState()[0].playing"
        )
        page.select_option("#tool", "length")
        box = page.locator(".viewport canvas").first.bounding_box()
        assert box is not None
        for x, y in step.points:
            page.mouse.click(*on_screen(box, (worked.WIDTH, worked.HEIGHT), (x, y)))
        measured += 1
        expect(items).to_have_count(measured)
        text = items.nth(measured - 1).inner_text()
        shown = re.search(r"length ([\d.]+) mm", text)
        assert shown and f"{shown[1]} mm" == step.value, (step, text)
    assert measured >= 4
