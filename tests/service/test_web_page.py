"""The web page in a real headless browser (Debian's chromium driven by Playwright), acting
as a person does and checking what they then see.

With GRN_SCREENSHOT_DIR set, the tests save a screenshot of each state there (docs/screenshots
holds the committed ones)."""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path
from typing import Any

import geopandas
import httpx
import numpy as np
import pytest
import tifffile
from pages import (
    DESKTOP,
    IDLE,
    NO_SEARCH,
    PHONE,
    api_neighbours,
    grid_ids,
    opened_page,
    searched_page,
    typical_of_grass_and_trees,
    wait_for_images,
)
from servers import CHROMIUM, LiveServer, archive_groups, search_ok, shot

from model.archive import Archive, scene_id

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)


def test_upload_classifies_and_searches_in_one_request(
    page_server: LiveServer, browser: Any, subset: Archive, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    scene = subset.scenes[30]
    want = httpx.post(
        f"{page_server.url}/classify", files={"file": (scene.path.name, scene.path.read_bytes())}
    ).json()
    page = browser.new_page(viewport=DESKTOP)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url.split('?')[0]}"))
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready: 126 scenes")
    expect(page.locator("#filters input")).to_have_count(17)
    shot(page, "desktop-1-start")

    sent.clear()
    page.set_input_files("#file", str(scene.path))
    expect(page.locator("#labels li")).to_have_count(17)
    shown = page.locator("#labels li.present > span:first-child").all_inner_texts()
    assert sorted(shown) == sorted(want["predicted"])
    cards = page.locator("#results .card")
    expect(cards).to_have_count(20)
    expect(page.locator("#page-info")).to_have_text("1–20 of 20")
    wait_for_images(page)
    assert "score" in cards.first.inner_text()
    api_calls = [r for r in sent if "/search" in r or "/classify" in r]
    assert api_calls == [f"POST {page_server.url}/search"], sent  # one request, not two
    shot(page, "desktop-2-upload")

    # a label filter narrows the results to scenes that carry it
    page.locator("#filters input[value='buildings']").check()
    page.wait_for_function(
        "[...document.querySelectorAll('#results .card .tags')]"
        ".every(t => t.textContent.split(', ').includes('buildings'))"
        " && document.querySelector('#results').getAttribute('aria-busy') === 'false'"
    )
    # any-of labels and a minimum score reach the API too
    page.locator("input[name=match][value=any]").check()
    page.locator("#filters input[value='water']").check()
    page.fill("#min-score", "0.2")
    page.locator("#min-score").dispatch_event("change")
    page.wait_for_function(
        "document.querySelector('#results').getAttribute('aria-busy') === 'false'"
    )
    for text in page.locator("#results .card .tags").all_inner_texts():
        assert {"buildings", "water"} & set(text.split(", "))
    for text in page.locator("#results .card .score").all_inner_texts():
        assert float(text.split()[1]) >= 0.2

    # a broken file gets one clear message, with its name once
    broken = tmp_path / "notes.jpg"
    broken.write_bytes(b"this is not an image")
    page.set_input_files("#file", str(broken))
    expect(page.locator("#message")).to_contain_text("notes.jpg: cannot decode it")
    message = page.locator("#message").inner_text()
    assert message.count("notes.jpg") == 1 and "BytesIO" not in message
    expect(cards).to_have_count(0)  # nothing of the previous query stays
    shot(page, "desktop-6-bad-file")
    page.close()


