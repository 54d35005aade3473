"""Where the web page puts things, in a real headless browser (Debian's chromium driven by
Playwright): the filters on the first screen beside the results, an upload's error under the
upload control, the scenes given as feedback by their thumbnails, and API documentation
pages that need no other host."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pages import DESKTOP, IDLE, PHONE, grid_ids, opened_page, searched_page
from servers import CHROMIUM, LiveServer

from model.archive import Archive

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)
BROKEN_IMAGES = (
    "[...document.images].filter(i => i.getClientRects().length && i.complete"
    " && i.naturalWidth === 0).map(i => i.id || i.alt)"
)
"""The images shown whose file did not draw (a broken-image icon)."""


def test_the_filters_sit_above_the_results_on_the_first_screen(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser)
    page.set_input_files("#file", str(subset.scenes[44].path))
    expect(page.locator("#results .card")).to_have_count(20)
    page.wait_for_function(IDLE)
    labels = page.locator("#filters").bounding_box()
    results = page.locator("#results").bounding_box()
    assert labels is not None and results is not None
    # every label to tick is in view without scrolling, in the results' column, above them
    assert labels["y"] + labels["height"] <= DESKTOP["height"], labels
    assert (
        labels["x"] < results["x"] + results["width"]
        and results["x"] < labels["x"] + labels["width"]
    )
    assert labels["y"] + labels["height"] <= results["y"]
    # ... and at least a row of results shows on that screen too
    first = page.locator("#results .card").first.bounding_box()
    assert first is not None and first["y"] + first["height"] <= DESKTOP["height"], first

    # ticking one there narrows the results below it
    page.locator("#filters input[value='water']").check()
    page.wait_for_function(
        "[...document.querySelectorAll('#results .card .tags')]"
        ".every(t => t.textContent.split(', ').includes('water'))"
    )
    page.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_an_upload_s_error_shows_under_the_upload_control(
    page_server: LiveServer, browser: Any, subset: Archive, tmp_path: Path, viewport: dict
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser, viewport)
    page.set_input_files("#file", str(subset.scenes[5].path))
    expect(page.locator("#results .card")).to_have_count(20)
    broken = tmp_path / "notes.jpg"
    broken.write_bytes(b"this is not an image")
    page.set_input_files("#file", str(broken))
    expect(page.locator("#message")).to_contain_text("notes.jpg: cannot decode it")
    drop = page.locator("#drop").bounding_box()
    message = page.locator("#message").bounding_box()
    assert drop is not None and message is not None
    gap = message["y"] - (drop["y"] + drop["height"])
    assert 0 <= gap <= 24, f"the message is {gap:.0f} px under the upload control"
    assert message["y"] + message["height"] <= viewport["height"]  # in view, where the drop is
    page.wait_for_function("document.querySelector('#preview-image').complete")
    assert page.evaluate(BROKEN_IMAGES) == []  # no broken-image icon for the file
    page.close()


def test_the_feedback_bar_shows_the_scenes_by_their_thumbnails(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page, _ = searched_page(page_server, browser, subset, 17)
    judged = []
    for button in ("#viewer-more", "#viewer-less"):
        scene = grid_ids(page)[4]
        page.locator(f"#results .card[data-scene-id='{scene}']").click()
        page.click(button)
        page.wait_for_function(IDLE)
        judged.append(scene)
    liked, disliked = judged

    def shown_by_thumbnails(where: Any) -> None:
        bar = where.locator("#feedback")
        expect(bar.locator("img")).to_have_count(2)
        where.wait_for_function(
            "[...document.querySelectorAll('#feedback img')]"
            ".every(i => i.complete && i.naturalWidth > 0)"
        )
        text = bar.inner_text()
        for scene in (liked, disliked):
            info = httpx.get(f"{page_server.url}/scenes/{scene}").json()
            thumbnail = bar.locator(f"img[alt='{info['image']}']")
            assert thumbnail.get_attribute("src") == info["thumbnail_url"]
            assert info["image"] in text and scene not in text  # named, not a raw id

    shown_by_thumbnails(page)
    other = browser.new_page(viewport=DESKTOP)  # the shared URL: ids only, drawn the same
    other.goto(page.url)
    shown_by_thumbnails(other)
    other.close()
    page.close()


@pytest.mark.parametrize(
    ("path", "footer"),
    [("/redoc", "API docs by Redocly"), ("/docs", "/search/density")],  # drawn last
    ids=["redoc", "docs"],
)
def test_the_api_documentation_asks_no_other_host(
    page_server: LiveServer, browser: Any, path: str, footer: str
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    asked: list[str] = []

    def sent(route: Any) -> None:  # what leaves the browser (not what a policy stopped)
        asked.append(route.request.url)
        route.continue_()

    page.route("**/*", sent)
    page.goto(f"{page_server.url}{path}")
    expect(page.get_by_text("/search/density").first).to_be_visible(timeout=30_000)
    expect(page.get_by_text(footer).first).to_be_visible()  # ReDoc's, with its maker's logo
    page.wait_for_load_state("networkidle")
    server = urlsplit(page_server.url).netloc
    assert f"{page_server.url}/openapi.json" in asked
    assert [url for url in asked if urlsplit(url).netloc != server] == []
    page.close()
