"""The API's request and response bodies (pydantic), apart from the SQL models."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

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


class LabelScore(BaseModel):
    label: str
    probability: float
    present: bool
    """Probability at or above the label's threshold (from the model card)."""


class ImageClassification(BaseModel):
    filename: str
    labels: list[LabelScore]
    predicted: list[str]


class ClassifyResponse(BaseModel):
    labels: list[LabelScore]
    """Of the first image."""
    predicted: list[str]
    """Of the first image."""
    results: list[ImageClassification]
    """One entry per uploaded image, in upload order."""
    model_version: str
    elapsed_ms: float


class SearchRequest(BaseModel):
    """Search by an archive scene (JSON body); an upload takes the same fields as form
    fields, with `file` instead of `scene_id`."""

    model_config = ConfigDict(extra="forbid")

    scene_id: SceneIdIn
    k: int = Field(default=10, ge=1, le=1000)
    labels_all: list[str] = Field(default_factory=list, max_length=1000)
    """Every one of these labels must be present."""
    labels_any: list[str] = Field(default_factory=list, max_length=1000)
    """At least one of these labels must be present."""
    scene: str | None = Field(default=None, max_length=200)
    """Only scenes of this scene folder."""
    exclude_ids: list[SceneIdIn] = Field(default_factory=list, max_length=1000)
    include_query: bool = False
    """Searching by scene id: also return the query scene itself (default: left out)."""
    min_score: float | None = Field(default=None, ge=-1.0, le=1.0)
    offset: int = Field(default=0, ge=0, le=1000)
    limit: int | None = Field(default=None, ge=1, le=1000)
    """Hits per page (default: all k)."""
    format: Literal["json", "csv"] = "json"
    """`csv`: the page of hits as CSV (rank, id, image, scene, score, labels, image_url)."""
    classify: bool = False
    """Also answer the query's labels (the classifier on the uploaded image, or on the
    archive scene's image): one request for what a person sees."""


class SceneOut(BaseModel):
    id: SceneId
    image: str
    """The image file's stem."""
    scene: str
    split: str
    labels: list[str]
    width: int
    height: int
    image_url: str
    thumbnail_url: str


class Hit(BaseModel):
    id: SceneId
    image: str
    score: float
    labels: list[str]
    scene: str
    image_url: str
    thumbnail_url: str


class SearchResponse(BaseModel):
    hits: list[Hit]
    total: int
    """Hits over all pages (at most k)."""
    offset: int
    limit: int
    next_offset: int | None
    """Offset of the next page, None on the last."""
    query_id: SceneId | None
    """The archive scene searched by, if any."""
    model_version: str
    index_version: str
    elapsed_ms: float
    labels: list[LabelScore] | None = None
    """With `classify`: the query's labels, as /classify answers them."""
    predicted: list[str] | None = None
    """With `classify`: the labels at or above their thresholds."""


class ScenePage(BaseModel):
    scenes: list[SceneOut]
    total: int
    offset: int
    limit: int
    next_offset: int | None


class LabelCount(BaseModel):
    name: str
    count: int


class LabelsResponse(BaseModel):
    labels: list[LabelCount]


class FoldersResponse(BaseModel):
    folders: list[LabelCount]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    model_version: str
    index_version: str
    index_count: int
    schema_revision: str
    scenes: int
    warning: str | None
    """A newer model or index on disk that cannot be served yet, and why."""


class ReloadResponse(BaseModel):
    swapped: bool
    model_version: str | None
    index_version: str | None
    problem: str | None


class JobOut(BaseModel):
    id: int
    kind: str
    """import or reindex."""
    command: str
    status: str
    """running, succeeded or failed."""
    returncode: int | None
    started: float
    finished: float | None
    output: list[str]
    """The last lines the job printed."""


class ErrorBody(BaseModel):
    status: int
    error: str
    """A stable code: invalid_image, too_large, scene_not_found, not_ready, ..."""
    message: str
    details: list[dict[str, object]] | None = None