def test_opening_a_result_and_searching_by_it_shows_its_neighbours(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.set_input_files("#file", str(subset.scenes[3].path))
    cards = page.locator("#results .card")
    expect(cards).to_have_count(20)

    # every id in the grid is a real scene id, digit for digit (63-bit ids as strings)
    real = {str(scene_id(s.name)) for s in subset.scenes}
    ids = grid_ids(page)
    assert set(ids) <= real and any(int(i) > 2**53 for i in ids)

    # the last result (past 2^53 if any is) opens the viewer, then searches by it
    target = next(i for i in reversed(ids) if int(i) > 2**53)
    page.locator(f"#results .card[data-scene-id='{target}']").click()
    expect(page.locator("#viewer")).to_be_visible()
    page.wait_for_function(
        "document.querySelector('#viewer-hit').complete"
        " && document.querySelector('#viewer-hit').naturalWidth >= 256"
    )  # the scene at its full 256 px, not a stretched thumbnail
    expect(page.locator("#viewer-shared")).not_to_be_empty()
    shot(page, "desktop-3-viewer")
    sent.clear()
    page.click("#viewer-search")
    expect(page.locator("#viewer")).to_be_hidden()
    name = next(s.name for s in subset.scenes if str(scene_id(s.name)) == target)
    expect(page.locator("#preview-caption")).to_contain_text(f"archive scene {name}")
    page.wait_for_function(
        "document.querySelector('#results').getAttribute('aria-busy') === 'false'"
    )
    assert grid_ids(page) == api_neighbours(page_server, target)
    assert target not in grid_ids(page)
    posts = [r for r in sent if r.startswith("POST")]
    assert posts == [f"POST {page_server.url}/search"], sent  # no pixels uploaded again
    assert not [r for r in sent if r.endswith("/image")]
    expect(page.locator("#labels li")).to_have_count(17)  # its labels came with the search
    assert f"scene={target}" in page.url
    shot(page, "desktop-4-by-scene")

    # the URL can be shared: opened afresh it shows the same query, filters and page
    page.select_option("#k", "50")
    page.select_option("#limit", "10")
    page.click("#next")
    expect(page.locator("#page-info")).to_have_text("11–20 of 50")
    shared = page.url
    other = browser.new_page(viewport=DESKTOP)
    other.goto(shared)
    expect(other.locator("#page-info")).to_have_text("11–20 of 50")
    expect(other.locator("#preview-caption")).to_contain_text(name)
    assert grid_ids(other) == api_neighbours(page_server, target, 50)[10:20]
    other.close()

    # Back returns to the previous page of the same query
    page.go_back()
    expect(page.locator("#page-info")).to_have_text("1–10 of 50")
    page.close()


def test_the_last_query_wins(page_server: LiveServer, browser: Any, subset: Archive) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.set_input_files("#file", str(subset.scenes[10].path))
    expect(page.locator("#results .card")).to_have_count(20)

    # the first of two searches is answered last: its answer must not replace the second's
    page.evaluate(
        """() => {
          const original = window.fetch;
          window.searches = 0;
          const held = new Promise((release) => { window.answerFirstSearch = release; });
          window.fetch = async (...args) => {
            const first = String(args[0]).includes('/search') && ++window.searches === 1;
            const response = await original(...args);
            if (first) {
              await held;
              const read = response.json.bind(response);
              response.json = async () => {
                const body = await read();
                // a task runs after the page's own handling of the body (promise jobs)
                setTimeout(() => { window.firstSearchHandled = true; });
                return body;
              };
            }
            return response;
          };
        }"""
    )
    page.select_option("#k", "50")
    page.select_option("#limit", "50")  # while the k=50 (limit 20) search is still out
    expect(page.locator("#page-info")).to_have_text("1–50 of 50")
    page.evaluate("window.answerFirstSearch()")
    page.wait_for_function("window.firstSearchHandled === true")
    expect(page.locator("#results .card")).to_have_count(50)
    expect(page.locator("#page-info")).to_have_text("1–50 of 50")
    assert page.evaluate("window.searches") == 2
    page.close()


def test_tiff_upload_archive_browser_and_keyboard(
    page_server: LiveServer, browser: Any, subset: Archive, tmp_path: Path
) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")

    # a 16-bit TIFF: the browser cannot show it, the service renders its preview
    pixels = np.asarray(load_archive_image(subset, 7), dtype=np.uint16) * 257
    tiff = tmp_path / "scene16.tif"
    tifffile.imwrite(tiff, pixels)
    page.set_input_files("#file", str(tiff))
    expect(page.locator("#results .card")).to_have_count(20)
    page.wait_for_function(
        "document.querySelector('#preview-image').complete"
        " && document.querySelector('#preview-image').naturalWidth > 0"
    )

    # keyboard: Tab reaches the file chooser, Enter on the drop zone opens it
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.keyboard.press("Tab")  # "Skip to results" first
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "drop"
    try:
        with page.expect_file_chooser(timeout=10_000) as chooser:
            page.keyboard.press("Enter")
    except PlaywrightTimeoutError:
        # Seen once in a clean-clone CI run on a loaded machine (2026-12-02): the first Enter
        # opened nothing; a person would press it again, so the test does, and says so
        warnings.warn("the first Enter on the drop zone opened no file chooser", stacklevel=1)
        with page.expect_file_chooser(timeout=20_000) as chooser:
            page.keyboard.press("Enter")
    chooser.value.set_files(str(subset.scenes[40].path))
    expect(page.locator("#results .card")).to_have_count(20)
    page.keyboard.press("Tab")
    focused = []
    for _ in range(12):
        focused.append(page.evaluate("document.activeElement.id"))
        page.keyboard.press("Tab")
    assert "file" in focused  # the file input is in the tab order

    # arrow keys walk the results
    page.locator("#results .card").first.focus()
    page.keyboard.press("ArrowRight")
    second = grid_ids(page)[1]
    assert page.evaluate("document.activeElement.dataset.sceneId") == second
    page.keyboard.press("ArrowDown")
    index = page.evaluate(
        "[...document.querySelectorAll('#results .card')].indexOf(document.activeElement)"
    )
    assert index > 1

    # the archive browser: by name, ordered by name, then open a scene and search by it
    page.click("#browse")
    page.fill("#archive-name", "harbor")
    page.wait_for_function(
        "[...document.querySelectorAll('#archive .card .name')].length > 0 &&"
        "[...document.querySelectorAll('#archive .card .name')]"
        ".every(n => n.textContent.includes('harbor'))"
    )
    names = page.locator("#archive .card .name").all_inner_texts()
    assert names == sorted(names) and len(names) == 6
    page.locator("#archive .card").first.click()
    page.click("#viewer-search")
    expect(page.locator("#preview-caption")).to_contain_text(f"archive scene {names[0]}")
    page.close()


def load_archive_image(subset: Archive, index: int) -> np.ndarray:
    from model.imageio import read_image

    return read_image(subset.scenes[index].path)


def test_on_a_phone_the_results_come_first(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    shot(page, "phone-1-start")
    page.set_input_files("#file", str(subset.scenes[50].path))
    expect(page.locator("#results .card")).to_have_count(20)
    wait_for_images(page)
    top = page.locator("#results").bounding_box()["y"]
    assert top < PHONE["height"], f"the results start {top:.0f} px down"
    shot(page, "phone-2-upload")
    page.locator("#results .card").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    shot(page, "phone-3-viewer")
    page.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_no_serious_accessibility_violations(
    page_server: LiveServer, browser: Any, subset: Archive, axe_script: str, viewport: dict
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=viewport)
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.set_input_files("#file", str(subset.scenes[60].path))
    expect(page.locator("#results .card")).to_have_count(20)
    page.click("#browse")
    expect(page.locator("#archive .card")).to_have_count(24)
    page.add_script_tag(content=axe_script)
    found = page.evaluate("async () => (await axe.run(document)).violations")
    serious = [
        (v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
        for v in found
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, serious
    page.locator("#results .card").first.click()
    found = page.evaluate("async () => (await axe.run(document)).violations")
    assert not [v["id"] for v in found if v["impact"] in ("serious", "critical")]
    page.close()


def test_more_and_less_like_a_result(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page, query = searched_page(page_server, browser, subset, 8)
    liked, disliked = grid_ids(page)[1], grid_ids(page)[5]

    page.locator(f"#results .card[data-scene-id='{liked}']").click()
    page.click("#viewer-more")
    page.wait_for_function(IDLE)
    expect(page.locator("#feedback")).to_be_visible()
    page.locator(f"#results .card[data-scene-id='{disliked}']").click()
    page.click("#viewer-less")
    page.wait_for_function(IDLE)
    expect(page.locator("#feedback-text")).to_contain_text("less like")
    api = httpx.post(
        f"{page_server.url}/search",
        json={"scene_id": query, "k": 20, "more_like": [liked], "less_like": [disliked]},
    ).json()
    assert grid_ids(page) == [hit["id"] for hit in api["hits"]]
    assert liked not in grid_ids(page) and disliked not in grid_ids(page)
    assert f"more={liked}" in page.url and f"less={disliked}" in page.url
    shot(page, "desktop-7-feedback")

    # the feedback is part of the shared URL; clearing it gives the plain neighbours back
    other = browser.new_page(viewport=DESKTOP)
    other.goto(page.url)
    expect(other.locator("#results .card")).to_have_count(20)
    other.wait_for_function(IDLE)
    assert grid_ids(other) == grid_ids(page)
    other.click("#feedback-clear")
    other.wait_for_function(IDLE)
    expect(other.locator("#feedback")).to_be_hidden()
    assert grid_ids(other) == api_neighbours(page_server, query)
    other.close()
    page.close()


def test_dates_added_narrow_the_results_and_travel_in_the_url(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    old, middle, rest = archive_groups(subset)
    page, query = searched_page(page_server, browser, subset, 8)
    unfiltered = grid_ids(page)
    assert {int(i) for i in unfiltered} - old  # newer scenes among the neighbours

    # only the scenes added before 2021: the grid shows the oldest third's nearest
    page.fill("#added-before", "2021-01-01")
    page.locator("#added-before").dispatch_event("change")
    page.wait_for_function(IDLE)
    shown = grid_ids(page)
    assert len(shown) == 20 and {int(i) for i in shown} <= old and shown != unfiltered
    api = httpx.post(
        f"{page_server.url}/search",
        json={"scene_id": query, "k": 20, "limit": 20, "added_before": "2021-01-01"},
    ).json()
    assert shown == [hit["id"] for hit in api["hits"]]
    assert "added_before=2021-01-01" in page.url
    shot(page, "desktop-9-added-before")

    # the shared URL brings the date and the same results back
    other = browser.new_page(viewport=DESKTOP)
    other.goto(page.url)
    expect(other.locator("#added-before")).to_have_value("2021-01-01")
    expect(other.locator("#results .card")).to_have_count(20)
    other.wait_for_function(IDLE)
    assert grid_ids(other) == shown
    other.close()

    # from a day on instead: none of those old scenes, only later ones
    page.fill("#added-before", "")
    page.locator("#added-before").dispatch_event("change")
    page.fill("#added-after", "2024-06-15")
    page.locator("#added-after").dispatch_event("change")
    page.wait_for_function(IDLE)
    later = grid_ids(page)
    assert len(later) == 20 and {int(i) for i in later} <= middle | rest
    assert "added_after=2024-06-15" in page.url and "added_before" not in page.url
    page.close()

    # without a query, a date lists the archive's scenes of that time
    browse = opened_page(page_server, browser)
    browse.fill("#added-before", "2021-01-01")
    browse.locator("#added-before").dispatch_event("change")
    expect(browse.locator("#archive-info")).to_have_text(f"1–24 of {len(old)}")
    assert {int(i) for i in grid_ids(browse, "#archive")} <= old
    browse.close()


def test_ticking_labels_without_a_query_ranks_their_typical_scenes(
    page_server: LiveServer, browser: Any
) -> None:
    page = typical_of_grass_and_trees(page_server, browser)
    api = httpx.post(
        f"{page_server.url}/search", json={"labels_all": ["grass", "trees"], "k": 20}
    ).json()
    assert grid_ids(page) == [hit["id"] for hit in api["hits"]] and api["hits"]
    for text in page.locator("#results .card .tags").all_inner_texts():
        assert {"grass", "trees"} <= set(text.split(", "))
    assert "labels=grass%2Ctrees" in page.url or "labels=grass,trees" in page.url
    page.close()


def test_a_phrase_is_searched_and_said_back(page_server: LiveServer, browser: Any) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.fill("#text", "ships in a harbour, no cars, a volcano")
    page.keyboard.press("Enter")
    expect(page.locator("#understood")).to_have_text(
        "Understood: ship; folder harbor; not cars — not understood: volcano",
        timeout=90_000,  # the first unknown word loads the sentence encoder in the server
    )
    page.wait_for_function(IDLE)
    phrase = {"text": "ships in a harbour, no cars", "k": 20}
    api = httpx.post(f"{page_server.url}/search", json=phrase)
    assert grid_ids(page) == [hit["id"] for hit in api.json()["hits"]] and api.json()["hits"]
    expect(page.locator("#results-title")).to_have_text("Scenes most typical of ship and harbor")
    assert "text=" in page.url
    shot(page, "desktop-8-text")
    page.close()


def test_both_pages_show_the_service_icon(page_server: LiveServer, browser: Any) -> None:
    icon = httpx.get(f"{page_server.url}/favicon.ico")  # where a browser asks by default
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert icon.content.startswith(b"<svg") and len(icon.content) < 1024
    page = browser.new_page(viewport=DESKTOP)
    for path in ("/", "/admin"):
        page.goto(f"{page_server.url}{path}")
        href = page.eval_on_selector("link[rel=icon]", "link => link.href")
        drawn = page.evaluate(
            """async (href) => {
              const img = new Image();
              img.src = href;
              await img.decode();
              return img.naturalWidth;
            }""",
            href,
        )
        assert drawn > 0, f"{path}: the icon at {href} does not draw"
    page.close()


def test_the_first_tab_offers_to_skip_to_the_results(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    page, _ = searched_page(page_server, browser, subset, 12)
    skip = page.locator("text=Skip to results")
    assert skip.bounding_box()["x"] < 0  # out of sight until focused
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to results"
    box = skip.bounding_box()
    assert 0 <= box["x"] < DESKTOP["width"] and 0 <= box["y"] < DESKTOP["height"]
    page.keyboard.press("Enter")
    focused = page.evaluate("document.activeElement.dataset.sceneId")
    assert focused == grid_ids(page)[0]  # the first result, one key away from the rest
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.sceneId") == grid_ids(page)[1]
    page.close()


def test_an_archive_scene_s_viewer_offers_only_what_applies(
    page_server: LiveServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    page = browser.new_page(viewport=DESKTOP)
    page.goto(page_server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.click("#browse")
    expect(page.locator("#archive .card")).to_have_count(24)
    name = page.locator("#archive .card .name").first.inner_text()
    page.locator("#archive .card").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    # no query to compare with: no feedback buttons, no label comparison
    for hidden in ("#viewer-more", "#viewer-less", ".compare"):
        assert not page.locator(hidden).is_visible(), f"{hidden} shows for an archive scene"
    for shown in ("#viewer-search", "#viewer-open", "#viewer-close"):
        assert page.locator(shown).is_visible(), shown
    full = httpx.get(page.eval_on_selector("#viewer-open", "link => link.href"))
    assert full.status_code == 200 and full.headers["content-type"].startswith("image/")
    page.click("#viewer-search")  # the buttons shown work
    expect(page.locator("#viewer")).to_be_hidden()
    expect(page.locator("#preview-caption")).to_contain_text(f"archive scene {name}")
    expect(page.locator("#results .card")).to_have_count(20)
    page.close()


def test_the_viewer_says_in_words_that_two_scenes_share_no_label(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    def unrelated_hit(query: str) -> str | None:
        labels = set(httpx.get(f"{page_server.url}/scenes/{query}").json()["labels"])
        body = httpx.post(f"{page_server.url}/search", json={"scene_id": query, "k": 100})
        hits = body.json()["hits"]
        return next((h["id"] for h in hits if labels and not labels & set(h["labels"])), None)

    query, hit = next(
        (str(scene_id(s.name)), found)
        for s in subset.scenes
        if (found := unrelated_hit(str(scene_id(s.name))))
    )
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{page_server.url}/?scene={query}&k=100&limit=100")
    page.wait_for_function(IDLE)
    page.locator(f"#results .card[data-scene-id='{hit}']").click()
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-shared")).to_have_text("no label in common")
    page.close()


def test_labels_ticked_under_without_leave_the_results_and_travel_in_the_url(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page, query = searched_page(page_server, browser, subset, 20)
    tags = [set(t.split(", ")) for t in page.locator("#results .card .tags").all_inner_texts()]
    label = max(sorted(set().union(*tags) - {""}), key=lambda name: sum(name in t for t in tags))

    page.locator(f"#filters-none input[value='{label}']").check()
    page.wait_for_function(IDLE)
    api = httpx.post(
        f"{page_server.url}/search", json={"scene_id": query, "k": 20, "labels_none": [label]}
    ).json()
    assert grid_ids(page) == [hit["id"] for hit in api["hits"]] and api["hits"]
    for text in page.locator("#results .card .tags").all_inner_texts():
        assert label not in text.split(", ")
    assert f"without={label}" in page.url

    # the shared URL keeps it; unticking it brings the scenes carrying it back
    other = browser.new_page(viewport=DESKTOP)
    other.goto(page.url)
    expect(other.locator(f"#filters-none input[value='{label}']")).to_be_checked()
    other.wait_for_function(IDLE)
    expect(other.locator("#results .card")).to_have_count(len(api["hits"]))
    assert grid_ids(other) == grid_ids(page)
    other.locator(f"#filters-none input[value='{label}']").uncheck()
    other.wait_for_function(IDLE)
    assert grid_ids(other) == api_neighbours(page_server, query)
    assert "without=" not in other.url
    other.close()
    page.close()


def test_unticking_the_last_label_leaves_no_stale_ranking(
    page_server: LiveServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser)
    trees = page.locator("#filters input[value='trees']")
    trees.check()
    expect(page.locator("#results-title")).to_have_text("Scenes most typical of trees")
    page.wait_for_function(IDLE)
    assert grid_ids(page)

    trees.uncheck()  # nothing left to rank by
    expect(page.locator("#results-title")).to_have_text(NO_SEARCH)
    expect(page.locator("#results .card")).to_have_count(0)
    expect(page.locator("#results-pager")).to_be_hidden()
    assert "labels=" not in page.url

    # ticking again ranks again; "any" of the labels lists the archive instead of ranking
    trees.check()
    expect(page.locator("#results-title")).to_have_text("Scenes most typical of trees")
    expect(page.locator("#results-pager")).to_be_visible()
    page.locator("input[name=match][value=any]").check()
    expect(page.locator("#results-title")).to_have_text(NO_SEARCH)
    expect(page.locator("#results .card")).to_have_count(0)
    page.close()


def test_the_next_page_starts_at_its_top_with_its_first_result_focused(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page, query = searched_page(page_server, browser, subset, 33, "k=100&limit=50", 50)
    page.click("#next")  # at the bottom of a long page of results
    expect(page.locator("#page-info")).to_have_text("51–100 of 100")
    page.wait_for_function(IDLE)
    first = api_neighbours(page_server, query, 100)[50]
    page.wait_for_function(
        "id => document.activeElement.dataset && document.activeElement.dataset.sceneId === id",
        arg=first,
        timeout=10_000,
    )
    top = page.evaluate("document.querySelector('#results-panel').getBoundingClientRect().top")
    assert 0 <= top < DESKTOP["height"] / 2, f"the results start {top:.0f} px from the view's top"
    page.keyboard.press("ArrowRight")  # the keyboard carries on from there
    assert page.evaluate("document.activeElement.dataset.sceneId") == grid_ids(page)[1]
    page.close()


def downloaded(page: Any, button: str) -> tuple[str, Path]:
    """The file a click on `button` saves: its suggested name and where it lies."""
    with page.expect_download() as info:
        page.click(button)
    download = info.value
    return download.suggested_filename, Path(download.path())


def test_a_search_exports_all_its_results_named_after_the_query(
    page_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    page, query = searched_page(page_server, browser, subset, 12, "k=50&limit=10&offset=20", 10)
    want = api_neighbours(page_server, query, k=50)

    name, path = downloaded(page, "#export-csv")
    assert name == f"grn-search-scene-{query}-k50.csv"
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["id"] for row in rows] == want  # every page, not the one shown
    assert [row["rank"] for row in rows] == [str(rank) for rank in range(1, 51)]
    expect(page.locator("#export-note")).to_have_text(f"Saved all 50 results as {name}.")

    name, path = downloaded(page, "#export-json")
    assert name == f"grn-search-scene-{query}-k50.json"
    assert [hit["id"] for hit in json.loads(path.read_text())["hits"]] == want

    # none of the UCM scenes has a footprint: the page says so and saves no empty file
    saved: list[Any] = []
    page.on("download", lambda download: saved.append(download))
    page.click("#export-geojson")
    expect(page.locator("#export-note")).to_have_text(
        "None of these 50 results has a footprint: a GeoJSON file would be empty, so none "
        "was saved. Export CSV instead."
    )
    assert saved == []
    page.close()


def test_a_label_ranking_s_export_is_named_after_its_labels(
    page_server: LiveServer, browser: Any
) -> None:
    page = typical_of_grass_and_trees(page_server, browser)
    name, path = downloaded(page, "#export-csv")
    assert name == "grn-search-labels-grass+trees-k20.csv"
    api = search_ok(page_server, labels_all=["grass", "trees"], k=20)
    with path.open(newline="") as handle:
        assert [row["id"] for row in csv.DictReader(handle)] == [h["id"] for h in api["hits"]]
    page.close()


def test_the_archive_listing_exports_as_geoparquet_with_its_filters(
    page_server: LiveServer, browser: Any
) -> None:
    from playwright.sync_api import expect

    page = opened_page(page_server, browser)
    page.click("#browse")
    page.select_option("#archive-folder", "airplane")
    page.locator("#filters-none input[value='cars']").check()
    listing = httpx.get(
        f"{page_server.url}/scenes",
        params={"scene": "airplane", "labels_none": "cars", "limit": 1000},
    ).json()
    assert 0 < listing["total"] < 6  # the airplane folder holds six
    total = listing["total"]
    expect(page.locator("#archive-info")).to_have_text(f"1–{total} of {total}")
    name, path = downloaded(page, "#archive-export-geoparquet")
    assert name == "grn-scenes-folder-airplane-without-cars.parquet"
    frame = geopandas.read_parquet(path)
    assert sorted(str(i) for i in frame["id"]) == sorted(s["id"] for s in listing["scenes"])
    expect(page.locator("#archive-export-note")).to_have_text(
        f"Saved the {listing['total']} scenes listed as {name}."
    )
    page.close()
