"""The bodies of `/search` and `/search/density`: the request (its filter fields shared with
the listing, `service.api.schemas.filters`) and the ranked hits."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, model_validator

from service.api.schemas.classify import LabelScore
from service.api.schemas.common import SceneId, SceneIdIn, Schema
from service.api.schemas.filters import FilterFields, TextList
from service.api.schemas.regions import MatchMapOut, RegionFields
from service.usecases.regions import MAX_MATCH_MAPS
from service.usecases.search import HitOrder, SearchQuery


class SearchRequest(FilterFields, RegionFields):
    """Search by an archive scene (JSON body); an upload takes the same fields as form
    fields, with `file` instead of `scene_id`. The filter fields are the listing's
    (`FilterFields`); `region` and `match_maps` are `RegionFields`."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {"scene_id": "6198235272819611846", "k": 20, "labels_any": ["ship", "tanks"]},
                {"scene_id": "6198235272819611846", "k": 10, "classify": True, "limit": 5},
                {
                    "scene_id": "6198235272819611846",
                    "region": [0, 0, 128, 128],
                    "match_maps": True,
                    "k": 5,
                },
            ]
        },
    )

    scene_id: SceneIdIn | None = None
    """The archive scene to search by (ids come from /scenes and from hits). Left out, the
    search is by `more_like` scenes, or by labels: the scenes that carry `labels_all` (and
    lie in the folder `scene`, when given; a folder alone works too), most likely first (the
    classifier's probability that a scene meets the label conditions), then nearest the
    region of the embedding space where those scenes lie."""
    k: int = Field(default=10, ge=1, le=1000)
    """How many of the most similar scenes to rank, 1 to 1000."""
    include_query: bool = False
    """Searching by scene id: also return the query scene itself (default: left out)."""
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Drop hits scoring lower (cosine similarity, -1 to 1)."""
    offset: int = Field(default=0, ge=0, le=1000)
    """The first hit of the page (0-based) among the k ranked."""
    limit: int | None = Field(default=None, ge=1, le=1000)
    """Hits per page (default: all k)."""
    order: HitOrder = "score"
    """The order of the k hits over the pages: `score` (best first), or by acquisition
    time, `acquired` (oldest first) or `-acquired` (newest first), the hits of unknown time
    last. The hits are the k most similar either way; only their order changes."""
    format: Literal["json", "csv", "geojson"] = "json"
    """`csv`: the page of hits as CSV (rank, id, image, scene, score, labels, image_url,
    added); `geojson`: as a GeoJSON FeatureCollection of the hits that have a footprint (for
    QGIS and the like), each Feature's properties carrying rank, id, image, scene, score,
    labels, links and added."""
    more_like: Annotated[list[SceneIdIn], TextList] = Field(default_factory=list, max_length=100)
    """Relevance feedback: scenes the results should be like (Rocchio: the query plus 0.75
    times their mean); they are left out of the results."""
    less_like: Annotated[list[SceneIdIn], TextList] = Field(default_factory=list, max_length=100)
    """Relevance feedback: scenes the results should not be like (minus 0.25 times their
    mean); they are left out of the results."""
    classify: bool = False
    """Also answer the query's labels (the classifier on the uploaded image, or on the
    archive scene's image): one request for what a person sees."""
    text: str | None = Field(default=None, max_length=300)
    """A phrase ("ships in a harbour, no cars") read onto the labels and scene folders
    (plurals, common synonyms; docs/api.md): what it reads as labels joins `labels_all`,
    negated ones `labels_none`, a folder becomes `scene`; the answer's `understood` says what
    was read and which words were not. Nothing understood is a 400 naming the words."""

    @model_validator(mode="after")
    def _has_a_query(self, info: ValidationInfo) -> SearchRequest:
        by_image = bool(info.context and info.context.get("by_image"))
        if by_image or self.scene_id is not None:
            return self
        if not (self.more_like or self.labels_all or self.scene or self.text):
            raise ValueError(
                "give a scene_id, scenes to be like in more_like, labels in labels_all, a "
                "scene folder in scene or text"
            )
        return self

    @model_validator(mode="after")
    def _region_has_an_image(self, info: ValidationInfo) -> SearchRequest:
        by_image = bool(info.context and info.context.get("by_image"))
        if (self.region is not None or self.match_maps) and not (
            by_image or self.scene_id is not None
        ):
            raise ValueError("region and match_maps need a query image: an upload or a scene_id")
        page = self.limit or self.k
        if self.match_maps and page > MAX_MATCH_MAPS:
            raise ValueError(
                f"match_maps: at most {MAX_MATCH_MAPS} hits per page get a match map; ask for "
                f"limit (or k) of {MAX_MATCH_MAPS} or less, not {page}"
            )
        return self

    def to_query(self) -> SearchQuery:
        """The request as the use case's query (`search_scenes`); `text` is read onto the
        labels before (`service.usecases.text.with_reading`)."""
        return SearchQuery(
            k=self.k,
            where=self.to_filter(),
            min_score=self.min_score,
            include_query=self.include_query,
            offset=self.offset,
            limit=self.limit,
            more_like=self.more_like,
            less_like=self.less_like,
            order=self.order,
        )


