"""STAC catalogs read into the rasters to tile (pystac): a static catalog or collection (its
items, recursively), an item collection (a GeoJSON FeatureCollection of items) or a single
item, from a file or a URL pystac reads.

Each item gives one `StacRaster`: its GeoTIFF/COG asset (the key asked for, else `visual`,
else the first GeoTIFF asset whose roles include `visual` or `data`), its footprint, when it
was acquired (`datetime`, else `start_datetime`) and its properties as they are (platform,
`eo:cloud_cover`, `gsd` and any others). An item that cannot give one is a `StacProblem` naming
the item and what is wrong (no geometry, a date that does not parse, no such asset, an asset
that is not a local file); the others are read all the same. A file that is not STAC at all
is a `StacError`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urljoin, urlparse

from model.geo import GeoError, SceneGeo, geometry_from_geojson
from model.times import TimeError, parse_instant

GEOTIFF_TYPES = ("image/tiff", "image/tiff; application=geotiff")
DEFAULT_ASSETS = ("visual", "rgb", "image")
REMOTE = ("http", "https", "s3", "gs")
"""The schemes of assets that are not tiled (only local files are)."""
NAME_CHARACTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")


class StacError(ValueError):
    """A catalog that cannot be read at all (not STAC, not found, not JSON)."""


@dataclass(frozen=True)
class StacRaster:
    """One STAC item's raster, ready to tile."""

    item_id: str
    name: str
    """The scene folder of its tiles and their names' prefix: the item id, made safe."""
    href: Path
    asset: str
    footprint: SceneGeo
    acquired: datetime | None
    properties: dict[str, Any]
    collection: str | None = None
    stac_extensions: tuple[str, ...] = ()

    @property
    def cloud_cover(self) -> float | None:
        value = self.properties.get("eo:cloud_cover")
        return float(value) if isinstance(value, int | float) else None

    def metadata(self) -> dict[str, Any]:
        """What its scenes keep as metadata (`scenes.meta`): the item's properties and where
        they came from."""
        return {
            "stac": {
                "item": self.item_id, "collection": self.collection, "asset": self.asset,
                "href": str(self.href), "stac_extensions": list(self.stac_extensions),
                "properties": self.properties,
            }
        }  # fmt: skip


@dataclass(frozen=True)
class StacProblem:
    item: str
    """The item's id, or where it was found when it has none."""
    error: str


@dataclass
class StacRead:
    rasters: list[StacRaster] = field(default_factory=list)
    problems: list[StacProblem] = field(default_factory=list)


def read_stac(source: str | Path, asset: str | None = None) -> StacRead:
    """Every item under `source` as a raster to tile, or the problem it has."""
    read = StacRead()
    for where, item in _item_dicts(str(source)):
        item_id = str(item.get("id") or where)
        try:
            read.rasters.append(_raster(item, item_id, asset, where.split("#")[0]))
        except (StacError, GeoError, TimeError) as exc:
            read.problems.append(StacProblem(item_id, str(exc)))
    ids = [r.name for r in read.rasters]
    if len(set(ids)) != len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise StacError(f"{source}: item ids repeat ({', '.join(twice)}); each names its scenes")
    return read


def _item_dicts(source: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, the item as JSON) for each item under `source`; a link that cannot be read
    is given as an empty item that `_raster` refuses."""
    import pystac
    from pystac.errors import STACError, STACTypeError

    try:
        top = pystac.StacIO.default().read_json(source)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise StacError(f"{source}: cannot be read as STAC JSON ({exc})") from exc
    kind = top.get("type") if isinstance(top, dict) else None
    if kind == "FeatureCollection":
        for number, feature in enumerate(top.get("features") or []):
            yield f"{source}#features/{number}", feature
        return
    if kind == "Feature":
        yield source, top
        return
    try:
        catalog = pystac.read_dict(top, href=source)
    except (STACError, STACTypeError, KeyError, TypeError, ValueError) as exc:
        raise StacError(
            f"{source}: not a STAC catalog, collection, item collection or item ({exc})"
        ) from exc
    if not isinstance(catalog, pystac.Catalog):
        raise StacError(f"{source}: a STAC {type(catalog).__name__}, not a catalog")
    yield from _catalog_items(catalog)


def _catalog_items(catalog: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    import pystac

    for link in catalog.get_links(pystac.RelType.ITEM):
        href = link.get_absolute_href() or link.href
        try:
            yield href, pystac.StacIO.default().read_json(href)
        except (OSError, json.JSONDecodeError) as exc:
            yield href, {"id": href, "_unreadable": str(exc)}
    for child_link in catalog.get_links(pystac.RelType.CHILD):
        try:
            child = child_link.resolve_stac_object(catalog.get_root()).target
        except Exception as exc:  # pystac raises many types for a bad child
            yield child_link.href, {"id": child_link.href, "_unreadable": str(exc)}
            continue
        yield from _catalog_items(child)


def _raster(item: dict[str, Any], item_id: str, asset: str | None, where: str) -> StacRaster:
    if "_unreadable" in item:
        raise StacError(f"cannot be read: {item['_unreadable']}")
    if item.get("type") != "Feature" or "properties" not in item:
        raise StacError("not a STAC item (a GeoJSON Feature with properties)")
    if not item.get("geometry"):
        raise StacError("has no geometry; an item must say where it lies")
    geometry = geometry_from_geojson(item["geometry"])
    properties = dict(item["properties"] or {})
    when = properties.get("datetime") or properties.get("start_datetime")
    acquired = None if when is None else parse_instant(when)
    key, href = _asset(item, asset, where)
    name = "".join(c if c in NAME_CHARACTERS else "_" for c in item_id)[:150]
    return StacRaster(
        item_id=item_id, name=name.lstrip("._-") or "item", href=href, asset=key,
        footprint=SceneGeo(geometry), acquired=acquired, properties=properties,
        collection=item.get("collection"),
        stac_extensions=tuple(item.get("stac_extensions") or ()),
    )  # fmt: skip


def _asset(item: dict[str, Any], wanted: str | None, where: str) -> tuple[str, Path]:
    """The asset to tile: its key and its file (a relative href is relative to `where`, the
    item's JSON: a file here, or a URL, which makes the asset's a URL too)."""
    assets: dict[str, Any] = item.get("assets") or {}
    if wanted is not None:
        key = wanted if wanted in assets else None
    else:
        key = next((k for k in DEFAULT_ASSETS if k in assets), None) or next(
            (
                k
                for k, a in assets.items()
                if str(a.get("type", "")).startswith("image/tiff")
                and {"visual", "data"} & set(a.get("roles") or ())
            ),
            None,
        )
    if key is None:
        asked = f"no asset {wanted!r}" if wanted else "no visual or GeoTIFF data asset"
        raise StacError(
            f"{asked} (its assets: {', '.join(sorted(assets)) or 'none'}); choose one with "
            "--asset KEY"
        )
    href = str(assets[key].get("href") or "")
    if urlparse(where).scheme in REMOTE:
        href = urljoin(where, href)
    parsed = urlparse(href)
    if parsed.scheme in REMOTE:
        raise StacError(
            f"asset {key!r} is at {href}: only local files are tiled; download the catalog's "
            "assets first"
        )
    path = Path(unquote(parsed.path) if parsed.scheme == "file" else href)
    if not path.is_absolute():
        item_file = urlparse(where)
        path = Path(unquote(item_file.path) if item_file.scheme == "file" else where).parent / path
    if not path.is_file():
        raise StacError(f"asset {key!r} ({path}) cannot be reached: no such file")
    return key, path.resolve()
