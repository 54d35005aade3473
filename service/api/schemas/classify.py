"""The bodies of `/classify`: the model's labels for uploaded images."""

from __future__ import annotations

from service.api.schemas.common import Schema
from service.usecases.classify import ImageLabels


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
    def of(cls, image: ImageLabels) -> ImageClassification:
        """An image's classification as the use case found it (`service.usecases.classify`),
        probabilities rounded to 6 decimals."""
        labels = [
            LabelScore(label=s.label, probability=round(s.probability, 6), present=s.present)
            for s in image.scores
        ]
        return cls(filename=image.name, labels=labels, predicted=image.predicted)


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
