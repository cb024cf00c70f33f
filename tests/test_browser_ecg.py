"""The ECG strip under an angio run, as a cardiologist steps through it:
the cursor sits at the frame's time, the beat it falls in is named in ms
after its R-wave, at two window sizes and pixel ratios; a run without an
ECG draws no strip."""

from __future__ import annotations

import math

import pytest
from playwright.sync_api import Page, expect

from dicomnode.node import Node
from dicomnode.ops.samples import PATIENTS, xa_instance
from tests.browser_sizes import page, show_study  # noqa: F401 (fixture)
from tests.conftest import incoming
from tests.test_browser import log_in, web_node  # noqa: F401 (fixture)
from tests.test_ecg import carrying

pytestmark = [pytest.mark.slow, pytest.mark.peers]


def _opened(opened: Page, node: Node) -> list[float]:
    """An angio run carrying a 120/min ECG opened, its ECG arrived: its true R times."""
    ds, truth = carrying(rate=120)
    log_in(opened)
    show_study(opened, node, ds, "window.ecgApi && window.ecgApi.state(0)")
    return truth


def test_the_cursor_follows_the_frame_through_the_beat(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    truth = _opened(page, web_node)
    # Stopped on the first frame, as a cardiologist stops a playing run.
    page.evaluate("() => window.viewerApi.show(window.viewerState()[0].uid, 0)")
    first = page.evaluate("() => window.ecgApi.state(0)")
    assert first["lead"] == "Lead II" and first["rate"] == pytest.approx(120, rel=0.05)
    assert first["cursor"] == 0
    for frame in range(1, 12):
        page.keyboard.press("ArrowRight")
        page.wait_for_function(f"() => window.viewerState()[0].frame === {frame}")
        now = page.evaluate("() => window.ecgApi.state(0)")
        assert now["cursor"] == pytest.approx(frame / 15, abs=1e-6)
        before = max(r for r in truth if r <= now["cursor"]) if truth[0] <= now["cursor"] else None
        if before is not None and now["cycle"]:
            assert now["cycle"]["since_r_ms"] == pytest.approx(
                (now["cursor"] - before) * 1000, abs=3
            )

    # Tag this frame end-diastole and measure on it: the measurement keeps it.
    page.click("#tag-ed")
    assert page.evaluate("() => [...window.measureApi.phases().values()]") == ["ED"]
    page.select_option("#tool", "length")
    canvas = page.locator(".viewport canvas").first
    box = canvas.bounding_box()
    assert box is not None
    for x in (0.45, 0.55):  # the tag button scrolled the page: click it where it now is
        canvas.click(position={"x": box["width"] * x, "y": box["height"] * 0.3})
    item = page.locator("#measurements li").first
    expect(item).to_contain_text("frame 12, end-diastole")
    page.uncheck("#ecg-strip")  # hidden, the image's bottom shows again
    assert page.is_checked("#ecg-strip") is False

    plain = web_node.ingestor.ingest(incoming(xa_instance(PATIENTS[2], frames=3, rows=32, cols=32)))
    page.goto(f"{page.base}/studies/{plain.dataset.StudyInstanceUID}")  # type: ignore[attr-defined]
    page.wait_for_function("() => window.viewerState && window.viewerState()[0].frames === 3")
    assert page.evaluate("() => window.ecgApi.state(0)") is None


def test_one_beat_plays_only_the_frames_between_two_r_waves(
    page: Page,  # noqa: F811
    web_node: Node,  # noqa: F811
) -> None:
    truth = _opened(page, web_node)
    page.evaluate("() => window.viewerApi.show(window.viewerState()[0].uid, 12)")  # 0.8 s
    page.check("#one-beat")
    page.wait_for_function("() => window.viewerState()[0].range !== null")
    first, last = page.evaluate("() => window.viewerState()[0].range")
    before = max(r for r in truth if r <= 12 / 15)
    after = min(r for r in truth if r > 12 / 15)
    # The frames that start within the beat (R-waves detected within 2 ms).
    assert first == math.ceil(before * 15 - 0.03) and last == math.ceil(after * 15 - 0.03) - 1
    # Played, it goes round that beat and nothing else.
    page.evaluate(
        "() => { window.seen = []; const vp = window.viewerApi.viewports[0]; vp.playing = true;"
        " const look = () => { window.seen.push(window.viewerState()[0].frame);"
        " if (window.seen.length < 2000) requestAnimationFrame(look); }; look(); }"
    )
    page.wait_for_function(
        "() => window.seen.filter((f, i) => i && f < window.seen[i - 1]).length >= 2"
    )
    seen = page.evaluate("() => window.seen")
    assert set(seen) <= set(range(first, last + 1)) and {first, last} <= set(seen)
    page.uncheck("#one-beat")
    page.wait_for_function("() => window.viewerState()[0].range === null")
