"""Small STAC catalogs of real pixels (GeoTIFF mosaics of UCM scenes at known UTM
transforms, `tests/geodata.py`), written with pystac:

- `write_catalog`, for trying `grn import --stac` (docs/geo.md): two items, each a mosaic of
  three scenes side by side, dated June 2021 (5% cloud) and January 2023 (40% cloud);
- `write_test_catalog`, the tests' (`tests/service/test_stac.py`, `test_stac_jobs.py`): two
  good items (2 tiles and 1 tile) and four bad ones (no geometry, a date that does not parse,
  no visual asset, a raster without a CRS).

    python tests/stac_catalog.py OUT   # writes OUT/rasters/*.tif and OUT/catalog/catalog.json
"""

from __future__ import annotations

import json
import sys
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # run as a script: make the repository's packages importable
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import numpy as np
import pyproj
import pystac
import rasterio
from geodata import EPSG, ORIGIN, PIXEL_M, SCENE_PX, make_mosaic, ucm_scenes
from rasterio.errors import NotGeoreferencedWarning
from shapely.geometry import box, mapping, shape

FLIGHTS = [
    ("flight-2021-06", ORIGIN, datetime(2021, 6, 1, 10, tzinfo=UTC), 5.0),
    ("flight-2023-01", (ORIGIN[0] + 2000, ORIGIN[1]), datetime(2023, 1, 15, 11, tzinfo=UTC), 40.0),
]


def write_catalog(out: Path) -> Path:
    """The catalog's JSON file, its items' rasters written beside it."""
    scenes = ucm_scenes(count=6)
    to_wgs84 = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
    side = SCENE_PX * PIXEL_M
    catalog = pystac.Catalog("ucm-demo", "UCM scenes as STAC items")
    for n, (name, (x, y), when, cloud) in enumerate(FLIGHTS):
        raster = make_mosaic(out / "rasters" / f"{name}.tif", scenes[3 * n : 3 * n + 3],
                             grid=(1, 3), origin=(x, y))  # fmt: skip
        (west, east), (south, north) = to_wgs84.transform([x, x + 3 * side], [y - side, y])
        properties = {"platform": "ucm-aircraft", "gsd": PIXEL_M, "eo:cloud_cover": cloud}
        item = pystac.Item(name, mapping(box(west, south, east, north)),
                           [west, south, east, north], when, properties)  # fmt: skip
        item.add_asset("visual", pystac.Asset(str(raster.path), roles=["visual"],
                                              media_type=pystac.MediaType.GEOTIFF))  # fmt: skip
        catalog.add_item(item)
    catalog.normalize_hrefs(str(out / "catalog"))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return out / "catalog" / "catalog.json"


TO_WGS84 = pyproj.Transformer.from_crs(EPSG, 4326, always_xy=True)
SECOND_ORIGIN = (ORIGIN[0] + 5_000.0, ORIGIN[1] - 3_000.0)
"""Where the test catalog's second good item (`scene-b`, one scene) lies."""
GOOD_ITEMS = {
    "scene-a": (ORIGIN, datetime(2021, 6, 1, 10, tzinfo=UTC)),
    "scene-b": (SECOND_ORIGIN, datetime(2020, 3, 1, 9, tzinfo=UTC)),  # its start_datetime
}
"""The test catalog's good items: where each mosaic's top-left lies and when it was taken."""


def wgs84_box(origin: tuple[float, float], cols: int, rows: int) -> dict[str, Any]:
    """The GeoJSON outline of a mosaic of rows x cols scenes whose top-left is `origin`."""
    x0, y0 = origin
    x1, y1 = x0 + cols * SCENE_PX * PIXEL_M, y0 - rows * SCENE_PX * PIXEL_M
    (w, e), (s, n) = TO_WGS84.transform([x0, x1], [y1, y0])
    return mapping(box(min(w, e), min(s, n), max(w, e), max(s, n)))


def item(item_id: str, geometry: dict[str, Any] | None, when: datetime | None,
         assets: dict[str, str], **properties: Any) -> pystac.Item:  # fmt: skip
    """An item; without `when`, dated by start_datetime and end_datetime on 2020-03-01."""
    found = pystac.Item(
        item_id, geometry, shape(geometry).bounds if geometry else None, when,
        properties, start_datetime=None if when else GOOD_ITEMS["scene-b"][1],
        end_datetime=None if when else datetime(2020, 3, 1, 10, tzinfo=UTC),
    )  # fmt: skip
    for key, href in assets.items():
        kind, roles = (
            (pystac.MediaType.PNG, ["thumbnail"]) if key == "thumbnail"
            else (pystac.MediaType.COG, ["data"])
        )  # fmt: skip
        found.add_asset(key, pystac.Asset(href, media_type=kind, roles=roles))
    return found


def write_test_catalog(root: Path, ucm_root: Path) -> Path:
    """The tests' self-contained catalog under `root` (see the module docstring): its JSON
    file. `scene-a` (2 tiles, June 2021, 5% cloud, platform ucm-plane) has a visual asset;
    `scene-b` (1 tile, March 2020, 60% cloud) a visual one and a `data` one (scene-a's
    raster)."""
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
        item("scene-a", here, GOOD_ITEMS["scene-a"][1],
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


BAD_ITEMS = {
    "no-geometry": "has no geometry",
    "bad-date": "'the first of June' is not an ISO 8601",
    "no-visual": "no visual or GeoTIFF data asset (its assets: thumbnail)",
    "no-crs": "has no coordinate reference system",
}
"""The test catalog's bad items, and what their problem says."""


if __name__ == "__main__":
    print(write_catalog(Path(sys.argv[1])))
