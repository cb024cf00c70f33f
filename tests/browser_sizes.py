"""The measuring browser tests' page: logged out, at two window sizes and
device pixel ratios (tests/test_browser.py's `sized_page`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from dicomnode.node import Node
from tests.test_browser import SIZE_IDS, SIZES, sized_page


@pytest.fixture(params=SIZES, ids=SIZE_IDS)
def page(web_node: Node, request: pytest.FixtureRequest) -> Iterator[Page]:
    with sized_page(web_node, *request.param) as opened:
        yield opened
