"""A search's hits and the archive's scenes as files other tools read: CSV (a spreadsheet) and
GeoJSON (QGIS and the like), and the density of hits per area as GeoJSON. The scenes' files
are made as a stream of text, one piece per chunk of rows, so an export of any size holds one
chunk in memory."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from shapely.geometry import MultiPolygon, Polygon, box, mapping

from model.lonlat import split_boxes, unwrapped
from service.api.schemas.archive import SceneOut
from service.api.schemas.search import DensityResponse, Hit

SCENE_COLUMNS = ["id", "image", "scene", "split", "labels", "width", "height", "image_url", "added"]


def hits_geojson(hits: list[Hit], offset: int, model_version: str) -> dict[str, Any]:
    """The hits that have a footprint as a GeoJSON FeatureCollection, best first."""
    features = [
        {
            "type": "Feature",
            "id": str(hit.id),
            "geometry": hit.footprint,
            "properties": {
                "rank": offset + number,
                "id": str(hit.id),
                "image": hit.image,
                "scene": hit.scene,
                "score": hit.score,
                "labels": ";".join(hit.labels),
                "image_url": hit.image_url,
                "thumbnail_url": hit.thumbnail_url,
                "added": _iso(hit.added),
            },
        }
        for number, hit in enumerate(hits, start=1)
        if hit.footprint is not None
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        "model_version": model_version,
        "unplaced": sum(hit.footprint is None for hit in hits),
    }


def hits_csv(hits: list[Hit], offset: int) -> str:
    """Hits as CSV: one row each, labels joined by `;`, the time added in ISO 8601."""
    header = ["rank", "id", "image", "scene", "score", "labels", "image_url", "added"]
    return _csv_text(
        [header]
        + [
            [rank, hit.id, hit.image, hit.scene, f"{hit.score:.6f}", ";".join(hit.labels),
             hit.image_url, _iso(hit.added)]
            for rank, hit in enumerate(hits, start=offset + 1)
        ]
    )  # fmt: skip


def scenes_csv(chunks: Iterable[list[SceneOut]]) -> Iterator[str]:
    """Scenes as CSV (`SCENE_COLUMNS`, labels joined by `;`): the header, then one piece of
    text per chunk."""
    yield _csv_text([SCENE_COLUMNS])
    for chunk in chunks:
        yield _csv_text(
            [s.id, s.image, s.scene, s.split, ";".join(s.labels), s.width, s.height,
             s.image_url, _iso(s.added)]
            for s in chunk
        )  # fmt: skip


def scenes_geojson(chunks: Iterable[list[SceneOut]]) -> Iterator[str]:
    """Scenes as one GeoJSON FeatureCollection, one piece of text per chunk: every scene a
    Feature, whose geometry is null where it has no footprint (an unlocated Feature,
    RFC 7946 3.2), and `unplaced` counting those at the end."""
    yield '{"type":"FeatureCollection","features":['
    unplaced, separator = 0, ""
    for chunk in chunks:
        if not chunk:
            continue
        unplaced += sum(scene.place is None for scene in chunk)
        yield separator + ",".join(json.dumps(_scene_feature(scene)) for scene in chunk)
        separator = ","
    yield f'],"unplaced":{unplaced}}}'


def _scene_feature(scene: SceneOut) -> dict[str, Any]:
    return {
        "type": "Feature",
        "id": str(scene.id),
        "geometry": None if scene.place is None else scene.place.footprint,
        "properties": {
            "id": str(scene.id),
            "image": scene.image,
            "scene": scene.scene,
            "split": scene.split,
            "labels": ";".join(scene.labels),
            "image_url": scene.image_url,
            "thumbnail_url": scene.thumbnail_url,
            "added": _iso(scene.added),
        },
    }


def _csv_text(rows: Iterable[Sequence[Any]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(rows)
    return out.getvalue()


def _iso(added: datetime | None) -> str:
    """The time added as the JSON answer writes it (ISO 8601, UTC as Z)."""
    return "" if added is None else added.isoformat().replace("+00:00", "Z")


def cells_geojson(answer: DensityResponse) -> dict[str, Any]:
    """The density's areas as a GeoJSON FeatureCollection whose properties carry the counts,
    with the rest of the answer beside the features."""
    features = [
        {
            "type": "Feature",
            "id": cell.key,
            "geometry": mapping(_box(cell.bounds)),
            "properties": cell.model_dump(mode="json", exclude={"bounds"}),
        }
        for cell in answer.cells
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        **answer.model_dump(mode="json", exclude={"cells"}),
    }


def _box(bounds: Sequence[float]) -> Polygon | MultiPolygon:
    """A box as GeoJSON takes it: split at the antimeridian when its west is above its east."""
    parts = [box(*part) for part in split_boxes(unwrapped(bounds))]
    return parts[0] if len(parts) == 1 else MultiPolygon(parts)
