"""Concepts on the web page in a real headless browser (Debian's chromium driven by
Playwright): results marked as examples and counter-examples rank the archive, each new mark
ranks it again, the examples are saved as a concept (with the API key), listed with the
scenes they find, ticked as a filter, ranked by, renamed and deleted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pages import IDLE, grid_ids, searched_page, shows
from servers import CHROMIUM, LiveServer, head_model_served, server_env, shot

from model.archive import Archive

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)
KEY = "page-concepts-key-0123456789abcdef"


@pytest.fixture(scope="module")
def keyed_server(
    ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """A head-mode model over the UCM subset (real backbone features, so that a concept of a
    few examples finds scenes), writes behind KEY."""
    served, url, workdir = head_model_served(
        tmp_path_factory.mktemp("web-concepts"), ucm_root, ucm_subset
    )
    env = server_env(served, url, workdir, GRN_API_KEY=KEY)
    with LiveServer(env, workdir / "server.log") as server:
        yield server


def mark(page: Any, scene: str, liked: bool) -> None:
    """Open a result and mark it "more like" (or "less like"), as a person does."""
    from playwright.sync_api import expect

    page.locator(f"#results .card[data-scene-id='{scene}']").click()
    page.click("#viewer-more" if liked else "#viewer-less")
    expect(page.locator("#feedback")).to_be_visible()
    page.wait_for_function(IDLE)


def unjudged(page: Any, judged: list[str], last: bool = False) -> str:
    """The first result (or the last) not judged yet."""
    ids = [i for i in grid_ids(page) if i not in judged]
    return ids[-1] if last else ids[0]


def ranked(server: LiveServer, **body: Any) -> list[str]:
    """The ids POST /search/concept ranks for `body` (20 hits, the page's k and page size)."""
    answer = httpx.post(f"{server.url}/search/concept", json={"k": 20, "limit": 20, **body})
    assert answer.status_code == 200, answer.text
    return [hit["id"] for hit in answer.json()["hits"]]


def test_examples_rank_the_archive_and_are_saved_listed_filtered_and_deleted(
    keyed_server: LiveServer, browser: Any, subset: Archive
) -> None:
    from playwright.sync_api import expect

    server = keyed_server
    page, query = searched_page(server, browser, subset, 3)
    positives: list[str] = [query]
    negatives: list[str] = []
    for liked, last in ((True, False), (True, False), (False, True)):
        scene = unjudged(page, [*positives, *negatives], last)
        mark(page, scene, liked)
        (positives if liked else negatives).append(scene)

    # rank the archive by the examples: the query scene and the two marked "more like"
    page.click("#concept-rank")
    expect(page.locator("#results-title")).to_contain_text("Ranked by 3 examples against 1")
    shows(page, ranked(server, positives=positives, negatives=negatives))
    # a wrong hit marked: the archive is ranked again without it
    wrong = unjudged(page, [*positives, *negatives])
    mark(page, wrong, liked=False)
    negatives.append(wrong)
    expect(page.locator("#results-title")).to_contain_text("Ranked by 3 examples against 2")
    examples_ranked = ranked(server, positives=positives, negatives=negatives)
    assert wrong not in examples_ranked
    shows(page, examples_ranked)
    assert "rank=examples" in page.url
    page.reload()  # the ranking, its marks and its page come back from the URL
    expect(page.locator("#results-title")).to_contain_text("Ranked by 3 examples against 2")
    shows(page, examples_ranked)

    # saved without the key: refused, and the key box opens; with it: saved
    page.fill("#concept-name", "like the query")
    page.click("#concept-save")
    expect(page.locator("#concept-status")).to_contain_text("need an API key")
    expect(page.locator("#api-key")).to_be_visible()
    page.fill("#api-key", KEY)
    page.click("#concept-save")
    expect(page.locator("#concept-status")).to_contain_text("Saved the concept like the query")
    listed = httpx.get(f"{server.url}/concepts").json()["concepts"]
    assert [c["name"] for c in listed] == ["like the query"]
    assert listed[0]["positives"] == positives and listed[0]["negatives"] == negatives
    count = listed[0]["count"]
    row = page.locator("#concepts .concept[data-name='like the query']")
    expect(row.locator("label")).to_contain_text(f"like the query ({count})")
    expect(page.locator("#concepts-none")).to_be_hidden()
    shot(page, "desktop-concept-1-saved")

    # ticked, it filters the ranking: only scenes it finds
    kept = httpx.get(f"{server.url}/scenes", params={"concepts": "like the query", "limit": 1000})
    allowed = {scene["id"] for scene in kept.json()["scenes"]}
    assert 0 < len(allowed) == count < 126
    row.locator("input").check()
    narrowed = ranked(server, positives=positives, negatives=negatives, concepts=["like the query"])
    assert set(narrowed) <= allowed and narrowed != examples_ranked
    shows(page, narrowed)
    assert "concepts=like+the+query" in page.url

    row.locator("input").uncheck()
    shows(page, examples_ranked)

    # the archive ranked by the saved concept
    row.locator("button.rank").click()
    expect(page.locator("#results-title")).to_contain_text("Ranked by the concept like the query")
    expect(page.locator("#region-form")).to_be_hidden()  # no image to draw a box on
    by_concept = ranked(server, concept="like the query")
    assert by_concept and not set(by_concept) & {*positives, *negatives}
    shows(page, by_concept)
    shot(page, "desktop-concept-2-ranked")
    assert "concept=like+the+query" in page.url
    page.reload()
    expect(page.locator("#results-title")).to_contain_text("Ranked by the concept like the query")
    shows(page, by_concept)
    page.go_back()  # to the ranking by the examples
    expect(page.locator("#results-title")).to_contain_text("Ranked by 3 examples against 2")
    shows(page, examples_ranked)
    page.go_forward()
    shows(page, by_concept)

    # renamed (the name asked in a dialog), then deleted (confirmed)
    page.once("dialog", lambda dialog: dialog.accept("query look-alikes"))
    row.locator("button.rename").click()
    renamed = page.locator("#concepts .concept[data-name='query look-alikes']")
    expect(renamed.locator("label")).to_contain_text(f"query look-alikes ({count})")
    expect(page.locator("#results-title")).to_contain_text("Ranked by the concept query look")
    assert [c["name"] for c in httpx.get(f"{server.url}/concepts").json()["concepts"]] == [
        "query look-alikes"
    ]
    page.once("dialog", lambda dialog: dialog.accept())
    renamed.locator("button.delete").click()
    expect(page.locator("#concepts .concept")).to_have_count(0)
    expect(page.locator("#concepts-none")).to_be_visible()
    expect(page.locator("#results-panel")).to_be_hidden()  # ranked by it no more
    assert httpx.get(f"{server.url}/concepts").json()["concepts"] == []
    page.close()
