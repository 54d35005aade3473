"""Scenes across the antimeridian and round the south pole through the service (issue 42, item
2): GeoTIFFs written by rasterio (tests/model/test_lonlat.py) cut by `grn tile` as typed,
imported and indexed, then boxes across 180 (west > east), circles across it and at the pole,
and polygons split at 180 answer the reference filter's scenes in listings (SQL: SQLite's
R*Tree, PostgreSQL's box index, PostGIS) and searches (the catalog's arrays, which give the
vector store its allow-list), through a real server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from commands import grn
from geodata import fiji_raster, pole_raster, ucm_scenes, valid_postgis_footprints
from servers import LiveServer, Served, live_server
from shapely.geometry import MultiPolygon, box, mapping
from sqlalchemy import text

from index.filters import SceneFilter, SceneMeta
from index.stores.faiss_build import ReindexSettings, reindex
from model.archive import load_archive, scene_id
from model.geo import SceneGeo, polygon_from_geojson
from service.storage.db import make_engine
from service.storage.dialects import ids_in_box
from service.storage.scene_table import SceneTable

ACROSS = {"bbox": [179.99, -17.81, -179.99, -17.79]}
"""A box across the antimeridian, RFC 7946's way: west 179.99, east -179.99."""
PLACES: list[dict[str, Any]] = [
    ACROSS,
    {"bbox": [-179.995, -17.9, -179.97, -17.7]},  # west of 180 only: meets split footprints
    {"near": [179.995, -17.8, 1500.0]},  # a circle across 180
    {"near": [-179.985, -17.8, 1000.0]},
    {  # a box across 180 drawn as RFC 7946 asks: split there
        "within": mapping(
            MultiPolygon([box(179.99, -17.81, 180, -17.79), box(-180, -17.81, -179.985, -17.79)])
        )
    },
    {"bbox": [-30, -90, 30, -89.99]},  # at the south pole
    {"near": [120.0, -89.995, 700.0]},  # a circle holding the pole
    {"near": [0.0, -90.0, 1200.0]},
]  # fmt: skip


def reference(where: SceneFilter, geos: dict[int, SceneGeo]) -> set[int]:
    return {
        i for i, g in geos.items() if where.passes(i, SceneMeta(bounds=g.bounds, centre=g.centre))
    }


def to_filter(place: dict[str, Any]) -> SceneFilter:
    if "within" in place:
        return SceneFilter(within=polygon_from_geojson(place["within"]))
    key, value = next(iter(place.items()))
    return SceneFilter(**{key: tuple(value)})


