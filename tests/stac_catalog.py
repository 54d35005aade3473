"""A small STAC catalog of real pixels, for trying `grn import --stac` (docs/geo.md): two
items, each a GeoTIFF mosaic of three UCM scenes side by side at a known UTM transform
(`tests/geodata.py`), dated June 2021 (5% cloud) and January 2023 (40% cloud).

    python tests/stac_catalog.py OUT   # writes OUT/rasters/*.tif and OUT/catalog/catalog.json
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository's packages importable
    sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

import pyproj
import pystac
from geodata import EPSG, ORIGIN, PIXEL_M, SCENE_PX, make_mosaic, ucm_scenes
from shapely.geometry import box, mapping

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


if __name__ == "__main__":
    print(write_catalog(Path(sys.argv[1])))
