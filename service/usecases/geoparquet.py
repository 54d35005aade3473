"""Scenes as GeoParquet (1.1): the format GeoPandas, DuckDB, QGIS and stac-geoparquet read.
What `grn export --format geoparquet` and `GET /scenes/export?format=geoparquet` write.

One row per scene: `geometry` (the footprint as WKB in WGS84 longitude/latitude, OGC:CRS84;
null for a scene that is not georeferenced), `id`, `image`, `scene`, `split`, `labels` (a
list), `width`, `height`, `added` and `acquired` (UTC timestamps; `acquired` null where not
known), `crs`, `source` and `window` of the raster a tile was cut from, the STAC
properties most asked for as columns (`platform`, `gsd`, `eo:cloud_cover`, from a STAC
import), `metadata` (the scene's metadata as JSON text), and, when a model and index are
given, `scores` (the model's label probabilities, the labels listed in the file's metadata
under `grn`) and optionally `embedding` (the model's unit embedding, float32). Written one
row group per chunk of scenes, so memory holds one chunk whatever the archive's size.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import shapely
from sqlalchemy import Engine

from index.filters import SceneFilter
from index.stores import (
    IndexModelMismatchError,
    IndexNotReadyError,
    ModelIndex,
    VectorStoreUnavailableError,
)
from model.card import ModelFileError
from service.settings import Settings
from service.storage.listing import ListedScene, Order

GEOPARQUET_VERSION = "1.1.0"
MEDIA_TYPE = "application/vnd.apache.parquet"
STAC_COLUMNS = {"platform": pa.string(), "gsd": pa.float64(), "eo:cloud_cover": pa.float64()}
TIME = pa.timestamp("us", tz="UTC")


def schema(index: ModelIndex | None, embeddings: bool) -> pa.Schema:
    """The file's columns and its `geo` (GeoParquet) and `grn` metadata."""
    fields = [
        pa.field("id", pa.int64(), nullable=False), pa.field("image", pa.string()),
        pa.field("scene", pa.string()), pa.field("split", pa.string()),
        pa.field("labels", pa.list_(pa.string())), pa.field("width", pa.int32()),
        pa.field("height", pa.int32()), pa.field("added", TIME), pa.field("acquired", TIME),
        pa.field("crs", pa.string()), pa.field("source", pa.string()),
        pa.field("window", pa.string()),
        *(pa.field(name, kind) for name, kind in STAC_COLUMNS.items()),
        pa.field("metadata", pa.string()),
    ]  # fmt: skip
    grn: dict[str, Any] = {}
    if index is not None:
        fields.append(pa.field("scores", pa.list_(pa.float32())))
        grn = {"model_version": index.model_version, "index_version": index.index_version,
               "score_labels": list(index.card.label_names)}  # fmt: skip
        if embeddings:
            fields.append(pa.field("embedding", pa.list_(pa.float32())))
    fields.append(pa.field("geometry", pa.binary()))
    geo = {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {"geometry": {"encoding": "WKB", "geometry_types": []}},
    }  # an empty list of types: not known before every chunk is read
    return pa.schema(fields, metadata={"geo": json.dumps(geo), "grn": json.dumps(grn)})


def write_geoparquet(
    chunks: Iterable[list[ListedScene]],
    target: Path,
    *,
    index: ModelIndex | None = None,
    embeddings: bool = False,
) -> int:
    """Write the scenes of `chunks` to `target` (see the module docstring); how many rows.
    `embeddings` asks for the stored vectors (of the scenes `index` holds; null for the
    others)."""
    layout = schema(index, embeddings)
    rows = 0
    with pq.ParquetWriter(target, layout) as writer:
        for chunk in chunks:
            if chunk:
                writer.write_table(pa.Table.from_pylist(_rows(chunk, index, embeddings), layout))
                rows += len(chunk)
    return rows


def _rows(
    chunk: list[ListedScene], index: ModelIndex | None, embeddings: bool
) -> list[dict[str, Any]]:
    geometries = [
        None if s.footprint is None else shapely.from_geojson(s.footprint.geometry) for s in chunk
    ]
    wkb = shapely.to_wkb(np.asarray(geometries, dtype=object), flavor="iso")
    out = []
    for scene, geometry in zip(chunk, wkb.tolist(), strict=True):
        meta = json.loads(scene.meta) if scene.meta else None
        stac = (meta or {}).get("stac", {}).get("properties", {}) if isinstance(meta, dict) else {}
        place = scene.footprint
        out.append({
            "id": scene.id, "image": scene.name, "scene": scene.folder, "split": scene.split,
            "labels": scene.label_names, "width": scene.width, "height": scene.height,
            "added": scene.created_at, "acquired": scene.acquired,
            "crs": place.crs if place else None, "source": place.source if place else None,
            "window": place.window if place else None,
            **{name: stac.get(name) for name in STAC_COLUMNS},
            "metadata": scene.meta, "geometry": geometry,
        })  # fmt: skip
    if index is not None:
        _add_vectors(out, index, embeddings)
    return out


def _add_vectors(rows: list[dict[str, Any]], index: ModelIndex, embeddings: bool) -> None:
    """Each row's scores (and embedding) from the index, null for scenes it does not hold."""
    ids = np.asarray([row["id"] for row in rows], dtype=np.int64)
    held = index.searcher.contains(ids)
    found = ids[held]
    scores = index.searcher.probabilities(found) if len(found) else None
    vectors = None
    if embeddings and len(found):
        # the index holds the ranking vectors: the unit embedding (scaled) first, then the
        # probabilities where the model blends them in (`model.inference.ranking_vectors`)
        vectors = index.searcher.vectors(found)[:, : index.card.embedding_dim]
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    at = {int(i): n for n, i in enumerate(found)}
    for row in rows:
        n = at.get(row["id"])
        row["scores"] = None if n is None or scores is None else scores[n].tolist()
        if embeddings:
            row["embedding"] = None if n is None or vectors is None else vectors[n].tolist()


def export_here(
    settings: Settings, engine: Engine, where: SceneFilter, target: Path, *,
    name: str | None = None, order: Order = "id", embeddings: bool = False,
) -> tuple[int, str | None]:  # fmt: skip
    """`grn export --format geoparquet`: the scenes that pass `where` written to `target`,
    with the scores (and `embeddings`) of the settings' model and index when they are there
    (`embeddings` requires them: `NothingToSearchError`); (rows, the model version scored
    with, or None)."""
    from index.stores import open_store
    from service.storage.catalog import Catalog
    from service.usecases.local_search import NothingToSearchError, open_index_only

    store = open_store(settings.store)
    try:
        try:
            served: ModelIndex | None = open_index_only(settings, store)
        except (ModelFileError, IndexNotReadyError, IndexModelMismatchError,
                VectorStoreUnavailableError, OSError) as exc:  # fmt: skip
            if embeddings:
                raise NothingToSearchError(f"no embeddings to export: {exc}") from exc
            served = None
        chunks = Catalog(engine).walk(where, name=name, order=order)
        rows = write_geoparquet(chunks, target, index=served, embeddings=embeddings)
        return rows, None if served is None else served.model_version
    finally:
        store.close()
