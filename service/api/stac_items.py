"""A scene as a STAC Item (1.1.0), for `GET /scenes/{id}/stac`: what STAC browsers, pystac
and stac-geoparquet read.

- `geometry` and `bbox`: the footprint (WGS84); null for a scene that is not georeferenced.
- `properties.datetime`: when the scene was acquired. STAC requires a time: a scene whose
  acquisition time is not known gives the time it entered the archive, and says so
  (`grn:datetime_is`: `acquired` or `added`).
- The properties of the STAC item it was imported from (platform, `eo:cloud_cover`, `gsd`,
  ...) come back as they were, with that item's `stac_extensions`; the service's own fields
  are prefixed `grn:` (labels, scene folder, split, the raster window).
- `assets`: the original image (`data`) and the thumbnail; `links`: itself and the scene's
  JSON.
"""

from __future__ import annotations

import json
from typing import Any

from index.filters import utc
from service.storage.db import Scene

STAC_VERSION = "1.1.0"
MEDIA_TYPE = "application/geo+json"


def scene_item(
    scene: Scene, image_url: str, thumbnail_url: str, self_url: str, scene_url: str
) -> dict[str, Any]:
    """The STAC Item of a scene (see the module docstring)."""
    meta = json.loads(scene.meta) if scene.meta else None
    stac = meta.get("stac") if isinstance(meta, dict) else None
    source: dict[str, Any] = stac if isinstance(stac, dict) else {}
    known = scene.acquired is not None
    when = utc(scene.acquired if scene.acquired is not None else scene.created_at)
    properties: dict[str, Any] = {
        k: v
        for k, v in (source.get("properties") or {}).items()
        if k not in ("datetime", "start_datetime", "end_datetime")
    }
    place = scene.footprint
    properties |= {
        "datetime": when.isoformat().replace("+00:00", "Z"),
        "created": utc(scene.created_at).isoformat().replace("+00:00", "Z"),
        "grn:datetime_is": "acquired" if known else "added",
        "grn:labels": scene.label_names,
        "grn:scene": scene.folder,
        "grn:split": scene.split,
    }
    if place is not None and place.window:
        properties["grn:window"] = [int(v) for v in place.window.split(",")]
        properties["grn:source"] = place.source
    item: dict[str, Any] = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": list(source.get("stac_extensions") or []),
        "id": scene.name,
        "geometry": None if place is None else json.loads(place.geometry),
        "properties": properties,
        "links": [
            {"rel": "self", "href": self_url, "type": MEDIA_TYPE},
            {"rel": "alternate", "href": scene_url, "type": "application/json"},
        ],
        "assets": {
            "data": {"href": image_url, "type": scene.media_type, "roles": ["data"]},
            "thumbnail": {"href": thumbnail_url, "type": "image/jpeg", "roles": ["thumbnail"]},
        },
    }
    if place is not None:
        item["bbox"] = [place.min_lon, place.min_lat, place.max_lon, place.max_lat]
    if source.get("collection"):
        properties["grn:collection"] = source["collection"]
    return item
