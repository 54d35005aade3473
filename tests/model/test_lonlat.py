"""The antimeridian and the poles (issue 42, item 2): GeoTIFFs written by rasterio with real UCM
pixels, 512 px in UTM zone 60S centred on lon 180 near Fiji and in polar stereographic
(EPSG:3031) centred on the south pole, tile into footprints split at 180 (MultiPolygon) or
holding the pole; boxes across 180 and circles round it or a pole keep the right scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyproj
import pytest
import rasterio
import shapely
from geodata import fiji_raster, pole_raster, ucm_scenes
from shapely.geometry import MultiPolygon, Point, Polygon, box

from index.filters import SceneFilter, SceneMeta
from model.geo import (
    GeoError,
    SceneGeo,
    geometry_from_geojson,
    haversine_m,
    near_bounds,
    parse_bbox,
)
from model.lonlat import unwrapped
from model.tiling import TileGrid, plan_tiles, read_tiles


@pytest.fixture(scope="module")
def rasters(ucm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("lonlat")
    scenes = ucm_scenes(ucm_root, 4)
    return {"fiji": fiji_raster(folder, scenes), "pole": pole_raster(folder, scenes)}


def window_middle(path: Path, window: tuple[int, int, int, int]) -> tuple[float, float]:
    """The WGS84 lon/lat of a window's middle, reprojected from the raster's CRS."""
    with rasterio.open(path) as src:
        x, y = src.transform @ (window[0] + window[2] / 2, window[1] + window[3] / 2)
        to_wgs84 = pyproj.Transformer.from_crs(src.crs, 4326, always_xy=True)
    lon, lat = to_wgs84.transform(x, y)
    return float(lon), float(lat)


@pytest.mark.parametrize("overlap", [0.0, 0.5])
def test_a_raster_across_the_antimeridian_tiles_into_split_footprints(
    rasters: dict[str, Path], overlap: float
) -> None:
    plan = plan_tiles(rasters["fiji"], TileGrid(overlap=overlap))
    assert len(plan.tiles) == (4 if overlap == 0 else 9)
    split = [t for t in plan.tiles if isinstance(t.geo.footprint, MultiPolygon)]
    assert split, "some tile straddles longitude 180"
    for tile in plan.tiles:
        footprint, (west, south, east, north) = tile.geo.footprint, tile.geo.bounds
        assert footprint.is_valid and -180 <= footprint.bounds[0] <= footprint.bounds[2] <= 180
        assert 179.9 < west < 180.0 + 1e-9 or -180.0 <= west < -179.9
        assert east - west < 0.05 and -17.9 < south < north < -17.7  # a 2.56 km tile
        # the centre is the window's middle, wherever the tile lies
        lon, lat = tile.geo.centre
        assert (
            haversine_m(np.array([lon]), np.array([lat]), *window_middle(plan.path, tile.window))[0]
            < 20
        )
    for tile in split:
        parts = list(tile.geo.footprint.geoms)
        assert len(parts) == 2 and {round(p.bounds[2], 9) for p in parts} >= {180.0}
        assert min(p.bounds[0] for p in parts) == -180.0 and tile.geo.bounds[2] > 180.0
        # split, not lost: the parts' area is the tile's area on the ground, in degrees
        whole = shapely.union_all(
            [shapely.affinity.translate(p, 360) if p.bounds[0] < 0 else p for p in parts]
        )
        assert abs(whole.area - sum(p.area for p in parts)) < 1e-12
        assert abs(whole.area - 0.0245**2) / 0.0245**2 < 0.1
    images = list(read_tiles(plan))
    assert all(image.rgb is not None and image.rgb.shape == (256, 256, 3) for image in images)


def test_a_raster_round_the_south_pole_tiles_into_footprints_that_hold_it(
    rasters: dict[str, Path],
) -> None:
    quarters = plan_tiles(rasters["pole"])  # the pole at a corner of each of four tiles
    spans = sorted(
        tuple(round(v) for v in (t.geo.bounds[0], t.geo.bounds[2])) for t in quarters.tiles
    )
    assert spans == [(-180, -90), (-90, 0), (0, 90), (90, 180)]
    for tile in quarters.tiles:
        assert tile.geo.footprint.is_valid and tile.geo.bounds[1] == -90.0
        assert tile.geo.footprint.intersects(Point(tile.geo.bounds[0] + 1, -90))
    plan = plan_tiles(rasters["pole"], TileGrid(overlap=0.5))
    middle = plan.tiles[4]  # holds the pole inside
    (west, south, east, north), footprint = middle.geo.bounds, middle.geo.footprint
    assert (west, south, east) == (-180.0, -90.0, 180.0) and north < -89.98
    assert footprint.is_valid and footprint.covers(Point(37.0, -90.0))
    assert middle.geo.centre[1] < -89.9999  # the pole, not a mean of longitudes
    for tile in plan.tiles:
        lon, lat = tile.geo.centre
        assert (
            haversine_m(np.array([lon]), np.array([lat]), *window_middle(plan.path, tile.window))[0]
            < 20
        )
    assert all(image.rgb is not None for image in read_tiles(plan))


def test_ordinary_footprints_are_as_before(tmp_path: Path, ucm_root: Path) -> None:
    from geodata import make_mosaic

    mosaic = make_mosaic(tmp_path / "grid.tif", ucm_scenes(ucm_root, 6))
    for tile in plan_tiles(mosaic.path).tiles:
        footprint = tile.geo.footprint
        assert isinstance(footprint, Polygon)
        assert tile.geo.bounds == tuple(footprint.bounds)
        assert tile.geo.centre == (footprint.centroid.x, footprint.centroid.y)


def test_boxes_and_circles_across_the_antimeridian_and_at_the_poles() -> None:
    east_of = SceneMeta(bounds=(179.8, -18, 179.9, -17.9), centre=(179.85, -17.95))
    west_of = SceneMeta(bounds=(-179.9, -18, -179.8, -17.9), centre=(-179.85, -17.95))
    across = SceneGeo(MultiPolygon([box(179.95, -18, 180, -17.9), box(-180, -18, -179.95, -17.9)]))
    on_it = SceneMeta(bounds=across.bounds, centre=across.centre)
    assert across.bounds == (179.95, -18, 180.05, -17.9) and across.centre[0] in (180.0, -180.0)
    far = SceneMeta(bounds=(10, -18, 11, -17), centre=(10.5, -17.5))
    scenes = {1: east_of, 2: west_of, 3: on_it, 4: far}

    def kept(where: SceneFilter) -> set[int]:
        return {i for i, meta in scenes.items() if where.passes(i, meta)}

    assert kept(SceneFilter(bbox=parse_bbox("179.7,-19,-179.7,-17"))) == {1, 2, 3}
    assert kept(SceneFilter(bbox=parse_bbox("-179.97,-19,-179.7,-17"))) == {2, 3}
    assert kept(SceneFilter(bbox=parse_bbox("179.7,-19,179.97,-17"))) == {1, 3}
    assert kept(SceneFilter(bbox=parse_bbox("0,-19,20,-17"))) == {4}  # as before
    # near=179.9,0 with 50 km: a scene at -179.9, 22 km away, is inside
    assert near_bounds(179.9, 0, 50_000)[2] > 180.0
    assert unwrapped(near_bounds(-179.9, 0, 50_000))[0] > 0
    assert kept(SceneFilter(near=(179.9, -17.95, 50_000))) == {1, 2, 3}
    # a circle round the south pole spans all longitudes
    assert near_bounds(45, -89.9, 50_000)[::2] == (-180.0, 180.0)
    polar = {5: SceneMeta(bounds=(-180, -90, 180, -89.98), centre=(0, -90)),
             6: SceneMeta(bounds=(90, -90, 180, -89.97), centre=(135, -89.99))}  # fmt: skip
    scenes.update(polar)
    assert kept(SceneFilter(near=(-100, -89.9, 20_000))) == {5, 6}
    assert kept(SceneFilter(bbox=(-10, -90, 10, -89.5))) == {5}
    within = geometry_from_geojson(
        {
            "type": "MultiPolygon",
            "coordinates": [
                [[[179.8, -18], [180, -18], [180, -17.9], [179.8, -17.9], [179.8, -18]]],
                [[[-180, -18], [-179.82, -18], [-179.82, -17.9], [-180, -17.9], [-180, -18]]],
            ],
        }
    )
    assert kept(SceneFilter(within=within)) == {1, 2, 3}


def test_bad_boxes_say_what_is_wrong() -> None:
    assert parse_bbox("170,-20,-170,-10") == (170, -20, -170, -10)  # across 180: kept as given
    with pytest.raises(GeoError, match="latitude minimum above its maximum"):
        parse_bbox("10,20,11,10")
    with pytest.raises(GeoError, match=r"latitude 91\.0 is out of range"):
        parse_bbox("10,20,11,91")
    with pytest.raises(GeoError, match="split it in two at longitude 180"):
        geometry_from_geojson(
            {"type": "Polygon", "coordinates": [[[170, 0], [-170, 0], [-170, 1], [170, 0]]]}
        )
