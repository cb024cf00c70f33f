"""The research export page in a real browser: what its linkable checkbox sends."""

from __future__ import annotations

import pytest
from werkzeug.security import generate_password_hash

from dicomnode.node import Node
from tests.test_browser import PASSWORD, log_in, page, web_node  # noqa: F401 (fixtures)
from tests.test_jobs import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.peers]


def test_the_linkable_checkbox_is_sent_as_a_boolean(page, web_node: Node) -> None:  # noqa: F811
    jobs = web_node.archive.index.exports
    web_node.archive.index.accounts.add("farrukh", generate_password_hash(PASSWORD), "admin")
    log_in(page, user="farrukh")
    page.goto(page.base + "/exports")
    for tick in (False, True):
        page.set_checked("#cohort input[name=linkable]", tick)
        before = len(jobs.all())
        page.click("#start")
        wait_for(lambda: len(jobs.all()) > before, 30, "the job to be queued")  # noqa: B023
        assert jobs.all()[0]["linkable"] is tick
    assert page.locator("#counts").inner_text() == ""  # no refusal shown
