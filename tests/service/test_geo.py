"""Scenes on the Earth through the API: footprints imported from labels.csv, search and
listing filtered by box, polygon and distance, hits as GeoJSON, bad places refused; on
SQLite and PostgreSQL, through a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import shapely
from geodata import ORIGIN, make_mosaic, ucm_scenes, valid_postgis_footprints
from pyproj import Transformer
from servers import (
    REPO,
    LiveServer,
    Served,
    live_server,
    prepared_database,
    server_env,
    shot,
)
from shapely.geometry import Polygon
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from index.filters import SceneFilter, SceneMeta
from model.archive import load_archive, scene_id
from model.geo import SceneGeo
from service.storage.db import SceneFootprint, make_engine
from service.storage.dialects import ids_in_box
from service.storage.scene_table import SceneTable


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "postgresql-without-postgis"])
def geo_live(
    request: pytest.FixtureRequest,
    served: Served,
    ucm_root: Path,
    geo_labels: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, str]]:
    """A server over the georeferenced subset (the served index holds the same scenes): on
    SQLite, on PostgreSQL with PostGIS (where the machine has it) and on PostgreSQL told not
    to use it, so listings go both ways."""
    workdir = tmp_path_factory.mktemp(f"geo-{request.param}")
    database = request.param.removesuffix("-without-postgis")
    extra = {"GRN_POSTGIS": "false"} if database != request.param else {}
    with live_server(database, served, ucm_root, geo_labels, workdir, **extra) as running:
        yield running


@pytest.fixture
def grid(ucm_root: Path, geo_labels: Path) -> dict[int, SceneGeo]:
    """Scene id -> footprint of the georeferenced subset's scenes that have one."""
    archive = load_archive(ucm_root, geo_labels)
    return {scene_id(s.name): s.geo for s in archive.scenes if s.geo is not None}


def test_footprints_import_and_the_table_follows_the_reference_filter(
    geo_live: tuple[LiveServer, str], grid: dict[int, SceneGeo]
) -> None:
    _, url = geo_live
    assert len(grid) == 120
    engine = make_engine(url)
    with Session(engine) as session:
        stored = {f.scene_id: f for f in session.scalars(select(SceneFootprint))}
    assert set(stored) == set(grid)
    with engine.connect() as connection:
        valid = valid_postgis_footprints(connection)
        if valid is not None:  # migration 0006 filled PostGIS's column from the GeoJSON
            assert valid == 120
        elif engine.dialect.name == "postgresql" and os.environ.get("CI"):
            raise AssertionError("CI installs PostGIS (.ci/run): its path must be tested")
    some = next(iter(grid))
    assert stored[some].crs == "EPSG:32611" and stored[some].source == "grid.tif"
    assert json.loads(stored[some].geometry)["type"] == "Polygon"
    assert np.allclose(
        [stored[some].min_lon, stored[some].min_lat, stored[some].max_lon, stored[some].max_lat],
        grid[some].bounds,
    )
    lon0, lat0 = next(iter(grid.values())).centre
    filters = [
        SceneFilter(bbox=(lon0 - 0.001, lat0 - 0.002, lon0 + 0.004, lat0 + 0.0005)),
        SceneFilter(
            within=Polygon([(lon0, lat0), (lon0 + 0.01, lat0 - 0.003), (lon0, lat0 - 0.006)])
        ),
        SceneFilter(near=(lon0 + 0.002, lat0 - 0.002, 300.0)),
        SceneFilter(near=(lon0, lat0, 150.0), bbox=(lon0 - 1, lat0 - 1, lon0 + 1, lat0 + 1)),
    ]
    with engine.connect() as connection:
        table = SceneTable.read(connection)
        for where in filters:
            expected = sorted(
                i
                for i in table.ids.tolist()
                if where.passes(
                    i,
                    SceneMeta(bounds=grid[i].bounds, centre=grid[i].centre)
                    if i in grid
                    else SceneMeta(),
                )
            )
            got = table.allowed_ids(where).tolist()
            assert got == expected and 0 < len(got) < 120, where
        # the spatial index answers the box as the arrays do
        box = filters[0].bbox
        indexed = sorted(connection.execute(ids_in_box(engine.dialect.name, box)).scalars())
        assert indexed == table.allowed_ids(SceneFilter(bbox=box)).tolist()
        if engine.dialect.name == "sqlite":  # the R*Tree follows deletes (its trigger)
            connection.execute(
                text("DELETE FROM scene_footprints WHERE scene_id = :i"), {"i": indexed[0]}
            )
            again = sorted(connection.execute(ids_in_box("sqlite", box)).scalars())
            assert again == indexed[1:]
            connection.rollback()
    engine.dispose()