@pytest.fixture(scope="module")
def far_archive(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`grn tile` as typed, over a raster across 180 near Fiji and one round the south pole
    (tiles of 256 px sharing half their side: 9 a raster)."""
    folder = tmp_path_factory.mktemp("far")
    scenes = ucm_scenes(ucm_root, 4)
    rasters = [fiji_raster(folder, scenes), pole_raster(folder, scenes)]
    out = folder / "archive"
    done = grn("tile", *map(str, rasters), "--out", str(out), "--overlap", "0.5")
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def far_geos(far_archive: Path) -> dict[int, SceneGeo]:
    archive = load_archive(far_archive, far_archive / "labels.csv")
    assert len(archive.scenes) == 18
    return {scene_id(s.name): s.geo for s in archive.scenes if s.geo is not None}


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "postgresql-without-postgis"])
def far_live(
    request: pytest.FixtureRequest,
    served: Served,
    far_archive: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[LiveServer, str]]:
    workdir = tmp_path_factory.mktemp(f"far-{request.param}")
    index = workdir / "index"
    reindex(
        served.model, far_archive, index, labels_csv=far_archive / "labels.csv",
        settings=ReindexSettings(factory="Flat"), device="cpu", progress=False,
    )  # fmt: skip
    database = request.param.removesuffix("-without-postgis")
    extra = {"GRN_POSTGIS": "false"} if database != request.param else {}
    with live_server(
        database, Served(served.model, index), far_archive, far_archive / "labels.csv",
        workdir, **extra,
    ) as running:  # fmt: skip
        yield running


def test_far_places_import_split_and_polar(
    far_live: tuple[LiveServer, str], far_geos: dict[int, SceneGeo]
) -> None:
    _, url = far_live
    engine = make_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT scene_id, min_lon, max_lon, min_lat, geometry FROM scene_footprints")
        ).all()
        kinds = {json.loads(r.geometry)["type"] for r in rows}
        assert len(rows) == 18 and kinds == {"Polygon", "MultiPolygon"}
        assert any(r.max_lon > 180 for r in rows)  # split at 180, bounds unwrapped
        assert any(r.min_lon == -180 and r.max_lon == 180 and r.min_lat == -90 for r in rows)
        assert valid_postgis_footprints(connection) in (None, 18)
        table = SceneTable.read(connection)
        box = SceneFilter(bbox=tuple(ACROSS["bbox"]))  # type: ignore[arg-type]
        indexed = sorted(connection.execute(ids_in_box(engine.dialect.name, box.bbox)).scalars())  # type: ignore[arg-type]
        assert indexed == table.allowed_ids(box).tolist() == sorted(reference(box, far_geos))
    engine.dispose()


@pytest.mark.parametrize("place", PLACES, ids=lambda p: json.dumps(p)[:40])
def test_far_places_list_and_search_as_the_reference(
    far_live: tuple[LiveServer, str], far_geos: dict[int, SceneGeo], place: dict[str, Any]
) -> None:
    server, _ = far_live
    expected = reference(to_filter(place), far_geos)
    assert 0 < len(expected) < len(far_geos), place
    with server.client() as client:
        if "within" not in place:
            key, value = next(iter(place.items()))
            listed = client.get("/scenes", params={key: ",".join(map(str, value)), "limit": 100})
            assert listed.status_code == 200, listed.text
            assert {int(s["id"]) for s in listed.json()["scenes"]} == expected
        query = next(iter(expected))
        found = client.post("/search", json={"scene_id": str(query), "k": 50, **place})
        assert found.status_code == 200, found.text
        assert {int(h["id"]) for h in found.json()["hits"]} == expected - {query}
        exported = client.post(
            "/search", json={"scene_id": str(query), "k": 50, "format": "geojson", **place}
        )
        shapes = {f["geometry"]["type"] for f in exported.json()["features"]}
        assert shapes <= {"Polygon", "MultiPolygon"}


def test_the_cli_searches_across_the_antimeridian(
    far_live: tuple[LiveServer, str], far_geos: dict[int, SceneGeo]
) -> None:
    server, _ = far_live
    expected = reference(to_filter(ACROSS), far_geos)
    query = next(iter(expected))
    done = grn(
        "search", "--scene", str(query), "--k", "50", "--bbox", ",".join(map(str, ACROSS["bbox"])),
        "--url", server.url, "--json",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert {int(h["id"]) for h in json.loads(done.stdout)["hits"]} == expected - {query}


def test_where_else_boxes_a_raster_across_the_antimeridian_tightly(
    far_live: tuple[LiveServer, str], far_geos: dict[int, SceneGeo]
) -> None:
    server, _ = far_live
    with server.client() as client:
        answer = client.post(
            "/search/density", json={"scene_id": str(next(iter(far_geos))), "by": "source"}
        )
        assert answer.status_code == 200, answer.text
        boxes = {cell["key"]: cell["bounds"] for cell in answer.json()["cells"]}
        # the Fiji raster's box crosses 180 (west > east, RFC 7946), 2.5 km wide, not 360 degrees
        west, south, east, north = boxes["fiji.tif"]
        assert 179.97 < west < 180 and -180 < east < -179.97 and south < -17.8 < north
        assert boxes["pole.tif"][::2] == [-180.0, 180.0] and boxes["pole.tif"][1] == -90.0
        shapes = client.post(
            "/search/density",
            json={"scene_id": str(next(iter(far_geos))), "by": "source", "format": "geojson"},
        )
        assert shapes.status_code == 200, shapes.text
        kinds = {f["id"]: f["geometry"]["type"] for f in shapes.json()["features"]}
        assert kinds["fiji.tif"] == "MultiPolygon"
