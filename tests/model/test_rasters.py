"""Cutting georeferenced rasters into scenes, on mosaics of real UCM scenes with a known UTM
transform (tests/geodata.py)."""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from commands import grn
from geodata import EPSG, PIXEL_M, SCENE_PX, U16_OFFSET, U16_SCALE, Mosaic, make_mosaic, ucm_scenes
from rasterio.crs import CRS
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import Affine

from model.archive import load_archive
from model.imageio import read_image
from model.rasters import RasterError, footprint_of_file
from model.tile_archive import LABELS_HEADER, encode_png, tile_rasters
from model.tiling import TileGrid, TileImage, plan_tiles, read_tiles

TO_WGS84 = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)


@pytest.fixture(scope="module")
def scenes(ucm_root: Path) -> list[Path]:
    return ucm_scenes(ucm_root, 9)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mosaics")


@pytest.fixture(scope="module")
def rgb8(scenes: list[Path], folder: Path) -> Mosaic:
    return make_mosaic(folder / "rgb8.tif", scenes, grid=(2, 3))


@pytest.fixture(scope="module")
def square(scenes: list[Path], folder: Path) -> Mosaic:
    return make_mosaic(folder / "square.tif", scenes, grid=(3, 3))


def tiles_by_cell(images: list[TileImage]) -> dict[tuple[int, int], np.ndarray]:
    return {(i.tile.row, i.tile.col): i.rgb for i in images if i.rgb is not None}


def without_crs(path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8"
        ) as dst:
            dst.write(np.full((3, 300, 300), 90, dtype=np.uint8))
    return path


def test_footprints_are_the_windows_corners_reprojected(rgb8: Mosaic) -> None:
    plan = plan_tiles(rgb8.path)
    assert plan.crs == f"EPSG:{EPSG}" and plan.grid == (2, 3)
    for tile in plan.tiles:
        col_off, row_off = tile.col * SCENE_PX, tile.row * SCENE_PX
        assert tile.geo.window == (col_off, row_off, SCENE_PX, SCENE_PX)
        assert tile.geo.crs == f"EPSG:{EPSG}" and tile.geo.source == "rgb8.tif"
        vertices = np.asarray(shapely.get_coordinates(tile.geo.footprint))
        # The edges stay straight at this scale: the densified points are simplified away.
        assert len(vertices) == 5
        for dc, dr in ((0, 0), (1, 0), (1, 1), (0, 1)):
            east, north = rgb8.utm(col_off + dc * SCENE_PX, row_off + dr * SCENE_PX)
            lon, lat = TO_WGS84.transform(east, north)
            assert np.abs(vertices - [lon, lat]).max(axis=1).min() < 1e-7
    # Tile (0, 0)'s top-left corner is the mosaic's origin: easting 500000 is zone 11's
    # central meridian, -117 degrees.
    assert shapely.get_coordinates(plan.tiles[0].geo.footprint)[:, 0].min() == pytest.approx(
        -117.0, abs=1e-9
    )
    assert plan.tiles[0].geo.footprint.exterior.is_ccw  # GeoJSON's winding


def test_tiles_in_pixels_cover_whole_tiles_only(square: Mosaic) -> None:
    assert len(plan_tiles(square.path).tiles) == 9
    assert len(plan_tiles(square.path, TileGrid(tile_px=128)).tiles) == 36
    # 768 = 2 * 300 + 168: the partial strip along the right and bottom edges is left out.
    plan = plan_tiles(square.path, TileGrid(tile_px=300))
    assert plan.grid == (2, 2) and plan.tiles[-1].window == (300, 300, 300, 300)
    # Half overlap: tiles start every 128 pixels, (768 - 256) / 128 + 1 = 5 a side.
    overlapping = plan_tiles(square.path, TileGrid(overlap=0.5))
    assert overlapping.grid == (5, 5) and overlapping.stride_px == (128, 128)
    assert overlapping.tiles[1].window == (128, 0, 256, 256)


def test_tiles_in_metres_are_resampled_to_the_output_size(square: Mosaic) -> None:
    plan = plan_tiles(square.path, TileGrid(tile_m=153.6))  # 512 pixels of 0.3 m
    assert plan.window_px == (512, 512) and plan.out_size == SCENE_PX and plan.grid == (1, 1)
    assert plan_tiles(square.path, TileGrid(tile_m=153.6, overlap=0.5)).grid == (2, 2)
    (image,) = read_tiles(plan)
    assert image.rgb is not None and image.rgb.shape == (SCENE_PX, SCENE_PX, 3)
    # Averaged 2 x 2: compare with the four scenes it spans, shrunk by block means.
    whole = np.zeros((512, 512, 3))
    for (r, c), pixels in square.pixels.items():
        if r < 2 and c < 2:
            whole[r * 256 : (r + 1) * 256, c * 256 : (c + 1) * 256] = pixels
    shrunk = whole.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
    assert np.abs(image.rgb - shrunk).mean() < 1.0
    # 76.8 m is exactly one scene: read as it is.
    same = tiles_by_cell(list(read_tiles(plan_tiles(square.path, TileGrid(tile_m=76.8)))))
    assert all(np.array_equal(same[cell], square.pixels[cell]) for cell in square.pixels)


