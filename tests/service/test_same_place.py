"""The same place over time (`GET /scenes/{id}/same-place`) through a real server on SQLite
and on PostgreSQL with PostGIS: scenes added through `POST /scenes` with footprints that
cover known shares of one scene's footprint (the same box at several dates, boxes shifted by
30% and 60%, a larger box, a point, a box far away, and boxes either side of the
antimeridian), answered in order of acquisition with their shares; `min_overlap`, paging, 404
and 422; PostGIS's shares equal to shapely's on the same rows; and `grn same-place`, here and
with --url, answering as the API does."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest
from commands import grn
from dates import WRITE_KEY
from PIL import Image
from servers import LiveServer, shot
from shapely.geometry import MultiPolygon, Point, box, mapping
from sqlalchemy import select

from model.archive import Archive, scene_id
from service.storage.db import Scene, make_engine
from service.storage.dialects import postgis_schema
from service.storage.same_place import overlaps

HERE = box(10.0, 45.0, 10.01, 45.01)
"""The asked scene's footprint: 0.01 degrees square."""
SCENES: dict[str, tuple[Any, str | None]] = {
    "here": (HERE, "2020-05-01"),
    "again-2021": (HERE, "2021-03-01"),
    "again-2019": (HERE, "2019-01-01"),
    "again-undated": (HERE, None),
    "east-30": (box(10.003, 45.0, 10.013, 45.01), "2020-07-01"),  # covers 0.7 of HERE
    "east-60": (box(10.006, 45.0, 10.016, 45.01), "2018-02-01"),  # covers 0.4
    "around": (box(9.99, 44.99, 10.02, 45.02), "2022-01-01"),  # covers all; HERE 1/9 of it
    "centre": (Point(10.005, 45.005), "2020-06-01"),  # a point covers nothing
    "far": (box(20.0, 45.0, 20.01, 45.01), "2020-05-02"),
    # across the antimeridian: halves of one another
    "fiji": (MultiPolygon([box(179.995, -17.0, 180.0, -16.99),
                           box(-180.0, -17.0, -179.995, -16.99)]), "2020-01-01"),
    "fiji-west": (box(179.99, -17.0, 180.0, -16.99), "2021-01-01"),
    "fiji-east": (box(-180.0, -17.0, -179.99, -16.99), "2019-01-01"),
}  # fmt: skip


def noise_png(seed: int) -> bytes:
    """A 64 x 64 image of seeded noise (each scene a file of its own, not a duplicate)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture(scope="module")
def placed(dated: tuple[LiveServer, Archive]) -> tuple[LiveServer, Archive, dict[str, str]]:
    """The dated server with `SCENES` added; each scene's id by name."""
    server, archive = dated
    ids = {}
    with server.client() as client:
        for number, (name, (footprint, acquired)) in enumerate(SCENES.items()):
            fields = {"name": name, "footprint": json.dumps(mapping(footprint))}
            if acquired:
                fields["acquired"] = acquired
            added = client.post(
                "/scenes", files={"file": (f"{name}.png", noise_png(number))}, data=fields,
                headers={"X-API-Key": WRITE_KEY},
            )  # fmt: skip
            assert added.status_code == 201, added.text
            ids[name] = added.json()["scenes"][0]["id"]
    return server, archive, ids


