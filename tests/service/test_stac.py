"""`grn import --stac` as typed, over a small STAC catalog written here with pystac over real
GeoTIFFs (UCM scenes mosaicked with rasterio at known UTM transforms, `tests/geodata.py`):
each good item's asset tiled and imported with its footprint (checked against pyproj), its
date and its properties; each bad item reported with its problem while the others import;
`--max-cloud`, `--asset`, an item collection, a file that is not STAC, and a second import
that adds nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import pytest
from commands import grn
from geodata import EPSG, ORIGIN, PIXEL_M, SCENE_PX
from sqlalchemy import select
from sqlalchemy.orm import Session
from stac_catalog import BAD_ITEMS, SECOND_ORIGIN, TO_WGS84, write_test_catalog

from index.filters import utc
from service.storage.db import Scene, SceneFootprint, make_engine


@pytest.fixture(scope="module")
def catalog(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tests' catalog (`stac_catalog.write_test_catalog`): two good items, four bad."""
    return write_test_catalog(tmp_path_factory.mktemp("stac"), ucm_root)


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
    assert set(problems) == {f"item {name}" for name in BAD_ITEMS}
    for name, said in BAD_ITEMS.items():
        assert said in problems[f"item {name}"], name
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
