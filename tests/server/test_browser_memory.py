"""The memory timeline and a job's memory profile in a real browser (Debian Chromium through Playwright)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from steadyframe.testing.serve import CHROMIUM, CHROMIUM_ARGS, TRACE_POINTS_JS

if TYPE_CHECKING:
    from conftest import LiveServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

JOB_MS = 60_000



@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: run `make system-test-deps` (Debian package chromium)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, live_server: LiveServer) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    opened = context.new_page()
    opened.goto(f"{live_server.url}/ui/")
    expect(opened.locator("#generate-t2v")).to_be_visible(timeout=60_000)
    yield opened
    context.close()


def _points(page: Page, prefix: str) -> list[list[float]]:
    return page.evaluate(TRACE_POINTS_JS, prefix)


def _hover_text(page: Page, prefix: str, wanted: str, timeout_ms: int = 45_000) -> str:
    """Hover the newest marker of ``prefix`` until its label holds ``wanted`` (a redraw drops a label)."""
    waited = 0
    text = ""
    while waited < timeout_ms:
        page.locator("#memory-timeline").scroll_into_view_if_needed()
        points = _points(page, prefix)
        if points:
            page.mouse.move(*points[-1], steps=4)  # a few mouse events: a loaded page may miss one
            page.wait_for_timeout(600)
            text = page.locator("#memory-timeline .hoverlayer").text_content() or ""
            if wanted in text:
                return text
            page.mouse.move(5, 5)
        page.wait_for_timeout(300)
        waited += 900
    raise AssertionError(f"hovering {prefix!r} never showed {wanted!r}; last label: {text!r}")


def test_system_tab_charts_memory_with_job_and_failure_markers_linking_to_the_job(
    page: Page, live_server: LiveServer
) -> None:
    live_server.wait_for(live_server.submit(prompt="a red kite over hills", steps=2))
    decode_error = {"stage": "decode", "kind": "error"}
    # Two failures back to back: the first one's label must not lie over the second one's marker.
    live_server.wait_for(live_server.submit(prompt="fails first", steps=2, fault=decode_error))
    failed = live_server.wait_for(live_server.submit(prompt="fails while decoding", steps=2, fault=decode_error))
    error = failed["error"]
    page.get_by_role("tab", name="System").click()
    page.wait_for_function(f"({TRACE_POINTS_JS})('failure').length > 1", timeout=JOB_MS)
    page.locator("#memory-timeline").scroll_into_view_if_needed()
    covered = page.evaluate(
        f"() => ({TRACE_POINTS_JS})('failure')"
        ".filter(([x, y]) => document.elementFromPoint(x, y)?.closest('#memory-timeline .annotation'))"
    )
    assert covered == [], f"failure labels cover the markers at {covered}: those cannot be hovered"
    assert len(_points(page, "job started")) >= 2 and _points(page, "job succeeded") and _points(page, "stage")
    assert page.locator("#memory-timeline .scatterlayer .trace .js-line").count() >= 2  # server and worker lines
    legend = page.locator("#memory-timeline .legend").text_content() or ""
    assert "server RSS" in legend and "worker w0 RSS" in legend and "stage peak" in legend

    label = _hover_text(page, "failure", error["error_id"])
    assert error["kind"] in label and failed["id"] in label

    link = page.locator(f"#memory-failures a[href*='job={failed['id']}']")
    expect(link).to_be_visible()
    chart_links = page.evaluate(
        "() => [...document.querySelectorAll('#memory-timeline .annotation a')]"
        ".map(a => a.getAttribute('href') || a.getAttribute('xlink:href'))"
    )
    assert f"?job={failed['id']}" in chart_links, chart_links  # the chart's own failure label links there too
    with page.context.expect_page() as opened:  # Gradio opens Markdown links in a new tab
        link.click()
    job_page = opened.value
    job_page.wait_for_url(f"**/ui/?job={failed['id']}", timeout=30_000)
    panel = job_page.locator("#job-status")
    expect(panel).to_contain_text(error["error_id"], timeout=JOB_MS)
    expect(panel.locator(".sf-memory-table")).to_contain_text("decode")


def test_a_job_panel_shows_its_peak_memory_per_stage_and_the_level_after_cleanup(page: Page, live_server: LiveServer) -> None:
    page.locator("#prompt textarea").fill("a tram in the snow")
    page.locator("#generate-t2v").click()
    panel = page.locator("#job-status")
    expect(panel).to_contain_text("succeeded", timeout=JOB_MS)
    job_id = panel.locator(".sf-job-id").inner_text().strip()
    profile = live_server.wait_for(job_id)["result"]["memory_profile"]
    table = panel.locator(".sf-memory-table")
    expect(table).to_be_visible()
    rows = table.locator("tr")
    expect(rows).to_have_count(len(profile["stages"]) + 1)  # a header, then a row per stage run
    for index, stage in enumerate(profile["stages"], start=1):
        row = rows.nth(index)
        expect(row).to_contain_text(stage["stage"])
        expect(row.locator(".sf-peak-rss")).to_have_text(f"{stage['peak_rss_mb']:,.0f} MB")
    after = profile["after_cleanup"]
    expect(panel.locator(".sf-after-cleanup")).to_contain_text(f"{after['rss_mb']:,.0f} MB")
    expect(panel.locator(".sf-after-cleanup")).to_contain_text(f"{after['baseline_rss_mb']:,.0f} MB")