def test_search_and_listing_keep_to_the_place_and_answer_geojson(
    geo_live: tuple[LiveServer, str], grid: dict[int, SceneGeo]
) -> None:
    server, _ = geo_live
    query = next(iter(grid))
    lon, lat = grid[query].centre
    bbox = [lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002]
    inside = {
        i
        for i, g in grid.items()
        if g.bounds[2] >= bbox[0] and g.bounds[0] <= bbox[2]
        and g.bounds[3] >= bbox[1] and g.bounds[1] <= bbox[3]
    }  # fmt: skip
    assert 3 < len(inside) < 60
    with server.client() as client:
        everywhere = client.post("/search", json={"scene_id": str(query), "k": 50}).json()
        assert any(int(h["id"]) not in inside for h in everywhere["hits"])
        found = client.post("/search", json={"scene_id": str(query), "k": 50, "bbox": bbox})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert {int(h["id"]) for h in hits} == inside - {query}
        assert all(h["footprint"]["type"] == "Polygon" for h in hits)

        geojson = client.post(
            "/search", json={"scene_id": str(query), "k": 10, "bbox": bbox, "format": "geojson"}
        )
        assert geojson.status_code == 200
        assert geojson.headers["content-type"].startswith("application/geo+json")
        collection = geojson.json()
        assert collection["type"] == "FeatureCollection"
        features = collection["features"]
        assert [f["properties"]["rank"] for f in features] == list(range(1, len(features) + 1))
        assert [f["id"] for f in features] == [h["id"] for h in hits[: len(features)]]
        first = features[0]["properties"]
        assert first["image_url"].endswith(f"/scenes/{features[0]['id']}/image")
        assert set(first) >= {"score", "labels", "image", "scene", "thumbnail_url"}

        near = client.post(
            "/search", json={"scene_id": str(query), "k": 50, "near": [lon, lat, 200.0]}
        ).json()["hits"]
        assert near and all(_metres(grid[int(h["id"])].centre, (lon, lat)) <= 200.0 for h in near)

        listed = client.get("/scenes", params={"bbox": ",".join(map(str, bbox)), "limit": 1000})
        assert listed.status_code == 200, listed.text
        assert {int(s["id"]) for s in listed.json()["scenes"]} == inside
        one = listed.json()["scenes"][0]
        assert one["place"]["crs"] == "EPSG:32611" and one["place"]["source"] == "grid.tif"
        assert len(one["place"]["window"]) == 4
        polygon = {
            "type": "Polygon",
            "coordinates": [[[bbox[0], bbox[1]], [bbox[2], bbox[1]], [bbox[2], bbox[3]],
                             [bbox[0], bbox[3]], [bbox[0], bbox[1]]]],
        }  # fmt: skip
        within = client.get("/scenes", params={"within": json.dumps(polygon), "limit": 1000})
        centred = {i for i in inside if bbox[0] <= grid[i].centre[0] <= bbox[2]
                   and bbox[1] <= grid[i].centre[1] <= bbox[3]}  # fmt: skip
        assert {int(s["id"]) for s in within.json()["scenes"]} == centred
        unplaced = client.get("/scenes", params={"limit": 1000}).json()["scenes"]
        assert sum(s["place"] is None for s in unplaced) == 6


