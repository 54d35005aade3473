"""`grn import --stac` as typed, over a small STAC catalog written here with pystac over real
GeoTIFFs (UCM scenes mosaicked with rasterio at known UTM transforms, `tests/geodata.py`):
each good item's asset tiled and imported with its footprint (checked against pyproj), its
date and its properties; each bad item reported with its problem while the others import;
`--max-cloud`, `--asset`, an item collection, a file that is not STAC, and a second import
that adds nothing."""

from __future__ import annotations

import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyproj
import pystac
import pytest
import rasterio
from commands import grn
from geodata import EPSG, ORIGIN, PIXEL_M, SCENE_PX, make_mosaic, ucm_scenes
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import box, mapping, shape
from sqlalchemy import select
from sqlalchemy.orm import Session

from index.filters import utc
from service.storage.db import Scene, SceneFootprint, make_engine

TO_WGS84 = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
SECOND_ORIGIN = (ORIGIN[0] + 5_000.0, ORIGIN[1] - 3_000.0)


def wgs84_box(origin: tuple[float, float], cols: int, rows: int) -> dict[str, Any]:
    """The GeoJSON outline of a mosaic of rows x cols scenes whose top-left is `origin`."""
    x0, y0 = origin
    x1, y1 = x0 + cols * SCENE_PX * PIXEL_M, y0 - rows * SCENE_PX * PIXEL_M
    (w, e), (s, n) = TO_WGS84.transform([x0, x1], [y1, y0])
    return mapping(box(min(w, e), min(s, n), max(w, e), max(s, n)))


def item(item_id: str, geometry: dict[str, Any] | None, when: datetime | None,
         assets: dict[str, str], **properties: Any) -> pystac.Item:  # fmt: skip
    found = pystac.Item(
        item_id, geometry, shape(geometry).bounds if geometry else None, when,
        properties, start_datetime=None if when else datetime(2020, 3, 1, 9, tzinfo=UTC),
        end_datetime=None if when else datetime(2020, 3, 1, 10, tzinfo=UTC),
    )  # fmt: skip
    for key, href in assets.items():
        kind, roles = (
            (pystac.MediaType.PNG, ["thumbnail"]) if key == "thumbnail"
            else (pystac.MediaType.COG, ["data"])
        )  # fmt: skip
        found.add_asset(key, pystac.Asset(href, media_type=kind, roles=roles))
    return found


