"""The filter fields a search (`POST /search`, JSON or form) and the listing (`GET /scenes`,
query parameters) share, parsed here once into the one filter type (`FilterFields.to_filter`
-> `index.filters.SceneFilter`), whatever the body they came in.

JSON gives lists as lists and `within` as an object. Text (a form field, a query parameter, a
command-line option) gives a list as values separated by commas or repeated, `within` as
GeoJSON text; times are ISO 8601 text either way. A wrong value is a 422 that names its
field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from types import UnionType
from typing import Annotated, Any, Self, TypeVar, Union, get_args, get_origin

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    PrivateAttr,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)

from index.filters import SceneFilter
from index.id_mask import IdMask
from model.times import INSTANT_EXAMPLES, parse_instant
from service.api.schemas.common import SceneIdIn, Schema, Split
from service.errors import BadRequestError
from service.usecases.saved_concepts import NAME


def listed(value: Any, info: ValidationInfo) -> Any:
    """A list as text gives it: values separated by commas, the field repeated or both (a
    JSON body gives a list, taken as it is)."""
    if info.mode == "json" or value is None:
        return value
    items = value if isinstance(value, list | tuple) else [value]
    out: list[Any] = []
    for item in items:
        if isinstance(item, str):
            out += [part.strip() for part in item.split(",") if part.strip()]
        else:
            out.append(item)
    return out


def geojson_text(value: Any, info: ValidationInfo) -> Any:
    """GeoJSON given as text (a form field, a query parameter) read as an object."""
    if info.mode == "json" or not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not GeoJSON: {exc}") from exc


def blank_is_none(value: Any) -> Any:
    """An empty text field counts as not given."""
    return None if value == "" else value


Instant = Annotated[
    datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema(
        {
            "type": "string",
            "description": "An ISO 8601 date (its first moment) or date and time (UTC unless "
            "it names a zone).",
            "examples": INSTANT_EXAMPLES,
        }
    ),
]
"""An instant given as ISO 8601 text (or a datetime), kept in UTC."""

TextList = BeforeValidator(listed)
ConceptName = Annotated[str, Field(min_length=1, max_length=100, pattern=NAME.pattern)]
"""A saved concept's name: letters, digits, `_`, and after the first character spaces, `.`
and `-` (no comma)."""


class FilterFields(Schema):
    """Which scenes a search or a listing keeps: every condition given, at once."""

    labels_all: Annotated[list[str], TextList] = Field(default_factory=list, max_length=1000)
    """Every one of these labels must be present."""
    labels_any: Annotated[list[str], TextList] = Field(default_factory=list, max_length=1000)
    """At least one of these labels must be present."""
    labels_none: Annotated[list[str], TextList] = Field(default_factory=list, max_length=1000)
    """None of these labels may be present."""
    scene: Annotated[str | None, BeforeValidator(blank_is_none)] = Field(
        default=None, max_length=200
    )
    """Only scenes of this scene folder."""
    split: Annotated[Split | None, BeforeValidator(blank_is_none)] = None
    """Only scenes of this split: train, val or test."""
    exclude_ids: Annotated[list[SceneIdIn], TextList] = Field(default_factory=list, max_length=1000)
    """Scenes never to return (up to 1000)."""
    bbox: Annotated[list[float] | None, TextList] = Field(default=None, min_length=4, max_length=4)
    """Only scenes whose footprint's bounds meet this box: [min_lon, min_lat, max_lon,
    max_lat], WGS84 degrees (as text: the four numbers separated by commas); a min_lon above
    max_lon is a box across the antimeridian (RFC 7946, STAC)."""
    within: Annotated[dict[str, Any] | None, BeforeValidator(geojson_text)] = None
    """Only scenes whose footprint's centre lies in this GeoJSON Polygon or MultiPolygon
    (WGS84, split at the antimeridian; as text: the GeoJSON)."""
    near: Annotated[list[float] | None, TextList] = Field(default=None, min_length=3, max_length=3)
    """Only scenes whose footprint's centre lies within radius_m metres of a point: [lon,
    lat, radius_m] (as text: separated by commas)."""
    added_after: Instant | None = None
    """Only scenes that entered the archive at this time or later: an ISO 8601 date (from
    its start) or date and time, UTC unless it names a zone."""
    added_before: Instant | None = None
    """Only scenes that entered the archive before this time (a date: before its start),
    UTC unless it names a zone."""
    acquired_after: Instant | None = None
    """Only scenes acquired at this time or later (ISO 8601, as `added_after`); a scene
    whose acquisition time is not known passes no acquisition condition."""
    acquired_before: Instant | None = None
    """Only scenes acquired before this time (a date: before its start)."""
    month: Annotated[list[Annotated[int, Field(ge=1, le=12)]], TextList] = Field(
        default_factory=list, max_length=12
    )
    """Only scenes acquired in one of these calendar months (1-12, UTC), in any year: a
    season across years (as text: separated by commas, e.g. 6,7,8)."""
    concepts: Annotated[list[ConceptName], TextList] = Field(default_factory=list, max_length=20)
    """Only scenes that every one of these saved concepts (`GET /concepts`) scores at or
    above its threshold, or `concept_min_score` (scored by the served model: a concept
    fitted with another one is re-fitted first)."""
    concept_min_score: float | None = Field(default=None, ge=-10.0, le=10.0)
    """With `concepts`: the score a scene needs instead of each concept's threshold (the
    probe's score: about 1 like the positives, about 0 not)."""
    _concept_ids: np.ndarray | IdMask | None = PrivateAttr(default=None)
    """The scenes `concepts` keep, once resolved (`with_concept_ids`): a mask over the
    catalog's ids, searched as a label filter's is."""

    def with_concept_ids(self, ids: np.ndarray | IdMask) -> Self:
        """These fields with `concepts` resolved into the scenes they keep (the use case
        `service.usecases.saved_concepts.concept_allowed` gives them)."""
        resolved = self.model_copy()
        resolved._concept_ids = ids
        return resolved

    @field_validator("bbox")
    @classmethod
    def _box(cls, value: list[float] | None) -> list[float] | None:
        from model.geo import parse_bbox

        return None if value is None else list(parse_bbox(value))

    @field_validator("near")
    @classmethod
    def _circle(cls, value: list[float] | None) -> list[float] | None:
        from model.geo import parse_near

        return None if value is None else list(parse_near(value))

    @field_validator("within")
    @classmethod
    def _polygon(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        from model.geo import polygon_from_geojson

        if value is not None:
            polygon_from_geojson(value)  # a GeoError (a ValueError) is the 422's message
        return value

    @field_validator("added_before", "acquired_before")
    @classmethod
    def _after_before(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        name = str(info.field_name)
        after_name = name.replace("_before", "_after")
        after = info.data.get(after_name)
        if value is not None and after is not None and value <= after:
            raise ValueError(
                f"{name} ({value.isoformat()}) is not later than {after_name} "
                f"({after.isoformat()}): no scene can pass both"
            )
        return value

    def to_filter(self) -> SceneFilter:
        """These conditions as the one filter type every backend translates."""
        from model.geo import polygon_from_geojson

        if self.concepts and self._concept_ids is None:
            raise BadRequestError(
                "this request cannot filter by saved concepts: leave out `concepts`",
                "concepts_not_supported",
            )
        where = SceneFilter(
            labels_all=self.labels_all,
            labels_any=self.labels_any,
            labels_none=self.labels_none,
            folder=self.scene,
            split=self.split,
            exclude_ids=self.exclude_ids,
            bbox=tuple(self.bbox) if self.bbox else None,  # type: ignore[arg-type]
            within=polygon_from_geojson(self.within) if self.within else None,
            near=tuple(self.near) if self.near else None,  # type: ignore[arg-type]
            added_after=self.added_after,
            added_before=self.added_before,
            acquired_after=self.acquired_after,
            acquired_before=self.acquired_before,
            months=self.month,
        )
        return where if self._concept_ids is None else where.allowing(self._concept_ids)

    @classmethod
    def from_text(cls, fields: Mapping[str, list[str]], **context: Any) -> Self:
        """The model from text fields (`from_text`)."""
        return from_text(cls, fields, **context)


M = TypeVar("M", bound=BaseModel)


def from_text(model: type[M], fields: Mapping[str, list[str]], **context: Any) -> M:
    """A model from text fields (a multipart form: each name with its values): a list
    field may repeat, any other field is given once; an empty value is not given.
    `context` reaches the validators (pydantic's ValidationError names a wrong field)."""
    lists = {name for name, f in model.model_fields.items() if _is_list(f.annotation)}
    values: dict[str, Any] = {}
    for key, given in fields.items():
        if key in lists:
            values[key] = given
        elif len(given) > 1:
            raise BadRequestError(f"the form field {key!r} is given {len(given)} times")
        elif given and given[0] != "":
            values[key] = given[0]
    return model.model_validate(values, context=context)


def _is_list(annotation: Any) -> bool:
    """Whether a field holds a list (or an optional one)."""
    if get_origin(annotation) is list:
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_list(arg) for arg in get_args(annotation))
    if get_origin(annotation) is Annotated:
        return _is_list(get_args(annotation)[0])
    return False
