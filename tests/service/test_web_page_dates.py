"""The web page's acquisition dates in a real headless browser (Debian's chromium driven by
Playwright), over the UCM subset dated in turn (`dates.GIVEN`: 18 scenes at each of six
times from July 2019 to March 2024, 18 of unknown time): a person ticks summer months, orders
by acquisition, narrows by a date, searches by a scene, goes Back and shares the URL, and
sees the dates on the cards, their order and the counts the API gives, and a scene's STAC
item from its viewer."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import pytest
from servers import CHROMIUM, LiveServer

from model.archive import Archive, scene_id

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)"
)
DESKTOP = {"width": 1280, "height": 1000}
IDLE = "document.querySelector('#results').getAttribute('aria-busy') === 'false'"


def card_dates(page: Any, grid: str) -> list[str | None]:
    """Each card's date line (`acquired 2021-08-31`), None where it shows none."""
    dates: list[str | None] = page.eval_on_selector_all(
        f"{grid} .card", "cards => cards.map(c => c.querySelector('.date')?.textContent ?? null)"
    )
    return dates


def card_ids(page: Any, grid: str) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(
        f"{grid} .card", "cards => cards.map(c => c.dataset.sceneId)"
    )
    return ids


def days(archive: Archive, months: set[int], after: str = "") -> dict[str, str]:
    """The archive's scenes acquired in `months` (UTC) on or after the day `after`: their
    ids and the date their cards show."""
    return {
        str(scene_id(s.name)): f"acquired {s.acquired.date().isoformat()}"
        for s in archive.scenes
        if s.acquired and s.acquired.month in months and s.acquired.isoformat() >= after
    }


def url_fields(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


@pytest.mark.parametrize("dated", ["sqlite"], indirect=True)  # the page: one database
def test_dates_filter_and_order_the_listing_and_the_search_and_travel_in_the_url(
    dated: tuple[LiveServer, Archive], browser: Any
) -> None:
    from playwright.sync_api import expect

    server, archive = dated
    summer = days(archive, {6, 7, 8})
    assert len(summer) == 54 and len(set(summer.values())) == 3

    page = browser.new_page(viewport=DESKTOP)
    page.goto(server.url)
    expect(page.locator("#months input")).to_have_count(12)
    # summer of any year: the archive lists its 54 summer scenes, each card with its date
    for month in ("6", "7", "8"):
        page.locator(f"#months input[value='{month}']").check()
    expect(page.locator("#archive-info")).to_have_text("1–24 of 54")
    shown = dict(zip(card_ids(page, "#archive"), card_dates(page, "#archive"), strict=True))
    assert shown == {i: summer[i] for i in shown}
    assert url_fields(page)["month"] == ["6,7,8"]

    # newest first: June 2023's 18 scenes, then August 2021's, dates never rising
    page.select_option("#order", "-acquired")
    expect(page.locator("#archive .card .date").first).to_have_text("acquired 2023-06-15")
    dates = card_dates(page, "#archive")
    assert dates == [*["acquired 2023-06-15"] * 18, *["acquired 2021-08-31"] * 6]
    listing = httpx.get(
        f"{server.url}/scenes", params={"month": "6,7,8", "order": "-acquired", "limit": 24}
    ).json()
    assert card_ids(page, "#archive") == [s["id"] for s in listing["scenes"]]
    page.click("#archive-next")
    expect(page.locator("#archive-info")).to_have_text("25–48 of 54")
    assert card_dates(page, "#archive") == [
        *["acquired 2021-08-31"] * 12, *["acquired 2019-07-01"] * 12
    ]  # fmt: skip

    # from 2020 on: July 2019 leaves
    page.fill("#acquired-after", "2020-01-01")
    page.locator("#acquired-after").dispatch_event("change")
    later = days(archive, {6, 7, 8}, after="2020-01-01")
    expect(page.locator("#archive-info")).to_have_text(f"1–24 of {len(later)}")
    assert len(later) == 36
    fields = url_fields(page)
    assert fields["acquired_after"] == ["2020-01-01"] and fields["order"] == ["-acquired"]

    # the first scene listed, opened: its STAC item, dated as its card
    page.locator("#archive .card").first.click()
    with page.expect_popup() as opened:
        page.click("#viewer-stac")
    item = json.loads(opened.value.inner_text("body"))
    assert item["type"] == "Feature" and item["geometry"]["type"] == "Polygon"
    assert item["properties"]["datetime"].startswith("2023-06-15")
    assert item["properties"]["grn:datetime_is"] == "acquired"
    opened.value.close()

    # a search by it: its 20 nearest among those 36, newest first
    page.click("#viewer-search")
    expect(page.locator("#results .card")).to_have_count(20)
    page.wait_for_function(IDLE)
    expect(page.locator("#results-title")).to_have_text("Similar scenes, newest acquired first")
    query = url_fields(page)["scene"][0]
    ids, dates = card_ids(page, "#results"), card_dates(page, "#results")
    assert set(ids) <= set(later) - {query}
    assert dates == sorted(dates, reverse=True) and dates == [later[i] for i in ids]
    wanted = {"scene_id": query, "k": 20, "month": [6, 7, 8], "acquired_after": "2020-01-01"}
    api = httpx.post(f"{server.url}/search", json={**wanted, "order": "-acquired"}).json()
    assert ids == [hit["id"] for hit in api["hits"]]
    by_score = httpx.post(f"{server.url}/search", json=wanted).json()
    assert set(ids) == {hit["id"] for hit in by_score["hits"]}  # the same 20, in time order
    expect(page.locator("#page-info")).to_have_text("1–20 of 20")

    # Back: the listing again, its filters and order restored
    page.go_back()
    expect(page.locator("#results-panel")).to_be_hidden()
    expect(page.locator("#archive-info")).to_have_text("1–24 of 36")
    expect(page.locator("#order")).to_have_value("-acquired")
    expect(page.locator("#acquired-after")).to_have_value("2020-01-01")
    assert page.eval_on_selector_all(
        "#months input:checked", "inputs => inputs.map(i => i.value)"
    ) == ["6", "7", "8"]
    page.close()

    # a shared URL: before 2020, oldest first, lists July 2019's scenes with their dates
    shared = browser.new_page(viewport=DESKTOP)
    shared.goto(f"{server.url}/?acquired_before=2020-01-01&order=acquired")
    expect(shared.locator("#archive-info")).to_have_text("1–18 of 18")
    expect(shared.locator("#acquired-before")).to_have_value("2020-01-01")
    assert card_dates(shared, "#archive") == ["acquired 2019-07-01"] * 18
    shared.close()