@pytest.fixture(scope="module")
def catalog(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-contained catalog: two good items (2 tiles and 1 tile) and four bad ones."""
    root = tmp_path_factory.mktemp("stac")
    scenes = ucm_scenes(ucm_root, 4)
    make_mosaic(root / "rasters" / "a.tif", scenes[:2], grid=(1, 2))
    make_mosaic(root / "rasters" / "b.tif", scenes[2:3], grid=(1, 1), cog=True,
                origin=SECOND_ORIGIN)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(root / "rasters" / "nocrs.tif", "w", driver="GTiff", width=256,
                           height=256, count=3, dtype="uint8") as dst:  # fmt: skip
            dst.write(np.zeros((3, 256, 256), np.uint8))
    here = wgs84_box(ORIGIN, 2, 1)
    top = pystac.Catalog("ucm-stac", "UCM scenes as STAC items")
    top.add_items([
        item("scene-a", here, datetime(2021, 6, 1, 10, tzinfo=UTC),
             {"visual": str(root / "rasters" / "a.tif")},
             platform="ucm-plane", gsd=0.3, **{"eo:cloud_cover": 5.0}),
        item("scene-b", wgs84_box(SECOND_ORIGIN, 1, 1), None,
             {"visual": str(root / "rasters" / "b.tif"), "data": str(root / "rasters" / "a.tif")},
             **{"eo:cloud_cover": 60.0}),
        item("no-geometry", None, datetime(2021, 1, 1, tzinfo=UTC),
             {"visual": str(root / "rasters" / "a.tif")}),
        item("bad-date", here, datetime(2021, 1, 1, tzinfo=UTC),
             {"visual": str(root / "rasters" / "a.tif")}),
        item("no-visual", here, datetime(2021, 1, 1, tzinfo=UTC),
             {"thumbnail": str(root / "rasters" / "a.tif")}),
        item("no-crs", here, datetime(2021, 1, 1, tzinfo=UTC),
             {"visual": str(root / "rasters" / "nocrs.tif")}),
    ])  # fmt: skip
    top.normalize_hrefs(str(root / "catalog"))
    top.make_all_asset_hrefs_relative()
    top.save(pystac.CatalogType.SELF_CONTAINED)
    bad = root / "catalog" / "bad-date" / "bad-date.json"
    text = json.loads(bad.read_text())
    text["properties"]["datetime"] = "the first of June"
    bad.write_text(json.dumps(text))
    return root / "catalog" / "catalog.json"


def database(tmp_path: Path) -> dict[str, str]:
    env = {"GRN_DATABASE_URL": f"sqlite:///{tmp_path / 'grn.db'}"}
    assert grn("db", "upgrade", env=env).returncode == 0
    return env


def stored(env: dict[str, str]) -> dict[str, tuple[Scene, SceneFootprint | None]]:
    engine = make_engine(env["GRN_DATABASE_URL"])
    with Session(engine, expire_on_commit=False) as session:
        rows = {s.name: (s, s.footprint) for s in session.scalars(select(Scene))}
    engine.dispose()
    return rows


def test_a_catalog_imports_its_good_items_and_names_the_bad(catalog: Path, tmp_path: Path) -> None:
    env = database(tmp_path)
    tiles = tmp_path / "tiles"
    done = grn("import", "--stac", str(catalog), "--tiles", str(tiles), "--quiet", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("imported 3 scenes (0 already present) from 2 of 6 STAC items")
    problems = dict(line.strip().split(": ", 1) for line in done.stderr.strip().splitlines())
    assert set(problems) == {"item no-geometry", "item bad-date", "item no-visual", "item no-crs"}
    assert "has no geometry" in problems["item no-geometry"]
    assert "'the first of June' is not an ISO 8601" in problems["item bad-date"]
    assert "no visual or GeoTIFF data asset (its assets: thumbnail)" in problems["item no-visual"]
    assert "has no coordinate reference system" in problems["item no-crs"]
    scenes = stored(env)
    assert sorted(scenes) == ["scene-a_0_0", "scene-a_0_1", "scene-b_0_0"]
    for name, (scene, place) in scenes.items():
        assert place is not None and place.crs == f"EPSG:{EPSG}"
        # the tile's corners, reprojected by pyproj from the mosaic's known transform
        col = int(name[-1])
        x0, y0 = SECOND_ORIGIN if name.startswith("scene-b") else ORIGIN
        x0 += col * SCENE_PX * PIXEL_M
        xs = [x0, x0 + SCENE_PX * PIXEL_M] * 2
        ys = [y0, y0, y0 - SCENE_PX * PIXEL_M, y0 - SCENE_PX * PIXEL_M]
        corners = np.stack(TO_WGS84.transform(xs, ys), axis=1)
        vertices = np.asarray(json.loads(place.geometry)["coordinates"][0])
        for corner in corners:
            assert np.abs(vertices - corner).max(axis=1).min() < 1e-7, name
        meta = json.loads(scene.meta or "{}")["stac"]
        assert meta["item"] == name[:7] and meta["asset"] == "visual"
        assert scene.folder == name[:7]
    a, _ = scenes["scene-a_0_0"]
    assert utc(a.acquired) == datetime(2021, 6, 1, 10, tzinfo=UTC)
    properties = json.loads(a.meta or "{}")["stac"]["properties"]
    assert properties["platform"] == "ucm-plane" and properties["gsd"] == 0.3
    assert properties["eo:cloud_cover"] == 5.0
    b, _ = scenes["scene-b_0_0"]
    assert utc(b.acquired) == datetime(2020, 3, 1, 9, tzinfo=UTC)  # its start_datetime

    again = grn("import", "--stac", str(catalog), "--tiles", str(tiles), "--quiet", env=env)
    assert again.returncode == 0 and again.stdout.startswith("imported 0 scenes (3 already")
    assert len(stored(env)) == 3


def test_max_cloud_asset_and_an_item_collection(catalog: Path, tmp_path: Path) -> None:
    env = database(tmp_path)
    clear = grn("import", "--stac", str(catalog), "--max-cloud", "10", "--tiles",
                str(tmp_path / "clear"), "--quiet", env=env)  # fmt: skip
    assert clear.returncode == 0, clear.stderr
    assert "2 items left out by max_cloud" in clear.stdout  # scene-b (60), no-crs (none)
    assert sorted(stored(env)) == ["scene-a_0_0", "scene-a_0_1"]

    good = pystac.Item.from_file(str(catalog.parent / "scene-b" / "scene-b.json"))
    good.make_asset_hrefs_absolute()
    collection = tmp_path / "items.json"
    pystac.ItemCollection([good]).save_object(dest_href=str(collection))
    env = database(tmp_path / "other")
    by_data = grn("import", "--stac", str(collection), "--asset", "data", "--tiles",
                  str(tmp_path / "data"), "--quiet", env=env)  # fmt: skip
    assert by_data.returncode == 0, by_data.stderr
    scenes = stored(env)
    assert sorted(scenes) == ["scene-b_0_0", "scene-b_0_1"]  # the data asset is a.tif
    assert json.loads(scenes["scene-b_0_0"][0].meta or "{}")["stac"]["asset"] == "data"


def test_not_stac_is_one_line_and_imports_nothing(tmp_path: Path) -> None:
    env = database(tmp_path)
    (tmp_path / "not.json").write_text(json.dumps({"hello": "world"}))
    (tmp_path / "not-json.json").write_text("<html>")
    for source, said in (
        ("not.json", "not a STAC catalog, collection, item collection or item"),
        ("not-json.json", "cannot be read as STAC JSON"),
        ("missing.json", "cannot be read as STAC JSON"),
    ):
        refused = grn("import", "--stac", str(tmp_path / source), env=env)
        assert refused.returncode == 1, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], lines
    assert stored(env) == {}
    both = grn("import", str(tmp_path), "--stac", str(tmp_path / "not.json"), env=env)
    assert both.returncode == 2