def _metres(a: tuple[float, float], b: tuple[float, float]) -> float:
    from model.geo import haversine_m

    return float(haversine_m(np.array([a[0]]), np.array([a[1]]), b[0], b[1])[0])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        # (a west above the east is a box across the antimeridian, RFC 7946: issue 42)
        ({"bbox": [10, 51, 11, 50]}, "latitude minimum above its maximum"),
        ({"bbox": [10, 50, 11, 91]}, "latitude in [-90, 90]"),
        ({"bbox": [10, 50, 11]}, "at least 4"),
        ({"bbox": [200, 50, 201, 51]}, "longitude"),
        ({"near": [10, 50, -5]}, "positive number of metres"),
        (
            {
                "within": {
                    "type": "Polygon",
                    "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]],
                }
            },
            "not valid",
        ),
        (
            {
                "within": {
                    "type": "Polygon",
                    "coordinates": [[[170, 0], [-170, 0], [-170, 1], [170, 0]]],
                }
            },
            "antimeridian",
        ),
        ({"within": {"type": "LineString", "coordinates": [[0, 0], [1, 1]]}}, "Polygon"),
    ],
)
def test_bad_places_are_refused_by_name(
    geo_live: tuple[LiveServer, str], grid: dict[int, SceneGeo], body: dict, words: str
) -> None:
    server, _ = geo_live
    query = next(iter(grid))
    with server.client() as client:
        answer = client.post("/search", json={"scene_id": str(query), **body})
        assert answer.status_code == 422, answer.text
        assert words in answer.text
        if "bbox" in body and len(body["bbox"]) == 4:
            listed = client.get("/scenes", params={"bbox": ",".join(map(str, body["bbox"]))})
            # the listing parses its filter as the search does: the same 422, naming bbox
            assert listed.status_code == 422 and words in listed.json()["message"]
            assert listed.json()["message"].startswith("query.bbox: ")


def test_where_else_counts_the_top_hits_per_cell_and_per_source(
    geo_live: tuple[LiveServer, str], grid: dict[int, SceneGeo]
) -> None:
    server, _ = geo_live
    query = next(iter(grid))
    with server.client() as client:
        hits = client.post("/search", json={"scene_id": str(query), "k": 60}).json()["hits"]
        placed = [h for h in hits if int(h["id"]) in grid]
        assert 0 < len(placed) < len(hits)  # some of the top 60 have no footprint
        cells = client.post(
            "/search/density", json={"scene_id": str(query), "k": 60, "cell_m": 200}
        )
        assert cells.status_code == 200, cells.text
        body = cells.json()
        assert (body["hits"], body["placed"]) == (60, len(placed))
        assert sum(c["count"] for c in body["cells"]) == len(placed)
        counts = [c["count"] for c in body["cells"]]
        assert counts == sorted(counts, reverse=True) and len(counts) > 1
        for cell in body["cells"]:  # each cell's best hit lies in it
            lon, lat = grid[int(cell["best_id"])].centre
            min_lon, min_lat, max_lon, max_lat = cell["bounds"]
            assert min_lon <= lon <= max_lon and min_lat <= lat <= max_lat
        best = {int(h["id"]): h["score"] for h in placed}
        assert max(c["best_score"] for c in body["cells"]) == pytest.approx(max(best.values()))

        by_source = client.post(
            "/search/density", json={"scene_id": str(query), "k": 60, "by": "source"}
        ).json()
        assert [(c["key"], c["count"]) for c in by_source["cells"]] == [("grid.tif", len(placed))]

        geojson = client.post(
            "/search/density",
            json={"scene_id": str(query), "k": 60, "cell_m": 200, "format": "geojson"},
        )
        assert geojson.headers["content-type"].startswith("application/geo+json")
        features = geojson.json()["features"]
        assert [f["properties"]["count"] for f in features] == counts
        assert all(f["geometry"]["type"] == "Polygon" for f in features)
        refused = client.post("/search/density", json={"scene_id": str(query), "by": "county"})
        assert refused.status_code == 422 and "grid" in refused.text
        # a lone surrogate (valid JSON, not UTF-8) quoted back in the error, not a 500
        body = '{"scene_id": "' + str(query) + '", "labels_all": ["\\ud800x"]}'
        odd = client.post(
            "/search/density", content=body, headers={"content-type": "application/json"}
        )
        assert odd.status_code == 400, odd.text
        assert odd.json()["message"].startswith("unknown label(s) \ud800x;")
        broken = client.post("/search", content="{", headers={"content-type": "application/json"})
        assert broken.status_code == 422 and broken.json()["message"].startswith("body: ")


def _grn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args], cwd=REPO, capture_output=True, text=True
    )


