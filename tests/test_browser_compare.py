"""Two studies of one child side by side, in step: the earlier study's run
opens in the second viewport from the compare list, and as the cardiologist
steps the first, the second shows the same point of the heart's cycle
(within half a frame) by the ECGs of both, though their heart rates and
frame rates differ; without an ECG in one, the same fraction of the run.
The compared run cannot be measured here (its plan is its own study's)."""

from __future__ import annotations

from itertools import pairwise

import pytest
from playwright.sync_api import Page, expect
from pydicom.uid import generate_uid

from dicomnode.node import Node
from tests.browser_sizes import page  # noqa: F401 (fixture)
from tests.compare_fixtures import run
from tests.conftest import incoming
from tests.test_browser import log_in, web_node  # noqa: F401 (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.peers]
# The leader has more whole beats (four) than the follower (two), so the
# follower goes round its own.
NOW = {"fps": 15.0, "frames": 45, "rate": 120.0}
BEFORE = {"fps": 25.0, "frames": 50, "rate": 90.0}


def _fraction(truth: list[float], time: float) -> float:
    """Where ``time`` lies in its true beat (0 at its R-wave); before the
    first and after the last R-wave, in the nearest beat carried on."""
    beats = list(pairwise(truth))
    r0, r1 = next(((a, b) for a, b in beats if time < b), beats[-1])
    return ((time - r0) / (r1 - r0)) % 1


def _state(opened: Page) -> list[dict]:
    return opened.evaluate("() => window.viewerState()")


def test_an_earlier_study_follows_the_cycle_then_the_fraction(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    now_ds, now_truth = run(generate_uid(), "20261120", seed=11, **NOW)  # type: ignore[arg-type]
    before_study = generate_uid()
    before_ds, before_truth = run(before_study, "20250305", seed=12, **BEFORE)  # type: ignore[arg-type]
    plain_ds, _ = run(before_study, "20250305", fps=25, frames=20, rate=None, seed=13)
    for ds in (before_ds, plain_ds):
        assert web_node.ingestor.ingest(incoming(ds, calling_ae="BISHKEK_CATH")).status == 0
    done = web_node.ingestor.ingest(incoming(now_ds, calling_ae="BISHKEK_CATH"))
    assert done.status == 0, done
    log_in(page)
    page.goto(f"{page.base}/studies/{done.dataset.StudyInstanceUID}")  # type: ignore[attr-defined]
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].loaded")

    page.click("#compare summary")
    page.locator("#compare .thumb", has_text="50 fr.").click()
    page.wait_for_function(
        "() => window.viewerState().length === 2 && window.viewerState()[1].frames === 50"
        " && window.viewerState()[1].loaded && window.ecgApi.state(0) && window.ecgApi.state(1)"
    )
    when = page.locator("#compare h4").first.inner_text().split(" · ")[0]  # dates are shifted
    expect(page.locator(".viewport .overlay").nth(1)).to_contain_text(f"study of {when}")
    page.check("#sync")
    page.locator(".viewport canvas").first.click()  # the first leads
    page.evaluate("() => window.viewerApi.show(window.viewerState()[0].uid, 0)")
    page.wait_for_function("() => window.compareApi.mode() === 'cycle'")
    expect(page.locator("#sync-mode")).to_have_text("by the cardiac cycle (ECG)")
    shown = set()
    for frame in range(NOW["frames"]):
        if frame:
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => window.viewerState()[0].frame === {frame}")
        lead, follow = _after_a_frame(page)
        assert lead["frame"] == frame and follow["following"] and not lead["following"]
        leader_at = _fraction(now_truth, frame / NOW["fps"])
        follower_at = _fraction(before_truth, follow["frame"] / BEFORE["fps"])
        beat = min(r1 - r0 for r0, r1 in pairwise(before_truth))
        apart = abs(leader_at - follower_at)
        # The same point of the cycle, within half a follower's frame (and
        # the detected R-waves' couple of milliseconds).
        assert min(apart, 1 - apart) * beat <= 0.5 / BEFORE["fps"] + 0.004, (frame, follow)
        shown.add(follow["frame"])
    assert len(shown) >= 30  # it went round the follower's beats, not stood still

    # The compared run is not measured in this study's plan.
    page.select_option("#tool", "length")
    second = page.locator(".viewport canvas").nth(1)
    second.click(position={"x": 40, "y": 40})
    expect(page.locator("#measure-message")).to_contain_text("another study's")
    expect(page.locator("#measurements li")).to_have_count(0)
    page.select_option("#tool", "none")

    # A run without an ECG in the second viewport, which now leads: the
    # first follows by the fraction of the run.
    page.locator("#compare .thumb", has_text="20 fr.").click()
    page.wait_for_function(
        "() => window.viewerState()[1].frames === 20 && window.viewerState()[1].loaded"
    )
    page.evaluate("() => window.viewerApi.show(window.viewerState()[1].uid, 0)")
    page.wait_for_function("() => window.compareApi.mode() === 'fraction'")
    expect(page.locator("#sync-mode")).to_contain_text("by the fraction of the run")
    for frame in range(20):
        if frame:
            page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => window.viewerState()[1].frame === {frame}")
        follow, lead = _after_a_frame(page)
        assert lead["frame"] == frame and follow["following"]
        assert follow["frame"] == int((frame + 0.5) * NOW["frames"] / 20)

    page.uncheck("#sync")
    page.wait_for_function("() => window.compareApi.mode() === null")
    assert not any(vp["following"] for vp in _state(page))


def _after_a_frame(opened: Page) -> list[dict]:
    """The viewports once the page has drawn two more frames (the follower
    moves on the animation frame after its leader)."""
    return opened.evaluate(
        "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame("
        "() => done(window.viewerState()))))"
    )