def test_an_8bit_tile_is_the_ucm_scene_placed_there(rgb8: Mosaic) -> None:
    tiles = tiles_by_cell(list(read_tiles(plan_tiles(rgb8.path))))
    assert tiles.keys() == rgb8.pixels.keys()
    for cell, pixels in rgb8.pixels.items():
        assert tiles[cell].dtype == np.uint8
        assert np.array_equal(tiles[cell], pixels), f"tile {cell} is not {rgb8.scenes[cell]}"


def test_a_cog_reads_as_the_same_tiles(scenes: list[Path], folder: Path) -> None:
    cog = make_mosaic(folder / "cog.tif", scenes, grid=(2, 3), cog=True)
    with rasterio.open(cog.path) as src:
        assert src.overviews(1), "the COG has overviews"
    tiles = tiles_by_cell(list(read_tiles(plan_tiles(cog.path))))
    assert all(np.array_equal(tiles[cell], cog.pixels[cell]) for cell in cog.pixels)


def test_16bit_tiles_are_stretched_like_single_images(scenes: list[Path], folder: Path) -> None:
    u16 = make_mosaic(folder / "u16.tif", scenes, grid=(2, 3), kind="u16")
    with rasterio.open(u16.path) as src:
        assert src.dtypes[0] == "uint16"
        assert src.read(1, window=((0, 1), (0, 1)))[0, 0] == (
            int(u16.pixels[(0, 0)][0, 0, 0]) * U16_SCALE + U16_OFFSET
        )
    plan = plan_tiles(u16.path)
    assert plan.dtype == "uint16" and plan.grid == (2, 3)
    tiles = tiles_by_cell(list(read_tiles(plan)))
    for cell, pixels in u16.pixels.items():
        tile = tiles[cell]
        assert tile.shape == (SCENE_PX, SCENE_PX, 3) and tile.dtype == np.uint8
        assert tile.min() == 0 and tile.max() == 255  # the 2-98 % stretch spans the range
        for band in range(3):
            a, b = tile[..., band].ravel(), pixels[..., band].ravel().astype(np.float64)
            assert np.corrcoef(a, b)[0, 1] > 0.95


def test_4band_rasters_read_their_bands_by_number(scenes: list[Path], folder: Path) -> None:
    four = make_mosaic(folder / "four.tif", scenes, grid=(2, 3), kind="4band")
    default = plan_tiles(four.path)
    assert default.band_count == 4 and default.bands == (1, 2, 3) and default.grid == (2, 3)
    tiles = tiles_by_cell(list(read_tiles(default)))
    assert all(np.array_equal(tiles[cell], four.pixels[cell]) for cell in four.pixels)
    false_colour = tiles_by_cell(list(read_tiles(plan_tiles(four.path, TileGrid(bands=(4, 3, 2))))))
    with rasterio.open(four.path) as src:
        nir = src.read(4, window=((0, 256), (0, 256)))
    assert np.array_equal(false_colour[(0, 0)][..., 0], nir)
    assert np.array_equal(false_colour[(0, 0)][..., 1], four.pixels[(0, 0)][..., 2])
    grey = tiles_by_cell(list(read_tiles(plan_tiles(four.path, TileGrid(bands=[2])))))[(1, 2)]
    assert (grey == four.pixels[(1, 2)][..., 1:2]).all()


