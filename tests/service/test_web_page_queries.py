"""The web page's queries in a real headless browser (Debian's chromium driven by
Playwright): a search by an upload kept in the history, what a label ranking's scores say,
where the focus goes after a search by a scene, and a phrase's reading in the filters."""

from __future__ import annotations

from typing import Any

import pytest
from pages import IDLE, api_neighbours, grid_ids, opened_page, searched_page, shows
from pages import typical_of_grass_and_trees as grass_and_trees
from servers import CHROMIUM, LiveServer, search_ok

from model.archive import Archive

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)
FOCUSED = "id => document.activeElement && document.activeElement.dataset.sceneId === id"


def test_a_search_by_upload_comes_back_with_back_and_reload(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    scene = subset.scenes[30]
    page = opened_page(page_server, browser)
    page.set_input_files("#file", str(scene.path))
    expect(page.locator("#results .card")).to_have_count(20)
    page.wait_for_function(IDLE)
    assert "upload=" in page.url  # the search is a place in the history
    uploaded = grid_ids(page)

    # a search by one of its results, then Back: the upload's results again, not a blank page
    hit = uploaded[3]
    page.locator(f"#results .card[data-scene-id='{hit}']").click()
    page.click("#viewer-search")
    shows(page, api_neighbours(page_server, hit))
    page.go_back()
    expect(page.locator("#preview-caption")).to_have_text(scene.path.name)
    shows(page, uploaded)
    expect(page.locator("#labels li")).to_have_count(17)  # its predicted labels too

    # reloaded, the page searches by the same image
    page.reload()
    expect(page.locator("#preview-caption")).to_have_text(scene.path.name)
    shows(page, uploaded)

    # the image stays in the browser that chose it: elsewhere the link says so
    other = browser.new_page()
    other.goto(page.url)
    expect(other.locator("#message")).to_contain_text("choose it again")
    expect(other.locator("#results .card")).to_have_count(0)
    other.close()
    page.close()


def test_a_label_ranking_shows_how_likely_each_scene_carries_the_labels(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    page = grass_and_trees(page_server, browser)
    api = search_ok(page_server, labels_all=["grass", "trees"], k=20)
    assert api["score_kind"] == "label_match"  # the classifier's probability, not a cosine

    def likely(score: float) -> str:
        percent = f"{score * 100:.2f}"
        return f"label match {'> 99.99' if percent == '100.00' and score < 1 else percent}%"

    shown = page.locator("#results .card .score").all_inner_texts()
    assert shown == [likely(hit["score"]) for hit in api["hits"]]
    page.close()

    # a search by a scene still shows its similarity
    page, query = searched_page(page_server, browser, subset, 9)
    scores = search_ok(page_server, scene_id=query, k=20)["hits"]
    assert page.locator("#results .card .score").all_inner_texts() == [
        f"score {hit['score']:.3f}" for hit in scores
    ]
    page.close()


def test_searching_by_a_scene_moves_the_focus_to_its_results(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page, _ = searched_page(page_server, browser, subset, 14)
    target = grid_ids(page)[4]
    page.locator(f"#results .card[data-scene-id='{target}']").click()
    page.focus("#viewer-search")
    page.keyboard.press("Enter")
    first = api_neighbours(page_server, target)[0]
    page.wait_for_function(FOCUSED, arg=first, timeout=10_000)
    page.keyboard.press("ArrowRight")  # the keyboard carries on from there
    assert page.evaluate("document.activeElement.dataset.sceneId") == grid_ids(page)[1]

    # from the archive browser too
    page.click("#browse")
    expect(page.locator("#archive .card")).to_have_count(24)
    chosen = grid_ids(page, "#archive")[2]
    page.locator(f"#archive .card[data-scene-id='{chosen}']").click()
    page.click("#viewer-search")
    page.wait_for_function(FOCUSED, arg=api_neighbours(page_server, chosen)[0], timeout=10_000)
    box = page.locator("#results .card").first.bounding_box()
    assert box is not None and box["y"] >= 0  # in view
    assert box["y"] + box["height"] <= page.viewport_size["height"]
    page.close()


def test_the_labels_a_phrase_was_read_as_are_ticked_in_the_filters(
    page_server: LiveServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser)
    page.fill("#text", "ships and water, no cars")
    page.keyboard.press("Enter")
    expect(page.locator("#understood")).to_have_text("Understood: ship; water; not cars")
    page.wait_for_function(IDLE)
    ticked = "boxes => boxes.filter(b => b.checked).map(b => b.value)"
    assert page.eval_on_selector_all("#filters input", ticked) == ["ship", "water"]
    assert page.eval_on_selector_all("#filters-none input", ticked) == ["cars"]
    read = search_ok(page_server, text="ships and water, no cars", k=20)
    assert grid_ids(page) == [hit["id"] for hit in read["hits"]]

    # unticking one searches by the filters left: the phrase no longer says what is searched
    page.locator("#filters input[value='water']").uncheck()
    left = search_ok(page_server, labels_all=["ship"], labels_none=["cars"], k=20)
    shows(page, [hit["id"] for hit in left["hits"]])
    expect(page.locator("#results-title")).to_have_text("Scenes most typical of ship")
    expect(page.locator("#understood")).to_be_hidden()
    assert "text=" not in page.url and "without=cars" in page.url

    # a new phrase replaces the old one's labels, it does not add to them
    page.fill("#text", "grass and trees")
    page.keyboard.press("Enter")
    expect(page.locator("#understood")).to_have_text("Understood: grass; trees")
    page.wait_for_function(IDLE)
    assert page.eval_on_selector_all("#filters input", ticked) == ["grass", "trees"]
    assert page.eval_on_selector_all("#filters-none input", ticked) == []
    page.close()


# Holds the answers to the requests whose path ends with a held name until the test releases
# it with window.release(name); window.sent[name] counts the requests sent.
HOLD = """names => {
  const original = window.fetch;
  window.sent = {};
  const gates = {};
  const gate = (name) => gates[name] || (gates[name] = (() => {
    let open;
    const opened = new Promise((resolve) => { open = resolve; });
    return { opened, open };
  })());
  window.release = (name) => gate(name).open();
  window.fetch = async (...args) => {
    const path = new URL(String(args[0]), location.href).pathname;
    const name = names.find((n) => path.endsWith(n));
    const response = await original(...args);
    if (name) {
      window.sent[name] = (window.sent[name] || 0) + 1;
      await gate(name).opened;
    }
    return response;
  };
}"""


def test_an_upload_right_after_the_page_opens_is_not_undone(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    """The page reads its URL once its filters have loaded; a person who chose an image
    before that keeps their search (CI once saw it wiped: no cards, or hidden ones)."""
    from playwright.sync_api import expect

    page = browser.new_page()
    page.add_init_script(f"({HOLD})({['/labels', '/search']!r})")
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.set_input_files("#file", str(subset.scenes[12].path))
    page.wait_for_function("window.sent['/search'] === 1")  # the search is out
    page.evaluate("window.release('/labels')")
    expect(page.locator("#filters input")).to_have_count(17)  # the URL has been read
    page.evaluate("window.release('/search')")
    expect(page.locator("#results .card")).to_have_count(20)
    expect(page.locator("#results .card").first).to_be_visible()
    expect(page.locator("#preview")).to_be_visible()
    page.wait_for_function("new URLSearchParams(location.search).has('upload')")
    page.close()