def test_rasters_cut_imported_and_searched_find_their_own_tile_first(
    served: Served, ucm_root: Path, tmp_path: Path
) -> None:
    """The analyst's journey from rasters: two mosaics of real UCM scenes (8-bit with a
    nodata frame; 16-bit COG elsewhere), `grn tile` with half-tile overlap, `grn import`,
    `grn reindex`, then an upload of one source scene finds the tile cut from it first and
    the tiles overlapping it next, all on the map where the raster put them."""
    scenes = ucm_scenes(ucm_root, 15, seed=1)
    a = make_mosaic(tmp_path / "a.tif", scenes[:9], grid=(3, 3), nodata_border=128)
    far = (ORIGIN[0] + 5000.0, ORIGIN[1])
    make_mosaic(tmp_path / "b.tif", scenes[9:], (2, 3), kind="u16", cog=True, origin=far)
    tiles = tmp_path / "tiles"
    cut = _grn(
        "tile", str(a.path), str(tmp_path / "b.tif"), "--out", str(tiles), "--overlap", "0.5"
    )
    assert cut.returncode == 0, cut.stderr
    assert "next: grn import" in cut.stdout
    # a: 1024 px with a 128 px frame, stride 128: 7 x 7 windows, the 24 touching the frame
    # hold 25-44% nodata (kept at --max-nodata 0.5) except the four corners' 56% (skipped)
    archive = load_archive(tiles)
    names = {s.name for s in archive.scenes}
    assert sum(n.startswith("a_") for n in names) == 45
    assert sum(n.startswith("b_") for n in names) == 3 * 5
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    for step in (
        ("db", "upgrade", "--database-url", url),
        ("import", str(tiles), "--database-url", url, "--quiet"),
        ("reindex", "--model", str(served.model), "--archive", str(tiles),
         "--index-root", str(tmp_path / "index"), "--quiet"),
    ):  # fmt: skip
        done = _grn(*step)
        assert done.returncode == 0, (step, done.stderr)
    own = a.cell_offset(1, 1)  # the middle scene's window: (384, 384)
    own_name = f"a_{own[1] // 128}_{own[0] // 128}"
    env = server_env(Served(served.model, tmp_path / "index"), url, tmp_path)
    with LiveServer(env, tmp_path / "server.log") as server, server.client() as client:
        source = ucm_root / "images" / a.scenes[(1, 1)]
        source = next((ucm_root / "images").rglob(f"{a.scenes[(1, 1)]}.*"), source)
        found = client.post("/search", files={"file": source.open("rb")}, data={"k": "9"})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert hits[0]["image"] == own_name and hits[0]["score"] > 0.99
        top = archive.scenes[archive.index_of(own_name)].geo
        assert top is not None and top.window == (*own, 256, 256)

        # the tiles that share half or a quarter of its pixels come next
        def overlaps(name: str) -> bool:
            window = archive.scenes[archive.index_of(name)].geo.window  # type: ignore[union-attr]
            return abs(window[0] - own[0]) < 256 and abs(window[1] - own[1]) < 256

        assert sum(overlaps(h["image"]) for h in hits[1:5]) >= 3
        lon, lat = top.centre
        assert Polygon(hits[0]["footprint"]["coordinates"][0]).contains(shapely.Point(lon, lat))
        where = client.post(
            "/search/density",
            json={"scene_id": hits[0]["id"], "k": 20, "by": "source"},
        ).json()
        assert where["cells"][0]["key"] == "a.tif"


@pytest.fixture(scope="module")
def map_library() -> Path:
    """Leaflet from the npm registry where the server looks for it (`grn assets`)."""
    from service.api.assets import AssetError, fetch
    from service.settings import Settings

    folder = Settings().page.asset_dir
    try:
        fetch(folder)
    except AssetError:
        if os.environ.get("CI"):
            raise
        pytest.skip("the npm registry is not reachable for Leaflet")
    return folder


@pytest.fixture(scope="module")
def geo_page(
    served: Served,
    ucm_root: Path,
    geo_labels: Path,
    map_library: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveServer]:
    workdir = tmp_path_factory.mktemp("geo-page")
    url = f"sqlite:///{workdir / 'grn.db'}"
    prepared_database(url, ucm_root, geo_labels)
    env = server_env(served, url, workdir, GRN_ASSET_DIR=str(map_library))
    with LiveServer(env, workdir / "server.log") as server:
        yield server