def test_tiles_mostly_nodata_are_skipped(scenes: list[Path], folder: Path) -> None:
    framed = make_mosaic(folder / "framed.tif", scenes, grid=(2, 3), nodata_border=SCENE_PX)
    plan = plan_tiles(framed.path)
    assert plan.grid == (4, 5)
    images = list(read_tiles(plan))
    kept = tiles_by_cell(images)
    assert sorted(kept) == [(r + 1, c + 1) for r in range(2) for c in range(3)]
    assert sum(i.nodata_fraction == 1.0 for i in images) == 14
    for (r, c), pixels in framed.pixels.items():
        assert np.array_equal(kept[(r + 1, c + 1)], pixels)
    # In metres (512 pixels read as 256) with half overlap, the mask is resampled too.
    coarse = list(read_tiles(plan_tiles(framed.path, TileGrid(tile_m=153.6, overlap=0.5))))
    rows, cols = np.array([0.5, 1, 0.5]), np.array([0.5, 1, 1, 0.5])  # valid share
    expected = 1 - np.outer(rows, cols).ravel()
    assert [i.nodata_fraction for i in coarse] == pytest.approx(expected.tolist())
    assert len(tiles_by_cell(coarse)) == 8
    # The same frame as a nodata value (16-bit).
    u16 = make_mosaic(folder / "framed16.tif", scenes, grid=(2, 3), kind="u16", nodata_border=256)
    with rasterio.open(u16.path) as src:
        assert src.nodata == 0
    images = list(read_tiles(plan_tiles(u16.path)))
    assert sorted(tiles_by_cell(images)) == sorted(kept)
    assert sum(i.nodata_fraction == 1.0 for i in images) == 14
    # A 128-pixel frame: corner tiles are 3/4 no-data, edge tiles 1/2, the two inner ones 0.
    half = make_mosaic(folder / "half.tif", scenes, grid=(2, 3), nodata_border=128)
    images = list(read_tiles(plan_tiles(half.path)))
    assert sorted(round(i.nodata_fraction, 6) for i in images) == [0.0] * 2 + [0.5] * 6 + [0.75] * 4
    assert len(tiles_by_cell(images)) == 8  # 0.5 is not more than max_nodata=0.5
    assert len(tiles_by_cell(list(read_tiles(plan_tiles(half.path), max_nodata=0.4)))) == 2
    top_edge = tiles_by_cell(images)[(0, 1)]
    assert (top_edge[:128] == 0).all()  # the missing half is black
    assert np.array_equal(top_edge[128:, :128], half.pixels[(0, 0)][:128, 128:])
    assert np.array_equal(top_edge[128:, 128:], half.pixels[(0, 1)][:128, :128])


def test_tile_rasters_writes_an_archive_with_footprints(
    rgb8: Mosaic, scenes: list[Path], tmp_path: Path
) -> None:
    framed = make_mosaic(tmp_path / "framed.tif", scenes, grid=(2, 3), nodata_border=SCENE_PX)
    out = tmp_path / "archive"
    report = tile_rasters([rgb8.path, framed.path], out, split="val")
    assert (report.written, report.skipped_nodata) == (12, 14)
    assert [(r.written, r.skipped_nodata) for r in report.rasters] == [(6, 0), (6, 14)]
    with (out / "labels.csv").open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert tuple(rows[0]) == LABELS_HEADER
    assert tuple(rows[0]) == ("image", "scene", "split", "footprint", "lon", "lat", "crs",
                              "source", "window")  # fmt: skip
    by_name = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[1:]}
    assert len(by_name) == 12
    row = by_name["rgb8_1_2"]
    assert (row["scene"], row["split"], row["crs"], row["source"], row["window"]) == (
        "rgb8", "val", f"EPSG:{EPSG}", "rgb8.tif", "512,256,256,256"
    )  # fmt: skip
    assert json.loads(row["footprint"])["type"] == "Polygon"
    centre = TO_WGS84.transform(*rgb8.utm(512 + 128, 256 + 128))
    assert float(row["lon"]) == pytest.approx(centre[0], abs=1e-7)
    assert float(row["lat"]) == pytest.approx(centre[1], abs=1e-7)
    assert np.array_equal(read_image(out / "images" / "rgb8_1_2.png"), rgb8.pixels[(1, 2)])
    assert np.array_equal(read_image(out / "images" / "framed_2_3.png"), framed.pixels[(1, 2)])
    archive = load_archive(out)
    assert len(archive) == 12 and archive.label_names == []
    geo = archive.scenes[archive.index_of("framed_1_1")].geo
    assert geo is not None and geo.window == (256, 256, 256, 256)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive", "framed.tif"]


