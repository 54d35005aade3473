"""The API's request and response bodies (pydantic), apart from the SQL models."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)

if TYPE_CHECKING:
    from model.card import ModelCard
    from service.jobs.queue import Job

MAX_SCENE_ID = 2**63 - 1
ID_PATTERN = "^[0-9]{1,19}$"
ID_DESCRIPTION = (
    "A scene id: a 63-bit integer, sent as a string of digits because JavaScript reads JSON "
    "numbers as doubles and loses digits past 2^53."
)

SceneId = Annotated[
    int,
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema(
        {"type": "string", "pattern": ID_PATTERN, "description": ID_DESCRIPTION,
         "examples": ["6198235272819611846"]}
    ),
]  # fmt: skip
"""A scene id in a response: a string of digits in JSON."""

SceneIdIn = Annotated[
    int,
    Field(ge=0, le=MAX_SCENE_ID),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": MAX_SCENE_ID},
                {"type": "string", "pattern": ID_PATTERN},
            ],
            "description": ID_DESCRIPTION + " An integer is accepted too.",
        }
    ),
]
"""A scene id in a request: a string of digits (as responses give them) or an integer."""


class Schema(BaseModel):
    """The API's bodies: each field's docstring is its description in the OpenAPI document."""

    model_config = ConfigDict(use_attribute_docstrings=True)


class LabelScore(Schema):
    label: str
    """A label of the model's vocabulary."""
    probability: float
    """The classifier's probability, 0 to 1."""
    present: bool
    """Probability at or above the label's threshold (from the model card)."""


class ImageClassification(Schema):
    filename: str
    """The uploaded file's name."""
    labels: list[LabelScore]
    """Every label of the model, in the model's order."""
    predicted: list[str]
    """The labels at or above their thresholds."""

    @classmethod
    def of(
        cls, filename: str, card: ModelCard, probabilities: Sequence[float] | np.ndarray
    ) -> ImageClassification:
        """An image's classification from the model's label probabilities: every label's
        probability, and those at or above the card's thresholds."""
        labels = [
            LabelScore(label=name, probability=round(float(p), 6), present=bool(p >= t))
            for name, p, t in zip(card.label_names, probabilities, card.thresholds, strict=True)
        ]
        return cls(
            filename=filename, labels=labels, predicted=[s.label for s in labels if s.present]
        )


def classifier_applies(card: ModelCard, archive_labels: Sequence[str]) -> bool:
    """The model's classifier speaks for the archive when the archive carries every label
    the model knows. An archive without labels, or with a label set of its own, gets no
    classifier answers: its scenes are still embedded and searched."""
    return set(card.label_names) <= set(archive_labels)


NO_CLASSIFIER = (
    "no labels: the archive does not carry the model's labels ({labels}), so the model's "
    "classifier does not answer for it; train a model on the archive's own labels to get them"
)


def no_classifier_note(card: ModelCard) -> str:
    shown = ", ".join(card.label_names[:5]) + (", ..." if len(card.label_names) > 5 else "")
    return NO_CLASSIFIER.format(labels=shown)


class ClassifyResponse(Schema):
    labels: list[LabelScore]
    """Of the first image."""
    predicted: list[str]
    """Of the first image."""
    results: list[ImageClassification]
    """One entry per uploaded image, in upload order."""
    model_version: str
    """The model that answered (its card's version)."""
    elapsed_ms: float
    """Time spent in the service, in milliseconds."""
    note: str | None = None
    """Why `labels` are empty: the archive does not carry the model's labels."""