def test_the_map_shows_the_hits_filters_by_a_drawn_area_and_opens_a_scene(
    geo_page: LiveServer, browser: Any, grid: dict[int, SceneGeo], axe_script: str
) -> None:
    from playwright.sync_api import expect

    query = str(next(iter(grid)))
    hits = httpx.post(f"{geo_page.url}/search", json={"scene_id": query, "k": 20}).json()["hits"]
    placed = [h for h in hits if int(h["id"]) in grid]
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.goto(f"{geo_page.url}/?scene={query}&k=20&limit=20")
    expect(page.locator("#map-panel")).to_be_visible()
    footprints = page.locator("#map path.footprint")
    expect(footprints).to_have_count(len(placed))
    # no basemap set: each hit's own thumbnail lies on its footprint
    expect(page.locator("#map img.footprint-image")).to_have_count(len(placed))
    page.wait_for_function(
        "[...document.querySelectorAll('#map img.footprint-image')]"
        ".every(i => i.complete && i.naturalWidth > 0)"
    )
    shot(page, "map-1-results")
    page.add_script_tag(content=axe_script)
    found = page.evaluate("async () => (await axe.run(document)).violations")
    serious = [
        (v["id"], [n["target"] for n in v["nodes"]][:3])
        for v in found
        if v["impact"] in ("serious", "critical")
    ]
    assert not serious, serious

    # a footprint clicked opens that scene in the viewer
    first = placed[0]
    page.locator(f"#map path.footprint[data-scene-id='{first['id']}']").click(force=True)
    expect(page.locator("#viewer")).to_be_visible()
    expect(page.locator("#viewer-hit-caption")).to_contain_text(first["image"])
    page.click("#viewer-close")

    # "where else?": the query's 200 most similar scenes counted per cell, shaded on the map
    page.click("#map-where")
    expect(page.locator("#map-density")).to_contain_text("cells of about")
    said = page.locator("#map-density").inner_text()
    cell_m = float(said.split("cells of about ")[1].split(" m")[0])
    cells = httpx.post(
        f"{geo_page.url}/search/density", json={"scene_id": query, "k": 200, "cell_m": cell_m}
    ).json()["cells"]
    expect(page.locator("#map path.density-cell")).to_have_count(len(cells))
    assert len(cells) > 1 and f"in {len(cells)} cells" in said
    shot(page, "map-2-where-else")
    page.click("#map-where")
    expect(page.locator("#map path.density-cell")).to_have_count(0)

    # an area drawn across the middle of the map keeps the results inside it
    page.click("#map-draw")
    expect(page.locator("#map-draw")).to_have_attribute("aria-pressed", "true")
    box = page.locator("#map").bounding_box()
    assert box is not None
    x0, y0 = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.3
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + box["width"] * 0.2, y0 + box["height"] * 0.2, steps=5)
    page.mouse.move(x0 + box["width"] * 0.4, y0 + box["height"] * 0.4, steps=5)
    page.mouse.up()
    expect(page.locator("#map-area")).to_be_visible()
    page.wait_for_function("new URLSearchParams(location.search).has('area')")
    area = [
        float(v)
        for v in page.evaluate("new URLSearchParams(location.search).get('area')").split(",")
    ]
    inside = {
        str(i) for i, g in grid.items()
        if g.bounds[2] >= area[0] and g.bounds[0] <= area[2]
        and g.bounds[3] >= area[1] and g.bounds[1] <= area[3]
    } - {query}  # fmt: skip
    assert 0 < len(inside) < len(grid) - 1
    page.wait_for_function(
        "document.querySelector('#results').getAttribute('aria-busy') === 'false'"
    )
    expect(page.locator("#results .card")).to_have_count(min(20, len(inside)))
    ids = page.eval_on_selector_all("#results .card", "cards => cards.map(c => c.dataset.sceneId)")
    assert set(ids) <= inside
    expect(footprints).to_have_count(min(20, len(inside)))
    shot(page, "map-3-area")

    # the area lives in the URL: a reload keeps it; clearing it brings the others back
    page.reload()
    expect(page.locator("#map-area")).to_be_visible()
    expect(page.locator("#results .card")).to_have_count(min(20, len(inside)))
    page.click("#map-clear")
    page.wait_for_function("!new URLSearchParams(location.search).has('area')")
    expect(page.locator("#results .card")).to_have_count(20)
    page.close()