def test_tile_rasters_refuses_a_folder_that_holds_files(rgb8: Mosaic, tmp_path: Path) -> None:
    out = tmp_path / "archive"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RasterError, match="already holds files"):
        tile_rasters([rgb8.path], out)
    assert (out / "notes.txt").read_text() == "mine"
    report = tile_rasters([rgb8.path], out, replace=True)
    assert report.written == 6 and not (out / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["archive"]


def test_footprint_of_a_geotiff_scene(rgb8: Mosaic, tmp_path: Path) -> None:
    geo = footprint_of_file(rgb8.path)
    assert geo is not None and geo.crs == f"EPSG:{EPSG}"
    vertices = np.asarray(shapely.get_coordinates(geo.footprint))
    for col, row in ((0, 0), (768, 0), (768, 512), (0, 512)):
        lon_lat = TO_WGS84.transform(*rgb8.utm(col, row))
        assert np.abs(vertices - lon_lat).max(axis=1).min() < 1e-7
    assert footprint_of_file(without_crs(tmp_path / "plain.tif")) is None
    png = tmp_path / "scene.png"
    png.write_bytes(encode_png(rgb8.pixels[(0, 0)]))
    assert footprint_of_file(png) is None


def local_crs(path: Path) -> Path:
    wkt = (
        'LOCAL_CS["site grid",LOCAL_DATUM["site",0],UNIT["metre",1],AXIS["X",EAST],AXIS["Y",NORTH]]'
    )
    with rasterio.open(
        path, "w", driver="GTiff", width=300, height=300, count=3, dtype="uint8",
        crs=CRS.from_wkt(wkt), transform=Affine(PIXEL_M, 0, 0, 0, -PIXEL_M, 90),
    ) as dst:  # fmt: skip
        dst.write(np.full((3, 300, 300), 90, dtype=np.uint8))
    return path


def garbage(path: Path) -> Path:
    path.write_bytes(np.random.default_rng(0).bytes(9000))
    return path


def truncated(mosaic: Mosaic, path: Path) -> Path:
    data = mosaic.path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda m, d: without_crs(d / "nocrs.tif"), "has no coordinate reference system"),
        (lambda m, d: local_crs(d / "local.tif"), "cannot be reprojected to WGS84"),
        (lambda m, d: truncated(m, d / "half.tif"), "damaged or truncated"),
        (lambda m, d: garbage(d / "junk.tif"), "not a readable raster"),
        (lambda m, d: d / "missing.tif", "no such file"),
    ],
)
def test_bad_rasters_are_refused_and_leave_nothing(
    rgb8: Mosaic, tmp_path: Path, make: Callable[[Mosaic, Path], Path], problem: str
) -> None:
    source = tmp_path / "in"
    source.mkdir()
    bad = make(rgb8, source)
    with pytest.raises(RasterError, match=problem) as caught:
        list(read_tiles(plan_tiles(bad)))
    assert str(bad) in str(caught.value)
    # The good raster first: a truncated one fails after the good one's tiles are written.
    with pytest.raises(RasterError, match=problem):
        tile_rasters([rgb8.path, bad], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_a_truncated_cog_fails_on_the_windows_it_cannot_read(
    scenes: list[Path], tmp_path: Path
) -> None:
    cog = make_mosaic(tmp_path / "cog.tif", scenes, grid=(2, 3), cog=True)
    cut = truncated(cog, tmp_path / "cut.tif")
    plan = plan_tiles(cut)  # the header is whole: the damage shows when a window is read
    with pytest.raises(RasterError, match=r"cannot read the window .* damaged or truncated"):
        list(read_tiles(plan))


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"tile_px": 0}, "tile_px must be a positive"),
        ({"tile_m": -5.0}, "tile_m must be a positive"),
        ({"tile_m": float("nan")}, "tile_m must be a positive"),
        ({"tile_px": 256, "tile_m": 50.0}, "not both"),
        ({"overlap": 1.0}, r"overlap is a fraction in \[0, 1\)"),
        ({"tile_px": 1024}, "smaller than one tile"),
        ({"tile_m": 0.1}, "less than one pixel"),
        ({"bands": (1, 2, 5)}, "has 3 bands"),
        ({"bands": (1, 2)}, "three band numbers"),
        ({"out_size": 0}, "out_size must be a positive"),
    ],
)
def test_bad_tile_parameters(rgb8: Mosaic, tmp_path: Path, options: dict, problem: str) -> None:
    with pytest.raises(RasterError, match=problem):
        plan_tiles(rgb8.path, TileGrid(**options))
    with pytest.raises(RasterError, match=problem):
        tile_rasters([rgb8.path], tmp_path / "out", TileGrid(**options))
    assert not any(tmp_path.iterdir())


def test_tile_rasters_checks_its_own_options(rgb8: Mosaic, tmp_path: Path) -> None:
    with pytest.raises(RasterError, match="max_nodata is a fraction"):
        tile_rasters([rgb8.path], tmp_path / "out", max_nodata=1.5)
    with pytest.raises(RasterError, match="split 'dev'"):
        tile_rasters([rgb8.path], tmp_path / "out", split="dev")
    with pytest.raises(RasterError, match="share the stem"):
        tile_rasters([rgb8.path, rgb8.path], tmp_path / "out")
    assert not any(tmp_path.iterdir())


def test_grn_tile(square: Mosaic, tmp_path: Path) -> None:
    out = tmp_path / "tiles"
    done = grn("tile", str(square.path), "--out", str(out), "--tile-m", "153.6", "--overlap",
               "0.5", "--bands", "1,2,3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "wrote 4 tiles" in done.stdout and f"grn import {out}" in done.stdout
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "square_0_0.png", "square_0_1.png", "square_1_0.png", "square_1_1.png"
    ]  # fmt: skip
    assert read_image(out / "images" / "square_1_1.png").shape == (256, 256, 3)
    failed = grn("tile", str(without_crs(tmp_path / "flat.tif")), "--out", str(tmp_path / "x"))
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: ") and "no coordinate reference system" in failed.stderr
    assert not (tmp_path / "x").exists()
