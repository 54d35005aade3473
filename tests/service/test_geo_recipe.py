"""docs/geo.md's recipe "scenes like this, at other places, in the same month", followed step
by step through a real server on SQLite and on PostgreSQL with PostGIS: GeoTIFFs of real UCM
scenes at known UTM places, dated by their TIFFTAG_DATETIME, are added through `POST /scenes`
(which reads their footprint and date); the query's month comes from `GET /scenes/{id}`, its
place's scenes from `GET /scenes/{id}/same-place`, and `POST /search` combines `scene_id`,
`month`, `bbox` and `exclude_ids`. Every hit is of that month and shares no area with the
query's footprint, and the hits are exactly the scenes that should be."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyproj
from dates import WRITE_KEY
from geodata import EPSG, ORIGIN, PIXEL_M, SCENE_PX, make_mosaic, ucm_scenes
from servers import LiveServer
from shapely.geometry import shape

from model.archive import Archive
from service.storage.db import make_engine
from service.storage.dialects import postgis_schema

SIDE = SCENE_PX * PIXEL_M
BASE = (ORIGIN[0] + 20_000.0, ORIGIN[1] - 20_000.0)
"""Where the query lies: 20 km east and south of the dated archive's grid of scenes."""
ELSEWHERE = (BASE[0] + 3_000.0, BASE[1] - 2_000.0)
RASTERS: dict[str, tuple[int, tuple[float, float], str]] = {
    "query": (0, BASE, "2021:07:10 10:00:00"),
    "again-2022-07": (0, BASE, "2022:07:05 09:00:00"),  # the same place, a year later
    "again-2021-01": (0, BASE, "2021:01:10 10:00:00"),
    "shifted-40": (0, (BASE[0] + 0.4 * SIDE, BASE[1]), "2020:07:20 10:00:00"),  # covers 0.6
    "shifted-80": (1, (BASE[0] + 0.8 * SIDE, BASE[1]), "2019:07:15 10:00:00"),  # covers 0.2
    "neighbour": (1, (BASE[0] + SIDE, BASE[1]), "2023:07:01 10:00:00"),  # touches it only
    "elsewhere-2020-07": (0, ELSEWHERE, "2020:07:20 10:00:00"),
    "elsewhere-2021-02": (0, ELSEWHERE, "2021:02:01 10:00:00"),
    "far-2021-07": (0, (BASE[0] + 60_000.0, BASE[1]), "2021:07:11 10:00:00"),  # outside the box
}
"""Each raster: which UCM scene, its top-left corner (UTM zone 11N) and its acquisition tag."""


def add_rasters(server: LiveServer, ucm_root: Path, folder: Path) -> dict[str, str]:
    """`RASTERS` as GeoTIFFs added through `POST /scenes`: each one's id by name."""
    scenes = ucm_scenes(ucm_root, 2, seed=5)
    ids = {}
    with server.client() as client:
        for name, (scene, origin, when) in RASTERS.items():
            tif = make_mosaic(folder / f"{name}.tif", [scenes[scene]], grid=(1, 1),
                              origin=origin, tags={"": {"TIFFTAG_DATETIME": when}})  # fmt: skip
            added = client.post(
                "/scenes", files={"file": (f"{name}.tif", tif.path.read_bytes())},
                data={"name": name}, headers={"X-API-Key": WRITE_KEY},
            )  # fmt: skip
            assert added.status_code == 201, added.text
            ids[name] = added.json()["scenes"][0]["id"]
    return ids


def searched(server: LiveServer, **request: Any) -> list[dict[str, Any]]:
    with server.client() as client:
        answer = client.post("/search", json={"k": 100, **request})
    assert answer.status_code == 200, answer.text
    hits: list[dict[str, Any]] = answer.json()["hits"]
    return hits


def test_like_this_at_other_places_in_the_same_month(
    dated: tuple[LiveServer, Archive], ucm_root: Path, tmp_path: Path
) -> None:
    server, _ = dated
    engine = make_engine(server.env["GRN_DATABASE_URL"])
    with engine.connect() as connection:  # PostgreSQL's same-place shares come from PostGIS
        assert (postgis_schema(connection) is None) == (connection.dialect.name == "sqlite")
    engine.dispose()
    ids = add_rasters(server, ucm_root, tmp_path)
    names = {v: k for k, v in ids.items()}
    query = ids["query"]
    to_wgs84 = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    (west, east), (south, north) = to_wgs84.transform(
        [BASE[0] - 1_000, BASE[0] + 5_000], [BASE[1] - 5_000, BASE[1] + 1_000]
    )
    area = [west, south, east, north]
    with server.client() as client:
        # 1. the month of its acquisition (UTC)
        scene = client.get(f"/scenes/{query}").json()
        assert scene["acquired"] == "2021-07-10T10:00:00Z"
        month = int(scene["acquired"][5:7])
        # 2. the scenes of its place: any share of it (a tiny min_overlap), or half (default)
        place = client.get(
            f"/scenes/{query}/same-place", params={"min_overlap": 1e-6, "limit": 1000}
        ).json()
        same = [s["id"] for s in place["scenes"]]
        assert {names[i] for i in same} == {
            "again-2022-07", "again-2021-01", "shifted-40", "shifted-80"
        }  # fmt: skip
        half = client.get(f"/scenes/{query}/same-place").json()["scenes"]
        assert {names[s["id"]] for s in half} == {"again-2022-07", "again-2021-01", "shifted-40"}

    # 3. like it, in its month, in the box, not at its place
    hits = searched(server, scene_id=query, month=[month], bbox=area, exclude_ids=same)
    assert {names.get(h["id"]) for h in hits} == {"neighbour", "elsewhere-2020-07"}
    footprint = shape(scene["place"]["footprint"])
    for hit in hits:
        assert hit["acquired"][5:7] == "07", hit
        shared = footprint.intersection(shape(hit["footprint"])).area / footprint.area
        assert shared < 1e-9, (names[hit["id"]], shared)

    # what each step takes away: its place's July scenes, other months, the far one
    unexcluded = searched(server, scene_id=query, month=[month], bbox=area)
    assert {names.get(h["id"]) for h in unexcluded} == {
        "neighbour", "elsewhere-2020-07", "again-2022-07", "shifted-40", "shifted-80"
    }  # fmt: skip
    any_month = searched(server, scene_id=query, bbox=area, exclude_ids=same)
    assert {names.get(h["id"]) for h in any_month} == {
        "neighbour", "elsewhere-2020-07", "elsewhere-2021-02"
    }  # fmt: skip
    anywhere = searched(server, scene_id=query, month=[month], exclude_ids=same)
    assert {"far-2021-07", "neighbour", "elsewhere-2020-07"} <= {
        names.get(h["id"]) for h in anywhere
    }