def test_places_says_where_the_archive_lies(geo_page: LiveServer) -> None:
    places = httpx.get(f"{geo_page.url}/places").json()
    assert places["placed"] == 120 and places["scenes"] == 126 and places["map_library"]
    assert places["basemap"] is None
    min_lon, min_lat, max_lon, max_lat = places["bounds"]
    assert min_lon < max_lon and min_lat < max_lat


def test_the_map_library_installs_only_as_pinned_and_readable_by_every_user(
    map_library: Path, tmp_path: Path
) -> None:
    from service.api.assets import LEAFLET, AssetError, fetch, installed

    tampered = LEAFLET._replace(integrity="sha512-" + "A" * 86 + "==")
    with pytest.raises(AssetError, match="does not match its pinned integrity"):
        fetch(tmp_path, tampered)
    assert not installed(tmp_path) and not (tmp_path / "leaflet").exists()
    assert installed(map_library)
    # readable by every user: the image installs as root and serves as another user
    fresh = fetch(tmp_path / "fresh")
    for path in [fresh, *fresh.rglob("*")]:
        assert path.stat().st_mode & 0o005 == (0o005 if path.is_dir() else 0o004), path


def test_an_existing_database_upgrades_and_a_reimport_places_its_scenes(
    database_url: str, ucm_root: Path, ucm_subset: Path, geo_labels: Path
) -> None:
    """A database from before footprints (revision 0004) holding the archive: `grn db
    upgrade` adds the tables, and importing the archive again with its footprints places the
    scenes it holds without adding or changing a scene; on PostgreSQL with PostGIS, a
    database at 0005 with footprints gains the filled `geom` column."""
    from service.storage.migrate import downgrade, upgrade
    from service.usecases.importer import import_archive

    engine = make_engine(database_url)
    upgrade(engine)
    import_archive(engine, ucm_root, ucm_subset, progress=False)
    downgrade(engine, "0004_jobs")  # the archive's rows stay; what came after 0004 goes
    upgrade(engine)
    again = import_archive(engine, ucm_root, geo_labels, progress=False)
    assert (again.added, again.skipped, again.placed) == (0, 126, 120)
    with engine.connect() as connection:
        table = SceneTable.read(connection)
        assert int((~np.isnan(table.places[:, 0])).sum()) == 120
    assert import_archive(engine, ucm_root, geo_labels, progress=False).placed == 0
    if engine.dialect.name == "postgresql":
        downgrade(engine, "0005_scene_footprints")
        upgrade(engine)
        with engine.connect() as connection:
            valid = valid_postgis_footprints(connection)
            assert valid in (None, 120)
    engine.dispose()