def same_place(client: httpx.Client, ids: dict[str, str], name: str, **params: Any) -> Any:
    answer = client.get(f"/scenes/{ids[name]}/same-place", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()


def found(ids: dict[str, str], body: Any) -> list[tuple[str, float]]:
    """The page's scenes as (name, overlap), checking each id is the named scene's."""
    names = {v: k for k, v in ids.items()}
    return [(names[s["id"]], s["overlap"]) for s in body["scenes"]]


def test_same_place_in_order_of_acquisition_with_its_shares(
    placed: tuple[LiveServer, Archive, dict[str, str]],
) -> None:
    server, _, ids = placed
    with server.client() as client:
        body = same_place(client, ids, "here")
        assert found(ids, body) == [
            ("again-2019", 1.0), ("east-30", 0.7), ("again-2021", 1.0), ("around", 1.0),
            ("again-undated", 1.0),
        ]  # fmt: skip
        assert body["total"] == 5 and body["next_offset"] is None and body["min_overlap"] == 0.5
        first = body["scenes"][0]  # items as GET /scenes gives them
        assert first["acquired"] == "2019-01-01T00:00:00Z" and first["image"] == "again-2019"
        assert first["place"]["footprint"]["type"] == "Polygon"
        assert first["thumbnail_url"].endswith(f"/scenes/{ids['again-2019']}/thumbnail")
        # a lower share lets the 60% shift in, first by date; 1 keeps the full covers only
        lower = found(ids, same_place(client, ids, "here", min_overlap=0.3))
        assert lower[0] == ("east-60", 0.4) and len(lower) == 6
        full = found(ids, same_place(client, ids, "here", min_overlap=1))
        assert [name for name, _ in full] == ["again-2019", "again-2021", "around", "again-undated"]
        # the share is of the asked scene's footprint: each small box covers a ninth of the
        # larger one
        wide = same_place(client, ids, "around")
        assert wide["scenes"] == [] and wide["total"] == 0 and "0.5" in wide["note"]
        ninth = found(ids, same_place(client, ids, "around", min_overlap=0.1))
        assert ninth == [
            (name, round(1 / 9, 6))
            for name in ("east-60", "again-2019", "here", "east-30", "again-2021", "again-undated")
        ]
        # paged by offset
        page = same_place(client, ids, "here", limit=2, offset=2)
        assert found(ids, page) == [("again-2021", 1.0), ("around", 1.0)]
        assert page["next_offset"] == 4 and page["total"] == 5
        past = same_place(client, ids, "here", offset=9)
        assert past["scenes"] == [] and past["total"] == 5 and "offset" in past["note"]
        # across the antimeridian, each half of the split footprint found where it lies
        assert found(ids, same_place(client, ids, "fiji")) == [
            ("fiji-east", 0.5),
            ("fiji-west", 0.5),
        ]
        assert found(ids, same_place(client, ids, "fiji-west")) == [("fiji", 0.5)]
        assert found(ids, same_place(client, ids, "far")) == []


def test_scenes_without_a_place_and_bad_requests(
    placed: tuple[LiveServer, Archive, dict[str, str]],
) -> None:
    server, archive, ids = placed
    with server.client() as client:
        # the grid's neighbours touch, sharing an edge and no area
        grid = str(scene_id(archive.scenes[20].name))
        assert client.get(f"/scenes/{grid}").json()["place"] is not None
        gridded = same_place(client, {"grid": grid}, "grid")
        assert gridded["scenes"] == [] and "covers" in gridded["note"]
        unplaced = str(scene_id(archive.scenes[-1].name))  # the last six have no footprint
        assert client.get(f"/scenes/{unplaced}").json()["place"] is None
        alone = same_place(client, {"alone": unplaced}, "alone")
        assert alone["scenes"] == [] and alone["total"] == 0
        assert "no footprint" in alone["note"]
        point = same_place(client, ids, "centre", min_overlap=0.01)
        assert point["scenes"] == [] and "no footprint with an area" in point["note"]
        missing = client.get("/scenes/1/same-place")
        assert missing.status_code == 404 and missing.json()["error"] == "scene_not_found"
        for bad in ("0", "-0.5", "1.5", "half"):
            refused = client.get(f"/scenes/{ids['here']}/same-place", params={"min_overlap": bad})
            assert refused.status_code == 422, bad
            assert "min_overlap" in refused.json()["message"], bad


def test_postgis_and_shapely_give_the_same_shares(
    placed: tuple[LiveServer, Archive, dict[str, str]],
) -> None:
    server, _, ids = placed
    engine = make_engine(server.env["GRN_DATABASE_URL"])
    try:
        with engine.connect() as connection:
            schema = postgis_schema(connection)
            if connection.dialect.name == "postgresql":
                assert schema is not None  # the test database has PostGIS
            every = connection.scalars(select(Scene.id)).all()
            assert len(every) == 126 + len(SCENES)
            for name in ("here", "around", "fiji", "east-60"):
                by_shapely = overlaps(connection, int(ids[name]), None)
                assert by_shapely and by_shapely == overlaps(connection, int(ids[name]), schema)
    finally:
        engine.dispose()


def test_grn_same_place_answers_as_the_api(
    placed: tuple[LiveServer, Archive, dict[str, str]],
) -> None:
    server, archive, ids = placed
    asked = {"min_overlap": 0.3, "offset": 1, "limit": 4}
    options = ["--min-overlap", "0.3", "--offset", "1", "--limit", "4", "--json"]
    with server.client() as client:
        api = same_place(client, ids, "here", **asked)
    assert [name for name, _ in found(ids, api)] == [
        "again-2019", "east-30", "again-2021", "around"
    ]  # fmt: skip
    remote = grn("same-place", ids["here"], *options, "--url", server.url)
    assert remote.returncode == 0, remote.stderr
    assert json.loads(remote.stdout) == api
    # here, from the same SQL: the same body, its URLs paths on the service
    local = grn("same-place", ids["here"], *options, env=server.env)
    assert local.returncode == 0, local.stderr
    for item in api["scenes"]:
        for key in ("image_url", "thumbnail_url"):
            item[key] = item[key].removeprefix(server.url)
    assert json.loads(local.stdout) == api
    assert api["scenes"][0]["thumbnail_url"] == f"/scenes/{ids['again-2019']}/thumbnail"

    table = grn("same-place", ids["here"], "--limit", "3", env=server.env)
    assert table.returncode == 0, table.stderr
    header, *rows = [line.split() for line in table.stdout.splitlines()]
    assert header == ["id", "image", "acquired", "overlap", "labels"]
    assert [row[:4] for row in rows] == [
        [ids["again-2019"], "again-2019", "2019-01-01T00:00:00Z", "1"],
        [ids["east-30"], "east-30", "2020-07-01T00:00:00Z", "0.7"],
        [ids["again-2021"], "again-2021", "2021-03-01T00:00:00Z", "1"],
    ]
    assert table.stderr == "5 scenes at this place; the next page: --offset 3\n"
    last = grn("same-place", ids["here"], "--offset", "4", "--url", server.url)
    assert last.returncode == 0 and last.stderr == ""
    assert [line.split()[:4] for line in last.stdout.splitlines()[1:]] == [
        [ids["again-undated"], "again-undated", "unknown", "1"]
    ]

    # no footprint: the API's note, nothing found, success
    unplaced = str(scene_id(archive.scenes[-1].name))
    with server.client() as client:
        note = same_place(client, {"alone": unplaced}, "alone")["note"]
    for where in ([], ["--url", server.url]):
        alone = grn("same-place", unplaced, *where, env=server.env)
        assert (alone.returncode, alone.stdout, alone.stderr) == (0, "", f"{note}\n")

    # an unknown scene fails on one line; a share out of (0, 1] is a usage error
    missing = grn("same-place", "1", env=server.env)
    assert (missing.returncode, missing.stderr) == (1, "error: no scene with id 1\n")
    remote_missing = grn("same-place", "1", "--url", server.url)
    assert (remote_missing.returncode, remote_missing.stderr) == (
        1, "error: the service answered 404: no scene with id 1\n"
    )  # fmt: skip
    for bad in ("0", "1.5", "half"):
        refused = grn("same-place", ids["here"], "--min-overlap", bad, env=server.env)
        assert refused.returncode == 2 and refused.stdout == "", bad
        assert refused.stderr.startswith("error: ") and "--min-overlap" in refused.stderr, bad
        assert refused.stderr.count("\n") == 1, bad


def test_the_viewer_shows_the_place_over_time_and_compares_two(
    placed: tuple[LiveServer, Archive, dict[str, str]], browser: Any
) -> None:
    from playwright.sync_api import expect

    server, _, ids = placed
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(server.url)
    expect(page.locator("#status")).to_contain_text("ready")
    page.click("#browse")
    page.fill("#archive-name", "here")
    expect(page.locator("#archive .card")).to_have_count(1)
    page.locator("#archive .card").first.click()
    expect(page.locator("#viewer")).to_be_visible()
    strip = page.locator("#same-place-strip .strip-item")
    expect(strip).to_have_count(5)
    order = ["again-2019", "east-30", "again-2021", "around", "again-undated"]
    assert [strip.nth(i).get_attribute("data-scene-id") for i in range(5)] == [
        ids[name] for name in order
    ]
    assert strip.locator(".date").all_inner_texts() == [
        "2019-01-01", "2020-07-01", "2021-03-01", "2022-01-01", "date unknown"
    ]  # fmt: skip
    assert strip.locator(".overlap").all_inner_texts() == ["100%", "70%", "100%", "100%", "100%"]
    page.wait_for_function(
        "[...document.querySelectorAll('#same-place-strip img')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )

    def seen_at(share: float) -> str:
        """The scene the person sees at this share of the before/after image's width."""
        found: str = page.evaluate(
            "share => { const box = document.querySelector('#swipe').getBoundingClientRect();"
            " return document.elementFromPoint(box.left + box.width * share,"
            " box.top + box.height / 2).dataset.sceneId; }",
            share,
        )
        return found

    # an earlier scene: it comes before the open one (2020-05-01)
    strip.first.click()
    expect(page.locator("#before-after")).to_be_visible()
    expect(page.locator("#before-caption")).to_have_text("before: again-2019 · 2019-01-01")
    expect(page.locator("#after-caption")).to_have_text("after: here · 2020-05-01")
    page.wait_for_function(
        "['before-image', 'after-image', 'swipe-before', 'swipe-after']"
        ".map(id => document.getElementById(id)).every(i => i.complete && i.naturalWidth > 0)"
    )
    page.locator("#swipe").scroll_into_view_if_needed()
    shot(page, "desktop-9-same-place")
    assert (seen_at(0.25), seen_at(0.75)) == (ids["again-2019"], ids["here"])
    page.focus("#swipe-range")
    page.keyboard.press("End")  # the slider all the way: the earlier scene everywhere
    assert (seen_at(0.25), seen_at(0.95)) == (ids["again-2019"], ids["again-2019"])
    page.keyboard.press("Home")  # ... and back: the later one everywhere
    assert (seen_at(0.05), seen_at(0.75)) == (ids["here"], ids["here"])
    # a later scene: the open one comes first; one of unknown date comes last
    strip.nth(2).click()
    expect(page.locator("#before-caption")).to_have_text("before: here · 2020-05-01")
    expect(page.locator("#after-caption")).to_have_text("after: again-2021 · 2021-03-01")
    assert strip.nth(2).get_attribute("aria-pressed") == "true"
    strip.nth(4).click()
    expect(page.locator("#after-caption")).to_have_text("after: again-undated · date unknown")
    page.click("#before-after-close")
    expect(page.locator("#before-after")).to_be_hidden()
    page.close()
