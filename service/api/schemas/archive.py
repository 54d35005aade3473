"""The bodies of the archive's listing and scenes: a scene, its place, pages of scenes, the
labels and folders with their counts, and what the map needs."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field

from service.api.schemas.common import SceneId, Schema
from service.api.schemas.filters import FilterFields
from service.storage.listing import Order


class ScenePlace(Schema):
    footprint: dict[str, Any]
    """A GeoJSON Polygon or Point, WGS84."""
    crs: str | None = None
    """The source raster's coordinate reference system."""
    source: str | None = None
    """The raster the scene was cut from."""
    window: list[int] | None = None
    """Its pixel window there: col_off, row_off, width, height."""


class SceneOut(Schema):
    model_config = ConfigDict(
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "6198235272819611846", "image": "harbor12", "scene": "harbor",
                    "split": "train", "labels": ["dock", "ship", "water"], "width": 256,
                    "height": 256,
                    "image_url": "http://127.0.0.1:8000/scenes/6198235272819611846/image",
                    "thumbnail_url": "http://127.0.0.1:8000/scenes/6198235272819611846/thumbnail",
                }
            ]
        },
    )  # fmt: skip

    id: SceneId
    image: str
    """The image file's stem."""
    scene: str
    """Its scene folder (the `scene` column of labels.csv)."""
    split: str
    """train, val or test."""
    labels: list[str]
    """Its labels in the archive."""
    width: int
    """Pixels."""
    height: int
    """Pixels."""
    image_url: str
    """The original file."""
    thumbnail_url: str
    """A small JPEG (GRN_THUMBNAIL_SIZE); `/preview` gives any size."""
    metadata: dict[str, Any] | None = None
    """Free metadata given when the scene was added or corrected through the API."""
    place: ScenePlace | None = None
    """Where it lies on the Earth (None: not georeferenced)."""
    added: datetime | None = None
    """When it entered the archive (UTC)."""
    acquired: datetime | None = None
    """When its pixels were taken (UTC; None: not known)."""


class PlacesResponse(Schema):
    placed: int
    """Scenes with a footprint."""
    scenes: int
    """Scenes in the archive."""
    bounds: list[float] | None
    """min_lon, min_lat, max_lon, max_lat around every footprint (None: none placed)."""
    basemap: str | None
    """The map's XYZ tile URL template (GRN_MAP_TILES); None: the scenes' thumbnails only."""
    attribution: str | None
    """The basemap's attribution (GRN_MAP_ATTRIBUTION)."""
    map_library: bool
    """Whether the map's library (Leaflet) is installed (`grn assets`)."""


class ScenePage(Schema):
    scenes: list[SceneOut]
    """This page of the scenes that pass the filters."""
    total: int
    """Scenes that pass the filters, over all pages: counted for the first page; a page
    reached by `cursor` carries the count of its walk's first page (counting again would
    cost every page a scan of the whole filtered set)."""
    offset: int
    """The first scene of the page (0-based): the `offset` asked, or the position the cursor
    carries."""
    limit: int
    """Scenes per page."""
    next_offset: int | None
    """Offset of the next page, None on the last."""
    next_cursor: str | None = None
    """The `cursor` of the next page (opaque; None on the last): it seeks past this page's
    last scene, so a page costs the same at any depth."""
    note: str | None = None
    """Why the page is empty, when it is."""


class SamePlaceScene(SceneOut):
    overlap: float
    """The share of the asked scene's footprint this one covers: area(both) / area(asked
    scene's), in (0, 1], rounded to 6 decimals."""


class SamePlacePage(Schema):
    scenes: list[SamePlaceScene]
    """This page of the scenes that cover at least `min_overlap` of the scene's footprint,
    by acquisition time (unknown last, then by id); the scene itself is not among them."""
    total: int
    """Such scenes over all pages."""
    offset: int
    """The first scene of the page (0-based)."""
    limit: int
    """Scenes per page."""
    next_offset: int | None
    """Offset of the next page, None on the last."""
    min_overlap: float
    """The share asked."""
    note: str | None = None
    """Why the page is empty, when it is (a scene without a footprint has no other scene
    at its place: an empty page, not an error)."""


class SamePlaceQuery(Schema):
    """`GET /scenes/{id}/same-place`'s query parameters."""

    min_overlap: float = Field(default=0.5, gt=0.0, le=1.0)
    """The share of this scene's footprint another must cover: area(both) / area(this
    scene's footprint), in (0, 1]."""
    offset: int = Field(default=0, ge=0, le=2**63 - 1)
    """The first scene of the page (0-based)."""
    limit: int = Field(default=50, ge=1, le=1000)
    """Scenes per page."""


class LabelCount(Schema):
    name: str
    """A label (or scene folder) name."""
    count: int
    """Archive scenes that carry it."""


class LabelsResponse(Schema):
    labels: list[LabelCount]
    """Every label, by name."""


class FoldersResponse(Schema):
    folders: list[LabelCount]
    """Every scene folder, by name."""


class SceneSelection(FilterFields):
    """Which scenes a listing or an export holds, in which order: the filter fields a search
    takes (`FilterFields`, lists repeated or separated by commas), part of the name and the
    order."""

    q: str | None = Field(default=None, max_length=200)
    """Part of the image name."""
    order: Order = "id"
    """id, name, acquired (oldest first) or -acquired (newest first); the id breaks ties,
    and by acquisition time the scenes whose time is not known come last."""

    def fingerprint(self) -> str:
        """A digest of the filters and `q` as parsed (the same whether a list came as
        commas or repeated): a cursor carries it, so it is refused with other filters."""
        chosen = self.model_dump(mode="json", include=set(SceneSelection.model_fields) - {"order"})
        text = json.dumps(chosen, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class SceneListing(SceneSelection):
    """`GET /scenes`'s query parameters: the selection and the page, by `offset` or by
    `cursor`."""

    offset: int = Field(default=0, ge=0, le=2**63 - 1)
    """The first scene of the page (0-based); SQL's OFFSET is a 64-bit integer, so larger
    is a 422. Its cost grows with it: deep pages are for `cursor`."""
    limit: int = Field(default=50, ge=1, le=1000)
    """Scenes per page."""
    cursor: str | None = Field(default=None, max_length=2000)
    """A page's `next_cursor`: the page after it, with the same filters, `q` and order
    (not with `offset`)."""


class SceneExport(SceneSelection):
    """`GET /scenes/export`'s query parameters: the selection and the file format."""

    format: Literal["csv", "geojson", "geoparquet"] = "csv"
    """csv, geojson (a FeatureCollection; a scene without a footprint has geometry null),
    or geoparquet (GeoParquet 1.1, with the model's label scores: docs/geo.md)."""
    embeddings: bool = False
    """With geoparquet: each scene's embedding too (the served model's, float32)."""