def test_scenes_added_through_the_api_keep_their_place(
    served: Served, ucm_root: Path, geo_labels: Path, tmp_path: Path
) -> None:
    """POST /scenes: a GeoTIFF keeps its own georeferencing, a PNG takes a `footprint` field,
    and both are found by a box around them at once; a GeoTIFF whose CRS cannot be placed on
    the Earth is a 400 naming the problem, and nothing is added."""
    import rasterio
    from affine import Affine
    from rasterio.crs import CRS

    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, geo_labels)
    key = {"X-API-Key": "write-key-0123456789abcdef"}
    env = server_env(
        Served(served.model, served.index_root), url, tmp_path,
        GRN_WRITE_KEY=key["X-API-Key"], GRN_STORE_DIR=str(tmp_path / "store"),
    )  # fmt: skip
    far = (ORIGIN[0] + 20_000.0, ORIGIN[1] - 20_000.0)
    scenes = ucm_scenes(ucm_root, 2, seed=7)
    own = make_mosaic(tmp_path / "own.tif", scenes[:1], (1, 1), origin=far)
    local = tmp_path / "local.tif"
    wkt = 'LOCAL_CS["site",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    with rasterio.open(
        local, "w", driver="GTiff", width=64, height=64, count=3, dtype="uint8",
        crs=CRS.from_wkt(wkt), transform=Affine(0.3, 0, 0, 0, -0.3, 20),
    ) as dst:  # fmt: skip
        dst.write(np.full((3, 64, 64), 90, dtype=np.uint8))
    png = tmp_path / "plain.png"
    from PIL import Image

    Image.open(scenes[1]).convert("RGB").save(png)
    point = {"type": "Point", "coordinates": [-117.2, 33.5]}
    with LiveServer(env, tmp_path / "server.log") as server, server.client() as client:
        added = client.post(
            "/scenes", files={"file": own.path.open("rb")}, data={"name": "own"}, headers=key
        )
        assert added.status_code == 201, added.text
        scene = added.json()["scenes"][0]
        assert scene["place"]["crs"] == "EPSG:32611" and scene["place"]["window"] is None
        west, north = own.utm(0, 0)
        corner = Transformer.from_crs("EPSG:32611", "EPSG:4326", always_xy=True).transform(
            west, north
        )
        ring = np.asarray(scene["place"]["footprint"]["coordinates"][0])
        assert np.abs(ring - np.asarray(corner)).sum(axis=1).min() < 1e-7

        pinned = client.post(
            "/scenes", files={"file": png.open("rb")},
            data={"name": "pinned", "footprint": json.dumps(point)}, headers=key,
        )  # fmt: skip
        assert pinned.status_code == 201, pinned.text
        assert pinned.json()["scenes"][0]["place"]["footprint"] == point

        for scene_id_, (lon, lat) in (
            (scene["id"], corner),
            (pinned.json()["scenes"][0]["id"], point["coordinates"]),
        ):
            box = [lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01]
            hits = client.post(
                "/search", json={"scene_id": scene_id_, "k": 10, "bbox": box, "include_query": True}
            ).json()["hits"]
            assert [h["id"] for h in hits] == [scene_id_]

        # a corrected place moves the scene at once; null takes it off the map
        pinned_id = pinned.json()["scenes"][0]["id"]
        moved = {"type": "Point", "coordinates": [-116.5, 33.0]}
        patched = client.patch(f"/scenes/{pinned_id}", json={"footprint": moved}, headers=key)
        assert patched.status_code == 200 and patched.json()["place"]["footprint"] == moved

        def placed_in(lon: float, lat: float) -> list[str]:
            box = [lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01]
            found = client.post(
                "/search",
                json={"scene_id": pinned_id, "k": 10, "bbox": box, "include_query": True},
            )
            return [h["id"] for h in found.json()["hits"]]

        assert placed_in(-117.2, 33.5) == [] and placed_in(-116.5, 33.0) == [pinned_id]
        cleared = client.patch(f"/scenes/{pinned_id}", json={"footprint": None}, headers=key)
        assert cleared.status_code == 200 and cleared.json()["place"] is None
        assert placed_in(-116.5, 33.0) == []
        invalid = client.patch(
            f"/scenes/{pinned_id}", json={"footprint": {"type": "Point", "coordinates": [0, 95]}},
            headers=key,
        )  # fmt: skip
        assert invalid.status_code == 422 and "latitude" in invalid.text

        total = client.get("/scenes", params={"limit": 1}).json()["total"]
        stored = sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file())
        refused = client.post(
            "/scenes", files={"file": local.open("rb")}, data={"name": "local"}, headers=key
        )
        assert refused.status_code == 400, refused.text
        assert "reproject" in refused.json()["message"] or "WGS84" in refused.json()["message"]
        bad = client.post(
            "/scenes", files={"file": png.open("rb")},
            data={"name": "bad", "footprint": '{"type": "Point", "coordinates": [200, 0]}'},
            headers=key,
        )  # fmt: skip
        assert bad.status_code == 422 and "longitude" in bad.text
        assert client.get("/scenes", params={"limit": 1}).json()["total"] == total
        assert sorted(p for p in (tmp_path / "store").rglob("*") if p.is_file()) == stored


