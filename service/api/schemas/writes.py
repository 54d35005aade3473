"""The bodies of the writes: a scene added (`POST /scenes`) or corrected (`PATCH
/scenes/{id}`)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field

from service.api.schemas.archive import SceneOut
from service.api.schemas.common import Schema, Split
from service.api.schemas.filters import Instant

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def _checked_footprint(value: dict[str, Any]) -> dict[str, Any]:
    from model.geo import geometry_from_geojson

    geometry_from_geojson(value)  # a GeoError (a ValueError) is the 422's message
    return value


Footprint = Annotated[dict[str, Any], AfterValidator(_checked_footprint)]
"""A scene's footprint as given: a GeoJSON Polygon or Point in WGS84, checked."""


class NewSceneFields(Schema):
    """What may be said of an image added with `POST /scenes`."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    name: Name | None = None
    """The scene's name (image stem), unique in the archive; default: the first 20
    characters of the image's SHA-256."""
    scene: Name = "uploads"
    """Its scene folder."""
    split: Split = "train"
    """train, val or test (what `grn train` and `grn evaluate` use it for)."""
    labels: list[str] = Field(default_factory=list, max_length=1000)
    """Labels from the archive's label set (`GET /labels`)."""
    metadata: dict[str, Any] | None = None
    """Free metadata, kept as given (a JSON object)."""
    footprint: Footprint | None = None
    """Where it lies: a GeoJSON Polygon or Point in WGS84. A GeoTIFF with a CRS keeps its
    own georeferencing without it."""
    acquired: Instant | None = None
    """When its pixels were taken: ISO 8601, UTC unless it names a zone. A GeoTIFF's
    ACQUISITIONDATETIME or TIFFTAG_DATETIME is read without it."""


class AddedScene(SceneOut):
    duplicate: bool
    """The same file was a scene already: that scene, unchanged."""


class ScenesAdded(Schema):
    scenes: list[AddedScene]
    """One per uploaded image, in the order sent."""
    searchable: bool
    """Whether the scenes are searchable now: true once the response is sent, on every
    process of the service (a search sent after it finds them)."""
    model_version: str
    """The model that embedded them."""
    elapsed_ms: float
    """Time spent in the service, in milliseconds."""


class ScenePatch(Schema):
    """Corrections to a scene: the fields given are set, the others left as they are."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    labels: list[str] | None = Field(default=None, max_length=1000)
    """The scene's labels, all of them (replacing the old ones)."""
    scene: Name | None = None
    """Its scene folder."""
    split: Split | None = None
    """train, val or test."""
    metadata: dict[str, Any] | None = None
    """Replaces the scene's metadata; `null` removes it."""
    footprint: Footprint | None = None
    """Where it lies, a GeoJSON Polygon or Point in WGS84 (replacing the old footprint and
    its raster, CRS and window); `null` removes it."""
    acquired: Instant | None = None
    """When its pixels were taken (ISO 8601); `null` makes it not known."""