def query_from_fields(fields: Mapping[str, Any], *, by_image: bool = False) -> SearchQuery:
    """A search given by POST /search's field names (as JSON gives them, or as text: lists
    separated by commas, `within` as GeoJSON text, times as ISO 8601 text) as the use case's
    query, checked as the API checks it: pydantic's ValidationError (a ValueError) names each
    wrong field. `by_image`: the query is an image given beside the fields (no scene_id
    needed). For `grn search`; `text` must have been read onto the labels already."""
    return SearchRequest.model_validate(fields, context={"by_image": by_image}).to_query()


class DensityRequest(SearchRequest):
    """A search whose top hits are counted per area: where else a pattern occurs."""

    k: int = Field(default=200, ge=1, le=1000)
    """How many of the most similar scenes to count."""
    by: Literal["grid", "source"] = "grid"
    """`grid`: cells of about `cell_m` metres; `source`: the raster each hit was cut from."""
    cell_m: float = Field(default=1000.0, gt=0, le=1_000_000)
    """The grid's cell size on the ground, metres."""


class DensityCell(Schema):
    key: str
    """The cell (`x,y` on the grid) or the source raster's name."""
    count: int
    """Hits in it."""
    mean_score: float
    """The mean similarity of its hits to the query."""
    best_score: float
    """Its best hit's similarity to the query."""
    best_id: SceneId
    """Its most similar scene."""
    bounds: list[float]
    """min_lon, min_lat, max_lon, max_lat: the cell, or the box around its hits (min_lon
    above max_lon across the antimeridian, RFC 7946)."""


class DensityResponse(Schema):
    cells: list[DensityCell]
    """Areas by number of hits, most first."""
    hits: int
    """Hits counted (at most k)."""
    placed: int
    """Hits with a footprint (the others lie nowhere known and are not counted)."""
    by: str
    """grid or source: what the areas are."""
    cell_m: float | None
    """The grid's cell size, metres (None by source)."""
    query_id: SceneId | None
    """The archive scene searched by, if any."""
    model_version: str
    """The model that embedded the query and the archive."""


class Understood(Schema):
    labels_all: list[str]
    """Labels the text asks for."""
    labels_none: list[str]
    """Labels the text excludes ("not", "no", "without", "except")."""
    folders: list[str]
    """The scene folder the text names (at most one; it becomes the search's `scene`)."""
    words_not_understood: list[str]
    """Words of the text that read as no label, folder or synonym (they were ignored)."""
    not_understood: list[str]
    """The same as `words_not_understood`, under the name of earlier releases."""


class Hit(Schema):
    id: SceneId
    image: str
    """The image file's stem."""
    score: float
    """How well it answers the query, higher first: as the response's `score_kind` says, the
    cosine similarity to the query (-1 to 1) or the probability that it meets the label
    conditions (0 to 1)."""
    labels: list[str]
    """Its labels in the archive."""
    scene: str
    """Its scene folder."""
    image_url: str
    """The original file."""
    thumbnail_url: str
    """A small JPEG of it."""
    footprint: dict[str, Any] | None = None
    """Where it lies: a GeoJSON Polygon or Point in WGS84 (None: not georeferenced)."""
    added: datetime | None = None
    """When it entered the archive (UTC)."""
    acquired: datetime | None = None
    """When its pixels were taken (UTC; None: not known)."""
    match_map: MatchMapOut | None = None
    """With `match_maps`: where in this scene the query matches."""


class SearchResponse(Schema):
    hits: list[Hit]
    """This page of the ranked hits, best first."""
    total: int
    """Hits over all pages (at most k)."""
    offset: int
    """The first hit of the page (0-based)."""
    limit: int
    """Hits per page."""
    next_offset: int | None
    """Offset of the next page, None on the last."""
    query_id: SceneId | None
    """The archive scene searched by, if any."""
    region: list[int] | None = None
    """The region of the query image searched by, if any: [x0, y0, x1, y1]."""
    model_version: str
    """The model that embedded the query and the archive."""
    index_version: str
    """The index version searched."""
    elapsed_ms: float
    """Time spent in the service, in milliseconds."""
    labels: list[LabelScore] | None = None
    """With `classify`: the query's labels, as /classify answers them."""
    predicted: list[str] | None = None
    """With `classify`: the labels at or above their thresholds."""
    understood: Understood | None = None
    """With `text`: how the text was read."""
    note: str | None = None
    """With `classify`, when `labels` are absent: the archive does not carry the model's
    labels."""
    reranked: bool = False
    """The index's nearest scenes were re-ranked with the backbone's descriptors
    (GRN_BACKBONE_RERANK): the scores are then the blended scores."""
    score_kind: Literal["similarity", "label_match"] = "similarity"
    """What the hits' scores are: `similarity`, the cosine similarity to the query (blended
    when `reranked`); `label_match`, for a query by labels (or a text read as labels), the
    classifier's probability that the scene meets the label conditions."""
