"""The measuring browser tests' page (logged out, at two window sizes and
device pixel ratios: tests/test_browser.py's `sized_page`), and how they
open an instance's study on it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page
from pydicom.dataset import Dataset

from dicomnode.node import Node
from tests.conftest import incoming
from tests.test_browser import SIZE_IDS, SIZES, sized_page

LOADED = "window.viewerState()[0].loaded"


@pytest.fixture(params=SIZES, ids=SIZE_IDS)
def page(web_node: Node, request: pytest.FixtureRequest) -> Iterator[Page]:
    with sized_page(web_node, *request.param) as opened:
        yield opened


def show_study(page: Page, node: Node, ds: Dataset, ready: str = LOADED) -> Any:
    """``ds`` stored through ``node`` and its study opened (the page logged
    in): the first viewport's box, once ``ready`` holds."""
    stored = node.ingestor.ingest(incoming(ds))
    assert stored.status == 0, stored
    page.goto(f"{page.base}/studies/{stored.dataset.StudyInstanceUID}")  # type: ignore[attr-defined]
    page.wait_for_function(f"() => window.viewerState && {ready}")
    box = page.locator(".viewport canvas").first.bounding_box()
    assert box is not None
    return box
