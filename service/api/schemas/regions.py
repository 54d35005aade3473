"""Regions and match maps in the API (`service.usecases.regions`): the fields a search by
image takes, the map a hit carries, and the body of `POST /match`."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, field_validator

from service.api.schemas.common import SceneId, SceneIdIn, Schema
from service.api.schemas.filters import TextList
from service.usecases.regions import GRID, MAX_GRID, MIN_GRID, MatchMap, Region


class RegionBox(Schema):
    """A region of the query image to search by."""

    region: Annotated[list[int] | None, TextList] = Field(default=None, min_length=4, max_length=4)
    """Search by this pixel box of the query image (the upload, or the archive scene's
    image): [x0, y0, x1, y1], columns x0 to x1 and rows y0 to y1 (ends excluded; as text:
    the four integers separated by commas), inside the image, each side at least 16 px. The
    crop goes through the network as any image does."""

    @field_validator("region")
    @classmethod
    def _region_shape(cls, box: list[int] | None) -> list[int] | None:
        if box is not None:
            Region.of(box)  # its own shape: corners of 0 or more, each side MIN_SIDE px or more
        return box

    def query_region(self) -> Region | None:
        return None if self.region is None else Region.of(self.region)


class RegionFields(RegionBox):
    """A region of the query image to search by, and match maps for the hits."""

    match_maps: bool = False
    """Add `match_map` to each hit: where in the hit the query matches (a grid of cosine
    similarities, `match_grid` cells per side). At most 10 hits per page (MAX_MATCH_MAPS):
    a larger page (`limit`, else `k`) is a 422. Needs a query image (an upload or a
    scene_id)."""
    match_grid: int = Field(default=GRID, ge=MIN_GRID, le=MAX_GRID)
    """A match map's cells per side, 3 to 8."""


class MatchMapOut(Schema):
    """Where a hit matches the query: `values[row][col]` is the cosine similarity between the
    query and the window centred on that cell of the hit's image (rows top first). The cells
    split the image evenly (`width` / `cols` by `height` / `rows` pixels); each window is two
    cells wide and high (`window_width` x `window_height`), moved inside the image."""

    rows: int
    """The map's rows of cells, top to bottom."""
    cols: int
    """The map's columns of cells, left to right."""
    width: int
    """The hit image's width in pixels."""
    height: int
    """The hit image's height in pixels."""
    window_width: int
    """Each cell's window's width in pixels (two cells, at most the image)."""
    window_height: int
    """Each cell's window's height in pixels."""
    values: list[list[float]]
    """`values[row][col]`: the cosine similarity of that cell's window to the query."""

    @classmethod
    def of(cls, found: MatchMap) -> MatchMapOut:
        return cls.model_validate(found, from_attributes=True)


class MatchRequest(RegionBox):
    """Where one archive scene (`hit_id`) matches a query: an archive scene (JSON, with
    `scene_id`) or an upload (multipart, field `file`, the others as form fields), or a
    region of either."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {
                    "scene_id": "6198235272819611846",
                    "hit_id": "1434566221052435213",
                    "region": [0, 0, 128, 128],
                }
            ]
        },
    )

    scene_id: SceneIdIn | None = None
    """The archive scene to match (left out with an upload)."""
    hit_id: SceneIdIn
    """The archive scene to map: where in it the query matches."""
    grid: int = Field(default=GRID, ge=MIN_GRID, le=MAX_GRID)
    """The map's cells per side, 3 to 8."""


class MatchResponse(Schema):
    """Where one archive scene matches the query (`POST /match`)."""

    hit_id: SceneId
    query_id: SceneId | None
    """The archive scene matched, if any (None: an upload)."""
    region: list[int] | None
    """The query's region, if any."""
    match_map: MatchMapOut
    """Where in the hit the query matches."""
    model_version: str
    """The model that embedded the query and the hit's windows."""
    elapsed_ms: float
    """The time the service took to answer, in milliseconds."""
