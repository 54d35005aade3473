"""The bodies of `/concepts`: a concept to save (name and example scenes), a refinement, and
a saved concept with what it finds in the archive (`service.usecases.saved_concepts`)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import ConfigDict, Field, model_validator

from service.api.schemas.common import SceneId, SceneIdIn, Schema
from service.api.schemas.filters import ConceptName
from service.usecases.concept import MAX_EXAMPLES
from service.usecases.saved_concepts import THRESHOLD, ConceptChange, ConceptFacet

Threshold = Annotated[float, Field(ge=-10.0, le=10.0)]
Examples = Annotated[list[SceneIdIn], Field(max_length=MAX_EXAMPLES)]


class ConceptIn(Schema):
    """A concept to teach by example and save by name."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={
            "examples": [{"name": "solar farm", "positives": ["12", "40"], "negatives": ["5"]}]
        },
    )

    name: ConceptName
    """Its name: how filters (`concepts`) and `/concepts/{name}` call it."""
    positives: Examples
    """Indexed scenes that show it (at least one, at most 100)."""
    negatives: Examples = Field(default_factory=list)
    """Indexed scenes that do not (at most 100)."""
    threshold: Threshold = THRESHOLD
    """The probe's score from which a scene counts as showing it (about 1: like the
    positives, about 0: not)."""


class ConceptPatch(Schema):
    """A refinement: any of a new name, scenes judged (added, or moved from one side to the
    other), scenes no longer judged, a new threshold. Changed examples re-fit the probe."""

    model_config = ConfigDict(
        extra="forbid",
        use_attribute_docstrings=True,
        json_schema_extra={"examples": [{"add_negatives": ["77"]}, {"name": "solar park"}]},
    )

    name: ConceptName | None = None
    """A new name."""
    add_positives: Examples = Field(default_factory=list)
    """Scenes that show it (a negative given here becomes a positive)."""
    add_negatives: Examples = Field(default_factory=list)
    """Scenes that do not: wrong hits (a positive given here becomes a negative)."""
    remove: Examples = Field(default_factory=list)
    """Scenes no longer judged either way."""
    threshold: Threshold | None = None
    """A new threshold."""

    @model_validator(mode="after")
    def _changes_something(self) -> ConceptPatch:
        if not self.model_fields_set:
            raise ValueError(
                "nothing to change: give name, add_positives, add_negatives, remove or threshold"
            )
        return self

    def to_change(self) -> ConceptChange:
        return ConceptChange(
            name=self.name, add_positives=self.add_positives, add_negatives=self.add_negatives,
            remove=self.remove, threshold=self.threshold,
        )  # fmt: skip


class ConceptOut(Schema):
    name: str
    """Its name."""
    positives: list[SceneId]
    """The scenes it was taught with."""
    negatives: list[SceneId]
    """The scenes it was taught it is not."""
    threshold: float
    """The score from which a scene counts as showing it."""
    model_version: str
    """The model whose embeddings its probe was fitted on."""
    index_version: str
    """The index version it was fitted from."""
    stale: bool
    """Fitted with another model than the served one and not re-fitted: none of its
    positives is in the served index. It filters nothing until refined."""
    count: int | None
    """Scenes of the served archive it scores at or above its threshold, as a label's count
    (None when stale)."""
    scenes: int
    """Scenes of the served archive."""
    created: datetime | None
    """When it was saved (UTC)."""
    updated: datetime | None
    """When it was last renamed, refined or re-fitted (UTC)."""

    @classmethod
    def of(cls, facet: ConceptFacet) -> ConceptOut:
        concept = facet.concept
        return cls(
            name=concept.name, positives=list(concept.positives),
            negatives=list(concept.negatives), threshold=concept.threshold,
            model_version=concept.model_version, index_version=concept.index_version,
            stale=facet.stale, count=facet.count, scenes=facet.scenes, created=concept.created,
            updated=concept.updated,
        )  # fmt: skip


class ConceptsResponse(Schema):
    concepts: list[ConceptOut]
    """Every saved concept, by name."""
    model_version: str
    """The served model, which scored them."""