class SearchRequest(Schema):
    """Search by an archive scene (JSON body); an upload takes the same fields as form
    fields, with `file` instead of `scene_id`."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {"scene_id": "6198235272819611846", "k": 20, "labels_any": ["ship", "tanks"]},
                {"scene_id": "6198235272819611846", "k": 10, "classify": True, "limit": 5},
            ]
        },
    )

    scene_id: SceneIdIn | None = None
    """The archive scene to search by (ids come from /scenes and from hits). Left out, the
    search is by `more_like` scenes, or by labels: the scenes that carry `labels_all`, most
    likely first (the classifier's probability that a scene meets the label conditions),
    then nearest the labels' region of the embedding space."""
    k: int = Field(default=10, ge=1, le=1000)
    """How many of the most similar scenes to rank, 1 to 1000."""
    labels_all: list[str] = Field(default_factory=list, max_length=1000)
    """Every one of these labels must be present."""
    labels_any: list[str] = Field(default_factory=list, max_length=1000)
    """At least one of these labels must be present."""
    labels_none: list[str] = Field(default_factory=list, max_length=1000)
    """None of these labels may be present."""
    scene: str | None = Field(default=None, max_length=200)
    """Only scenes of this scene folder."""
    exclude_ids: list[SceneIdIn] = Field(default_factory=list, max_length=1000)
    """Scenes never to return (up to 1000)."""
    include_query: bool = False
    """Searching by scene id: also return the query scene itself (default: left out)."""
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    """Drop hits scoring lower (cosine similarity, -1 to 1)."""
    offset: int = Field(default=0, ge=0, le=1000)
    """The first hit of the page (0-based) among the k ranked."""
    limit: int | None = Field(default=None, ge=1, le=1000)
    """Hits per page (default: all k)."""
    format: Literal["json", "csv", "geojson"] = "json"
    """`csv`: the page of hits as CSV (rank, id, image, scene, score, labels, image_url);
    `geojson`: as a GeoJSON FeatureCollection of the hits that have a footprint (for QGIS and
    the like), each Feature's properties carrying rank, id, image, scene, score, labels and
    links."""
    bbox: list[float] | None = Field(default=None, min_length=4, max_length=4)
    """Only scenes whose footprint's bounds meet this box: [min_lon, min_lat, max_lon,
    max_lat], WGS84 degrees (a form field: the four numbers separated by commas)."""
    within: dict[str, Any] | None = None
    """Only scenes whose footprint's centre lies in this GeoJSON Polygon (WGS84; a form
    field: the GeoJSON as text)."""
    near: list[float] | None = Field(default=None, min_length=3, max_length=3)
    """Only scenes whose footprint's centre lies within radius_m metres of a point: [lon,
    lat, radius_m]."""
    more_like: list[SceneIdIn] = Field(default_factory=list, max_length=100)
    """Relevance feedback: scenes the results should be like (Rocchio: the query plus 0.75
    times their mean); they are left out of the results."""
    less_like: list[SceneIdIn] = Field(default_factory=list, max_length=100)
    """Relevance feedback: scenes the results should not be like (minus 0.25 times their
    mean); they are left out of the results."""
    classify: bool = False
    """Also answer the query's labels (the classifier on the uploaded image, or on the
    archive scene's image): one request for what a person sees."""
    text: str | None = Field(default=None, max_length=300)
    """A phrase ("parked aircraft beside hangars, no cars") read onto the label vocabulary:
    what it reads as labels joins `labels_all`, negated parts `labels_none`; the answer's
    `understood` says what was read and what was not."""

    @model_validator(mode="after")
    def _places_are_valid(self) -> SearchRequest:
        from model.geo import parse_bbox, parse_near, polygon_from_geojson

        if self.bbox is not None:
            parse_bbox(self.bbox)
        if self.near is not None:
            parse_near(self.near)
        if self.within is not None:
            polygon_from_geojson(self.within)
        return self

    @model_validator(mode="after")
    def _has_a_query(self) -> SearchRequest:
        if self.scene_id is None and not (self.more_like or self.labels_all or self.text):
            raise ValueError(
                "give a scene_id, scenes to be like in more_like, labels in labels_all or text"
            )
        return self


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
    """min_lon, min_lat, max_lon, max_lat: the cell, or the box around its hits."""


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
    not_understood: list[str]
    """Parts of the text that read as no label of the vocabulary (they were ignored)."""


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


class ScenePlace(Schema):
    footprint: dict[str, Any]
    """A GeoJSON Polygon or Point, WGS84."""
    crs: str | None = None
    """The source raster's coordinate reference system."""
    source: str | None = None
    """The raster the scene was cut from."""
    window: list[int] | None = None
    """Its pixel window there: col_off, row_off, width, height."""


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$"
Name = Annotated[str, Field(pattern=NAME_PATTERN)]
Split = Literal["train", "val", "test"]


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


class Hit(Schema):
    id: SceneId
    image: str
    """The image file's stem."""
    score: float
    """Cosine similarity to the query, -1 to 1 (higher is more similar)."""
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


class ScenePage(Schema):
    scenes: list[SceneOut]
    """This page of the scenes that pass the filters."""
    total: int
    """Scenes that pass the filters, over all pages."""
    offset: int
    """The first scene of the page (0-based)."""
    limit: int
    """Scenes per page."""
    next_offset: int | None
    """Offset of the next page, None on the last."""


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


class Health(Schema):
    status: str
    """`ok` while the process answers."""


class Readiness(Schema):
    status: str
    """`ready`."""
    model_version: str
    """The model in service."""
    index_version: str
    """The index version in service."""
    index_count: int
    """Vectors in the index."""
    schema_revision: str
    """The database's Alembic revision."""
    scenes: int
    """Scenes in SQL."""
    warning: str | None
    """A newer model or index on disk that cannot be served yet, and why."""


class ReloadResponse(Schema):
    swapped: bool
    """Whether a new model or index was taken up."""
    model_version: str | None
    """The model in service now."""
    index_version: str | None
    """The index version in service now."""
    problem: str | None
    """Why the newest model or index is not in service, if it is not."""


class JobOut(Schema):
    id: int
    """The job's number (a row in SQL: every API process and worker sees it)."""
    kind: str
    """import, reindex, train or rollback."""
    command: str
    """The `grn` command line it runs."""
    status: str
    """queued, running, succeeded, failed or cancelled."""
    attempts: int
    """How many times a worker has taken it (a job whose worker died runs again)."""
    worker: str | None
    """The worker running it, or that ran it last (host:pid)."""
    progress: float | None
    """0 to 1, while its command shows a progress bar."""
    cancel_requested: bool
    """A cancel was asked for while it ran: its worker is stopping it."""
    returncode: int | None
    """The process's exit status, once finished."""
    created: float
    """Unix time it was queued."""
    started: float | None
    """Unix time a worker last took it."""
    finished: float | None
    """Unix time, once finished."""
    output: list[str]
    """The last lines the job printed."""

    @classmethod
    def of(cls, job: Job) -> JobOut:
        return cls(
            id=job.id, kind=job.kind, command=job.command, status=job.status,
            attempts=job.attempts, worker=job.worker, progress=job.progress,
            cancel_requested=job.cancel_requested, returncode=job.returncode,
            created=job.created, started=job.started, finished=job.finished, output=job.output,
        )  # fmt: skip


class ErrorBody(Schema):
    status: int
    """The HTTP status."""
    error: str
    """A stable code: invalid_image, too_large, scene_not_found, not_ready, ..."""
    message: str
    """What was wrong and what to do, in words."""
    details: list[dict[str, object]] | None = None
    """For 422: each invalid field (`loc`, `msg`, `type`)."""
