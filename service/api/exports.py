"""A search's hits as files other tools read: CSV (a spreadsheet) and GeoJSON (QGIS and the
like), and the density of hits per area as GeoJSON."""

from __future__ import annotations

import csv
import io
from typing import Any

from shapely.geometry import box, mapping

from service.api.schemas.search import DensityResponse, Hit


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
                "added": _iso(hit),
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
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "id", "image", "scene", "score", "labels", "image_url", "added"])
    for rank, hit in enumerate(hits, start=offset + 1):
        writer.writerow(
            [rank, hit.id, hit.image, hit.scene, f"{hit.score:.6f}", ";".join(hit.labels),
             hit.image_url, _iso(hit)]
        )  # fmt: skip
    return out.getvalue()


def _iso(hit: Hit) -> str:
    """The time added as the JSON answer writes it (ISO 8601, UTC as Z)."""
    return "" if hit.added is None else hit.added.isoformat().replace("+00:00", "Z")


def cells_geojson(answer: DensityResponse) -> dict[str, Any]:
    """The density's areas as a GeoJSON FeatureCollection whose properties carry the counts,
    with the rest of the answer beside the features."""
    features = [
        {
            "type": "Feature",
            "id": cell.key,
            "geometry": mapping(box(*cell.bounds)),
            "properties": cell.model_dump(mode="json", exclude={"bounds"}),
        }
        for cell in answer.cells
    ]
    return {
        "type": "FeatureCollection",
        "features": features,
        **answer.model_dump(mode="json", exclude={"cells"}),
    }
