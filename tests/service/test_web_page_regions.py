"""The page's regions and match maps in a real headless browser (Debian's chromium driven
by Playwright), as a person uses them: an upload of two scenes side by side, a box dragged
over its left half searches by that half (its scene comes first), a hit's "Where does it
match?" lays its match map over it, "Whole image" goes back, a region typed in pixels
searches by the right half, and Back brings each search again, the box from the URL."""

from __future__ import annotations

from typing import Any

import pytest
from composites import Composite, composite
from pages import IDLE, drag_across, grid_ids, opened_page
from servers import CHROMIUM, LiveServer, shot

from model.archive import Archive

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)
FIRST_IS = (
    "id => (document.querySelector('#results .card') || {dataset: {}}).dataset.sceneId === id"
)


@pytest.fixture(scope="module")
def pair(subset: Archive, tmp_path_factory: pytest.TempPathFactory) -> Composite:
    return composite(subset, tmp_path_factory.mktemp("composite") / "pair.png")


def first_hit_becomes(page: Any, scene: str) -> None:
    page.wait_for_function(FIRST_IS, arg=scene, timeout=20_000)
    page.wait_for_function(IDLE)


def test_a_box_dragged_on_the_query_searches_by_it_and_a_hit_shows_where_it_matches(
    page_server: LiveServer, browser: Any, pair: Composite, axe_script: str
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser)
    page.set_input_files("#file", str(pair.path))
    expect(page.locator("#results .card")).to_have_count(20)
    page.wait_for_function(IDLE)
    expect(page.locator("#preview-image")).to_be_visible()
    whole = grid_ids(page)

    # a box from just beyond the top-left corner to beyond the middle of the bottom edge:
    # the left half, to the pixel
    drag_across(page, "#preview-image", (-0.01, -0.01), (0.5, 1.05))
    x0, y0, x1, y1 = 0, 0, pair.width, pair.height
    expect(page.locator("#region-input")).to_have_value(f"{x0},{y0},{x1},{y1}")
    first_hit_becomes(page, pair.left_id)
    assert grid_ids(page) != whole
    expect(page.locator("#region-box")).to_be_visible()
    assert f"region={x0}%2C{y0}%2C{x1}%2C{y1}" in page.url
    left = grid_ids(page)
    shot(page, "desktop-region-1-box")

    # the first hit in the viewer: where it matches, laid over it on demand
    page.locator("#results .card").first.click()
    expect(page.locator("#viewer-match")).to_be_visible()
    expect(page.locator("#viewer-query-caption")).to_contain_text(f"the box {x0},{y0},{x1},{y1}")
    expect(page.locator("#viewer-region-box")).to_be_visible()  # the region boxed on the query
    box = page.locator("#viewer-region-box").bounding_box()
    query = page.locator("#viewer-query").bounding_box()
    # the left half of the picture, give or take the box's 2 px border
    assert abs(box["width"] - query["width"] / 2) <= 6 and abs(box["x"] - query["x"]) <= 4
    expect(page.locator("#match-overlay")).to_be_hidden()
    page.click("#viewer-match")
    expect(page.locator("#match-overlay .match-cell")).to_have_count(16)
    expect(page.locator("#match-overlay")).to_be_visible()
    expect(page.locator("#match-note")).to_contain_text("Best at row")
    overlay = page.locator("#match-overlay").bounding_box()
    hit = page.locator("#viewer-hit").bounding_box()
    assert overlay["width"] > 0.5 * hit["width"] and overlay["height"] > 0.5 * hit["height"]
    shot(page, "desktop-region-2-match-map")
    page.add_script_tag(content=axe_script)
    found = page.evaluate("async () => (await axe.run(document)).violations")
    assert not [v["id"] for v in found if v["impact"] in ("serious", "critical")]
    page.click("#viewer-match")  # toggled off
    expect(page.locator("#match-overlay")).to_be_hidden()
    page.click("#viewer-close")

    # back to the whole image, then the right half typed in pixels (the keyboard's way)
    page.click("#region-clear")
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#results .card')]"
        ".map(c => c.dataset.sceneId)) === JSON.stringify(ids)", arg=whole, timeout=20_000,
    )  # fmt: skip
    assert "region=" not in page.url
    expect(page.locator("#region-box")).to_be_hidden()
    page.fill("#region-input", f"{pair.width},0,{2 * pair.width},{pair.height}")
    page.press("#region-input", "Enter")
    first_hit_becomes(page, pair.right_id)

    # Back: the whole image again, then the left half's search, its box drawn from the URL
    page.go_back()
    first_hit_becomes(page, whole[0])
    expect(page.locator("#region-box")).to_be_hidden()
    page.go_back()
    first_hit_becomes(page, pair.left_id)
    assert grid_ids(page) == left
    expect(page.locator("#region-input")).to_have_value(f"{x0},{y0},{x1},{y1}")
    expect(page.locator("#region-box")).to_be_visible()
    page.close()


def test_a_wrong_region_says_what_is_wrong(
    page_server: LiveServer, browser: Any, pair: Composite
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser)
    page.set_input_files("#file", str(pair.path))
    expect(page.locator("#results .card")).to_have_count(20)
    page.fill("#region-input", f"0,0,{2 * pair.width + 40},{pair.height}")
    page.press("#region-input", "Enter")
    expect(page.locator("#message")).to_contain_text(
        f"outside the {2 * pair.width} x {pair.height} px image"
    )
    page.close()
