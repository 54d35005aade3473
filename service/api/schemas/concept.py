"""The bodies of `POST /search/concept`: positives, negatives and the filter fields of
`/search` (`service.api.schemas.filters`) in, the probe's ranked hits out."""

from __future__ import annotations

from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from service.api.schemas.common import SceneId, SceneIdIn, Schema
from service.api.schemas.filters import ConceptName, FilterFields, TextList
from service.api.schemas.search import Hit
from service.usecases.concept import MAX_EXAMPLES, ConceptQuery


class ConceptRequest(FilterFields):
    """A concept taught by example: scenes that show it and, optionally, scenes that do
    not; or a saved concept by name. Every filter of `/search` applies to the hits."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [
                {"positives": ["12", "40", "77"], "negatives": ["5"], "k": 50},
                {"positives": ["12"], "k": 20, "labels_none": ["buildings"]},
                {"concept": "solar farm", "k": 50, "month": [6, 7, 8]},
            ]
        },
    )

    positives: Annotated[list[SceneIdIn], TextList] = Field(
        default_factory=list, max_length=MAX_EXAMPLES
    )
    """Indexed scenes that show the concept (at least one, at most 100)."""
    negatives: Annotated[list[SceneIdIn], TextList] = Field(
        default_factory=list, max_length=MAX_EXAMPLES
    )
    """Indexed scenes that do not (optional, at most 100): wrong hits of a previous round."""
    concept: ConceptName | None = None
    """A saved concept (`GET /concepts`) to rank the archive by, instead of `positives` and
    `negatives`: its probe scores the scenes nearest its direction, its examples left out."""
    k: int = Field(default=10, ge=1, le=1000)
    """How many of the best-scoring scenes to rank, 1 to 1000."""
    min_score: float | None = None
    """Drop hits the probe scores lower (about 1: like the positives, about 0: not)."""
    offset: int = Field(default=0, ge=0, le=1000)
    """The first hit of the page (0-based) among the k ranked."""
    limit: int | None = Field(default=None, ge=1, le=1000)
    """Hits per page (default: all k)."""

    def to_query(self) -> ConceptQuery:
        """The request as the use case's query (`concept_search`)."""
        return ConceptQuery(
            positives=self.positives,
            negatives=self.negatives,
            k=self.k,
            where=self.to_filter(),
            min_score=self.min_score,
            offset=self.offset,
            limit=self.limit,
            concept=self.concept,
        )

    @model_validator(mode="after")
    def _examples_or_concept(self) -> ConceptRequest:
        if self.concept is not None and (self.positives or self.negatives):
            raise ValueError(
                "give positives (and negatives) or a saved concept, not both: refine a saved "
                "concept with PATCH /concepts/{name}"
            )
        return self


class ConceptResponse(Schema):
    hits: list[Hit]
    """This page of the ranked hits, best first; `score` is the probe's (about 1: like the
    positives, about 0: not), not a cosine."""
    total: int
    """Hits over all pages (at most k)."""
    offset: int
    """The first hit of the page (0-based)."""
    limit: int
    """Hits per page."""
    next_offset: int | None
    """Offset of the next page, None on the last."""
    candidates: int
    """Scenes the index gathered (nearest of each positive and of their mean, filters
    applied) and the probe scored."""
    descriptors: bool
    """The probe used the backbone descriptors beside the embedding."""
    concept: str | None
    """The saved concept ranked by, if one was."""
    positives: list[SceneId]
    """The scenes the probe learned the concept from."""
    negatives: list[SceneId]
    """The scenes it learned the concept is not."""
    model_version: str
    """The model that embedded the archive."""
    index_version: str
    """The index version searched."""
    elapsed_ms: float
    """Time spent in the service, in milliseconds."""
