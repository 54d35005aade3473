"""Helpers of the web page tests (test_web_page*.py): the viewports, the page opened or
searched as a person does in Debian's chromium (Playwright), and what its grids show."""

from __future__ import annotations

from typing import Any

import httpx
from servers import LiveServer

from model.archive import Archive, scene_id

DESKTOP = {"width": 1280, "height": 1000}
PHONE = {"width": 390, "height": 844}
IDLE = "document.querySelector('#results').getAttribute('aria-busy') === 'false'"
NO_SEARCH = "No search yet: tick labels (scenes with all of them) or give a query"


def grid_ids(page: Any, grid: str = "#results") -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        f"{grid} .card", "cards => cards.map(c => c.dataset.sceneId)"
    )
    return ids


def api_neighbours(server: LiveServer, query: str, k: int = 20) -> list[str]:
    body = httpx.post(f"{server.url}/search", json={"scene_id": query, "k": k}).json()
    return [hit["id"] for hit in body["hits"]]


def shows(page: Any, ids: list[str]) -> None:
    """Wait until the results grid shows exactly `ids`, in order, and the page is idle."""
    page.wait_for_function(
        "ids => JSON.stringify([...document.querySelectorAll('#results .card')]"
        ".map(c => c.dataset.sceneId)) === JSON.stringify(ids)",
        arg=ids,
        timeout=20_000,
    )
    page.wait_for_function(IDLE)


def wait_for_images(page: Any) -> None:
    """Wait until the result images in view have loaded (lazy ones below it load on scroll)."""
    page.wait_for_function(
        "[...document.querySelectorAll('#results .card img')]"
        ".every(i => (i.complete && i.naturalWidth > 0)"
        " || i.getBoundingClientRect().top > window.innerHeight)"
    )


def opened_page(server: LiveServer, browser: Any, viewport: dict[str, int] = DESKTOP) -> Any:
    """The page on a desktop viewport (or `viewport`), its label filters drawn."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport=viewport)
    page.goto(server.url)
    expect(page.locator("#filters input")).to_have_count(17)
    return page


def typical_of_grass_and_trees(server: LiveServer, browser: Any) -> Any:
    """The page ranking the scenes most typical of grass and trees (both ticked), idle."""
    from playwright.sync_api import expect

    page = opened_page(server, browser)
    page.locator("#filters input[value='trees']").check()
    page.locator("#filters input[value='grass']").check()
    expect(page.locator("#results-title")).to_have_text("Scenes most typical of grass and trees")
    page.wait_for_function(IDLE)
    return page


def searched_page(
    server: LiveServer, browser: Any, subset: Archive, number: int, params: str = "k=20",
    shown: int = 20,
) -> tuple[Any, str]:  # fmt: skip
    """A desktop page searched by the subset's scene `number` with `params`, its `shown`
    results drawn and the page idle, and the query scene's id."""
    from playwright.sync_api import expect

    query = str(scene_id(subset.scenes[number].name))
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{server.url}/?scene={query}&{params}")
    expect(page.locator("#results .card")).to_have_count(shown)
    page.wait_for_function(IDLE)
    return page, query


Point = tuple[float, float]


def drag_across(page: Any, image: str, start: Point, end: Point) -> None:
    """Drag the mouse over the picture of the <img> `image` (drawn with object-fit: contain)
    from `start` to `end`, each (x, y) a fraction of the picture's width and height (outside
    0..1: beyond its edge), as a person drags a box on it."""
    box = page.locator(image).bounding_box()
    natural = page.eval_on_selector(image, "i => [i.naturalWidth, i.naturalHeight]")
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    width, height = natural[0] * scale, natural[1] * scale
    left = box["x"] + (box["width"] - width) / 2
    top = box["y"] + (box["height"] - height) / 2

    def at(point: Point) -> Point:
        return left + point[0] * width, top + point[1] * height

    page.mouse.move(*at(start))
    page.mouse.down()
    page.mouse.move(*at(end), steps=8)
    page.mouse.up()
