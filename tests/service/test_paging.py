"""Keyset paging of `GET /scenes` and the streamed exports, on SQLite and PostgreSQL: a walk
by cursor holds every scene of a filtered listing once, in order, and the scenes the
archive says pass the filters; every bad cursor (and paging past the limits) is a 4xx that
says what was wrong; an export arrives in parts and holds every row."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from servers import CHROMIUM, LiveServer
from sqlalchemy import delete

from index.filters import SceneFilter
from model.archive import Archive, ArchiveEntry, scene_id
from service.api.exports import SCENE_COLUMNS, scenes_csv
from service.api.schemas.archive import SceneOut
from service.storage.catalog import Catalog
from service.storage.db import Scene, make_engine
from service.storage.listing import Seek
from service.storage.migrate import upgrade
from service.usecases.importer import import_archive

Passes = Callable[[ArchiveEntry, set[str]], bool]
LISTINGS: list[tuple[dict[str, str], Passes]] = [
    ({}, lambda s, labels: True),
    ({"labels_all": "pavement"}, lambda s, labels: "pavement" in labels),
    (
        {"labels_any": "water,trees", "labels_none": "buildings"},
        lambda s, labels: bool(labels & {"water", "trees"}) and "buildings" not in labels,
    ),
    (
        {"split": "train", "labels_any": "grass"},
        lambda s, labels: s.split == "train" and "grass" in labels,
    ),
    ({"scene": "harbor"}, lambda s, labels: s.folder == "harbor"),
    ({"q": "1"}, lambda s, labels: "1" in s.name),
    ({"scene": "no such folder"}, lambda s, labels: False),
]


def label_set(archive: Archive, scene: ArchiveEntry) -> set[str]:
    return {n for n, v in zip(archive.label_names, scene.labels, strict=True) if v}


def walk(client: Any, params: dict[str, str], limit: int) -> Iterator[dict[str, Any]]:
    """Every page of a listing, following next_cursor from the first."""
    page = client.get("/scenes", params={**params, "limit": limit}).json()
    yield page
    while page["next_cursor"] is not None:
        query = {**params, "limit": limit, "cursor": page["next_cursor"]}
        response = client.get("/scenes", params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        yield page


@pytest.mark.parametrize("order", ["id", "name"])
def test_a_cursor_walk_lists_every_filtered_scene_once(
    live: LiveServer, subset: Archive, order: str
) -> None:
    with live.client() as client:
        for params, passes in LISTINGS:
            query = {**params, "order": order}
            expected = [s for s in subset.scenes if passes(s, label_set(subset, s))]
            pages = list(walk(client, query, limit=7))
            listed = [scene for page in pages for scene in page["scenes"]]
            ids = [int(scene["id"]) for scene in listed]
            assert len(ids) == len(set(ids)) == len(expected), params
            assert set(ids) == {scene_id(s.name) for s in expected}, params
            keys = ids if order == "id" else [scene["image"] for scene in listed]
            assert keys == sorted(keys), params
            # the offset listing of the same filters, the order it always had
            whole = client.get("/scenes", params={**query, "limit": 1000}).json()
            assert [int(s["id"]) for s in whole["scenes"]] == ids
            # each page says where it lies and what it counts
            assert [page["offset"] for page in pages] == list(range(0, 7 * len(pages), 7))
            assert {page["total"] for page in pages} == {len(expected)}
            assert pages[-1]["next_cursor"] is None and pages[-1]["next_offset"] is None
            if not expected:
                assert pages[0]["note"] == "no scene passes these filters"


def test_an_offset_page_hands_over_to_cursors(live: LiveServer) -> None:
    """A page asked by offset gives the cursor of the page after it too."""
    with live.client() as client:
        query = {"order": "name", "labels_any": "trees,grass"}
        whole = client.get("/scenes", params={**query, "limit": 1000}).json()["scenes"]
        page = client.get("/scenes", params={**query, "offset": 10, "limit": 5}).json()
        after = client.get("/scenes", params={**query, "cursor": page["next_cursor"], "limit": 5})
        assert after.json()["offset"] == 15
        assert [s["id"] for s in after.json()["scenes"]] == [s["id"] for s in whole[15:20]]


def cursor_of(client: Any, params: dict[str, str]) -> str:
    cursor: str = client.get("/scenes", params={**params, "limit": 3}).json()["next_cursor"]
    assert cursor
    return cursor


def reencoded(cursor: str, **changes: Any) -> str:
    body = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    text = json.dumps({**body, **changes}).encode()
    return base64.urlsafe_b64encode(text).decode().rstrip("=")


def refused(response: Any, status: int, code: str, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    for word in words:
        assert word in body["message"], body["message"]


def test_every_bad_cursor_is_a_400_saying_why(live: LiveServer) -> None:
    with live.client() as client:
        by_name = cursor_of(client, {"order": "name", "labels_any": "water"})

        def listing(cursor: str, **params: Any) -> Any:
            query = {"order": "name", "labels_any": "water", **params, "cursor": cursor}
            return client.get("/scenes", params=query)

        assert listing(by_name).status_code == 200
        malformed = "not a cursor of this service"
        for bad in (
            "abc", "!!!!", "e30",  # not base64 of anything, punctuation, {} (no fields)
            reencoded(by_name, p=-1),  # a negative position
            reencoded(by_name, t="3"),  # a field of the wrong type
            reencoded(by_name, o="size"),  # an order the listing does not have
            by_name[:-4],  # cut short
        ):  # fmt: skip
            refused(listing(bad), 400, "bad_cursor", "cursor:", malformed)
        refused(listing(reencoded(by_name, v=9)), 400, "bad_cursor", "another version")
        by_id = cursor_of(client, {"order": "id"})
        refused(
            client.get("/scenes", params={"cursor": reencoded(by_id, k="12x")}),
            400, "bad_cursor", "not a 63-bit scene id",
        )  # fmt: skip
        refused(
            client.get("/scenes", params={"cursor": reencoded(by_id, i=str(2**63))}),
            400, "bad_cursor", "not a 63-bit scene id",
        )  # fmt: skip
        refused(listing(by_name, order="id"), 400, "bad_cursor", "order=name", "order=id")
        refused(listing(by_name, labels_any="trees"), 400, "bad_cursor", "other filters")
        refused(listing(by_name, q="harbor"), 400, "bad_cursor", "other filters")
        refused(listing(by_name, offset=3), 400, "bad_cursor", "offset or cursor, not both")
        # the same filters written otherwise are the same filters
        same = {"order": "name", "labels_any": ["water"], "cursor": by_name}
        assert client.get("/scenes", params=same).status_code == 200
        refused(listing("a" * 2001), 422, "invalid_request", "query.cursor")


def test_paging_past_the_limits_is_a_422_naming_the_field(live: LiveServer) -> None:
    with live.client() as client:
        for params, field in (
            ({"limit": 0}, "query.limit"),
            ({"limit": 1001}, "query.limit"),
            ({"offset": -1}, "query.offset"),
            ({"offset": 2**63}, "query.offset"),
            ({"order": "size"}, "query.order"),
        ):
            refused(client.get("/scenes", params=params), 422, "invalid_request", field)
        past = client.get("/scenes", params={"offset": 5000}).json()
        assert past["scenes"] == [] and past["total"] == 126 and "past the last" in past["note"]


@pytest.mark.parametrize("order", ["id", "name"])
def test_the_export_arrives_in_parts_and_holds_every_row(live: LiveServer, order: str) -> None:
    params = {"labels_any": "water,trees,grass", "order": order}
    with live.client() as client:
        listed = client.get("/scenes", params={**params, "limit": 1000}).json()["scenes"]
        assert len(listed) > 20
        with client.stream("GET", "/scenes/export", params=params) as response:
            assert response.status_code == 200
            assert response.headers["transfer-encoding"] == "chunked"
            assert "content-length" not in response.headers
            assert response.headers["content-type"].startswith("text/csv")
            text = "".join(response.iter_text())
        rows = list(csv.reader(io.StringIO(text)))
        assert rows[0] == SCENE_COLUMNS
        assert [row[0] for row in rows[1:]] == [scene["id"] for scene in listed]
        for row, scene in zip(rows[1:], listed, strict=True):
            assert row[1:5] == [scene["image"], scene["scene"], scene["split"],
                                ";".join(scene["labels"])]  # fmt: skip
            assert row[8] == scene["added"].replace("+00:00", "Z")
        geo = client.get("/scenes/export", params={**params, "format": "geojson"})
        assert geo.headers["content-type"].startswith("application/geo+json")
        collection = geo.json()
        assert [f["id"] for f in collection["features"]] == [s["id"] for s in listed]
        assert collection["unplaced"] == sum(f["geometry"] is None for f in collection["features"])
        refused(
            client.get("/scenes/export", params={"labels_all": "volcano"}),
            400, "unknown_label", "volcano",
        )  # fmt: skip
        refused(client.get("/scenes/export", params={"format": "xml"}), 422, "invalid_request")


def test_the_csv_is_written_a_chunk_at_a_time() -> None:
    """The export's text is made as the rows come: its first pieces are out before the
    second chunk of rows is read."""
    pulled: list[int] = []

    def chunks() -> Iterator[list[SceneOut]]:
        for number in range(3):
            pulled.append(number)
            yield [
                SceneOut(
                    id=number * 10 + i, image=f"s{number}-{i}", scene="f", split="train",
                    labels=["a", "b"], width=1, height=1, image_url="u", thumbnail_url="t",
                )
                for i in range(2)
            ]  # fmt: skip

    pieces = scenes_csv(chunks())
    assert next(pieces).startswith("id,image") and pulled == []
    assert next(pieces).startswith("0,s0-0,f,train,a;b") and pulled == [0]
    assert len(list(pieces)) == 2 and pulled == [0, 1, 2]


def test_keyset_pages_survive_a_removal_between_them(
    database_url: str, ucm_root: Path, ucm_subset: Path
) -> None:
    """A scene removed from an earlier page between two requests: the cursor's next page
    holds what it held (offset paging would skip a scene), and `walk` reads every scene in
    chunks by the same keyset."""
    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, ucm_subset, progress=False)
    catalog = Catalog(engine)
    where = SceneFilter(labels_any=["water", "trees", "pavement"])
    for order in ("id", "name"):
        everything, total = catalog.page(where, 0, 1000, order=order)
        assert total == len(everything) > 30
        catalog.table()  # current arrays count the total instead of SQL, to the same figure
        assert catalog.fresh_table() is not None
        assert catalog.page(where, 0, 1, order=order)[1] == total
        first, _ = catalog.page(where, 0, 10, order=order, count=False)
        with engine.begin() as connection:
            connection.execute(delete(Scene).where(Scene.id == first[3].id))
        after = Seek.after(order, first[-1])
        second, counted = catalog.page(where, 0, 10, order=order, after=after, count=False)
        assert counted is None
        assert [s.id for s in second] == [s.id for s in everything[10:20]]
        by_offset, _ = catalog.page(where, 10, 10, order=order, count=False)
        assert by_offset[0].id == everything[11].id  # what offset paging gets wrong
        chunks = list(catalog.walk(where, order=order, chunk=9))
        assert all(len(chunk) <= 9 for chunk in chunks)
        walked = [s.id for chunk in chunks for s in chunk]
        assert walked == [s.id for s in everything if s.id != first[3].id]
    engine.dispose()


def browse_by_cursor(page: Any, grid: str, pager: str, step: int) -> list[list[str]]:
    """Click Next (`#{pager}-next`) until it is disabled, checking the counts the page shows
    (`#{pager}-info`, of 126 scenes); the names of each page seen."""
    from playwright.sync_api import expect

    def names() -> list[str]:
        return [text.strip() for text in page.locator(grid).all_inner_texts()]

    info = page.locator(f"#{pager}-info")
    expect(info).to_have_text(f"1–{step} of 126")
    seen = [names()]
    for first in range(step + 1, 127, step):
        page.click(f"#{pager}-next")
        expect(info).to_have_text(f"{first}–{min(first + step - 1, 126)} of 126")
        seen.append(names())
    expect(page.locator(f"#{pager}-next")).to_be_disabled()
    return seen


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium")
def test_the_pages_browse_the_archive_by_cursor(live: LiveServer, browser: Any) -> None:
    """The archive browser (24 a page) and the admin page's scene table (20) walk the whole
    archive by name with Next, every scene once; Previous goes back; a new name starts again;
    every request after the first page carries a cursor, none an offset."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/scenes?" in r.url else None)
    page.goto(live.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.click("#browse")
    seen = browse_by_cursor(page, "#archive .card .name", "archive", 24)
    names = [name for shown in seen for name in shown]
    assert names == sorted(names) and len(set(names)) == 126
    page.click("#archive-prev")
    expect(page.locator("#archive-info")).to_have_text("97–120 of 126")
    assert page.locator("#archive .card .name").all_inner_texts() == seen[-2]
    page.fill("#archive-name", "harbor")  # another selection: its first page, no error
    expect(page.locator("#archive-info")).to_have_text("1–6 of 6")
    expect(page.locator("#archive-prev")).to_be_disabled()

    page.goto(f"{live.url}/admin")
    rows = browse_by_cursor(page, "#scenes tbody tr td:first-child", "scenes", 20)
    assert [row for shown in rows for row in shown] == names
    page.click("#scenes-prev")
    expect(page.locator("#scenes-info")).to_have_text("101–120 of 126")
    assert len([url for url in asked if "cursor=" in url]) >= 5 + 6 + 2
    assert not [url for url in asked if "offset=" in url]
    page.close()
