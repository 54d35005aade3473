"""The bodies of `/classify`: the model's labels for uploaded images, and whether the
model's classifier speaks for the archive."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from service.api.schemas.common import Schema

if TYPE_CHECKING:
    from model.card import ModelCard


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