def test_place_filters_on_the_arrays_follow_the_reference_on_random_footprints() -> None:
    """Footprints of mixed sizes (tiles to a 0.5-degree scene), some scenes unplaced, and
    random boxes, polygons and circles, alone and together: the arrays' narrowed answer
    equals `SceneFilter.passes` scene by scene."""
    rng = np.random.default_rng(3)
    count = 3000
    ids = np.sort(rng.choice(2**62, count, replace=False)).astype(np.int64)
    west = rng.uniform(10.0, 12.0, count)
    south = rng.uniform(45.0, 46.0, count)
    size = np.where(rng.random(count) < 0.01, 0.5, rng.uniform(0.0005, 0.01, count))
    places = np.stack(
        [west, south, west + size, south + size * 0.7, west + size / 2, south + size * 0.35], axis=1
    )
    places[rng.random(count) < 0.05] = np.nan
    codes = np.zeros(count, dtype=np.int32)
    table = SceneTable(
        generation=1, ids=ids, names=np.asarray([str(i) for i in ids], dtype=object),
        folders=codes, folder_names=["f"], splits=codes, split_names=["train"],
        labels=np.zeros((count, 0), dtype=bool), label_names=[], label_sets=codes,
        label_set_names=[()], places=places,
    )  # fmt: skip
    metas = [
        SceneMeta()
        if np.isnan(p[0])
        else SceneMeta(bounds=tuple(p[:4]), centre=(float(p[4]), float(p[5])))  # type: ignore[arg-type]
        for p in places
    ]
    sizes = []
    for trial in range(40):
        lon, lat = rng.uniform(10.2, 11.8), rng.uniform(45.1, 45.9)
        half = rng.uniform(0.01, 0.3)
        box = (lon - half, lat - half / 2, lon + half, lat + half / 2)
        polygon = Polygon(
            [(lon, lat - half), (lon + half, lat), (lon, lat + half), (lon - half, lat)]
        )
        near = (lon, lat, float(rng.uniform(500, 20_000)))
        kind = trial % 4
        where = SceneFilter(
            bbox=box if kind in (0, 3) else None,
            within=polygon if kind in (1, 3) else None,
            near=near if kind in (2, 3) else None,
        )
        expected = [i for i, meta in zip(ids.tolist(), metas, strict=True) if where.passes(i, meta)]
        assert table.allowed_ids(where).tolist() == expected, (trial, where)
        sizes.append(len(expected))
    assert sum(0 < n < count for n in sizes) >= 30, sizes


def test_grn_search_takes_a_box_a_polygon_and_a_distance(
    served: Served, ucm_root: Path, geo_labels: Path, grid: dict[int, SceneGeo], tmp_path: Path
) -> None:
    """`grn search --bbox/--within/--near`, as typed, answers what the API answers."""
    url = f"sqlite:///{tmp_path / 'grn.db'}"
    prepared_database(url, ucm_root, geo_labels)
    env = {**os.environ, **server_env(served, url, tmp_path)}
    query = next(iter(grid))
    lon, lat = grid[query].centre
    box = [lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002]
    inside = {
        i for i, g in grid.items()
        if g.bounds[2] >= box[0] and g.bounds[0] <= box[2]
        and g.bounds[3] >= box[1] and g.bounds[1] <= box[3]
    } - {query}  # fmt: skip
    polygon = tmp_path / "area.geojson"
    polygon.write_text(json.dumps({
        "type": "Polygon",
        "coordinates": [[[box[0], box[1]], [box[2], box[1]], [box[2], box[3]],
                         [box[0], box[3]], [box[0], box[1]]]],
    }))  # fmt: skip

    def search(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "service.cli", "search", "--scene", str(query), "--k", "50",
             "--json", *args],
            cwd=REPO, capture_output=True, text=True, env=env,
        )  # fmt: skip

    boxed = search("--bbox", ",".join(map(str, box)))
    assert boxed.returncode == 0, boxed.stderr
    assert {int(h["id"]) for h in json.loads(boxed.stdout)["hits"]} == inside
    centred = search("--within", str(polygon), "--near", f"{lon},{lat},150")
    assert centred.returncode == 0, centred.stderr
    found = {int(h["id"]) for h in json.loads(centred.stdout)["hits"]}
    assert found and all(
        _metres(grid[i].centre, (lon, lat)) <= 150 and grid[i].centre[0] <= box[2] for i in found
    )
    # (a west above the east is a box across the antimeridian, RFC 7946: issue 42)
    wrong = search("--bbox", f"{box[0]},{box[3]},{box[2]},{box[1]}")
    assert wrong.returncode == 2 and "latitude minimum above its maximum" in wrong.stderr
