"""The labels of images, as POST /classify and `grn classify` answer them: the model's
classifier run on the images where it speaks for the archive, each label's probability paired
with the card's label names and thresholds.

Where the network runs is the caller's: the app's batcher over uploads (`service.api`), or
`FileModel`, the model file loaded in this process, over image files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

if TYPE_CHECKING:
    import torch

    from model.card import ModelCard
    from model.network import GRNNet

ImageT = TypeVar("ImageT")
ImageT_contra = TypeVar("ImageT_contra", contravariant=True)


class ImageModel(Protocol[ImageT_contra]):
    """Runs the network on named images of some kind (uploaded bytes, files), decoding them
    (the names say which one is broken)."""

    async def probabilities(
        self, images: Sequence[tuple[str, ImageT_contra]]
    ) -> Sequence[np.ndarray]:
        """Each image's label probabilities, (labels,) each, in the images' order."""
        ...

    async def decode(self, images: Sequence[tuple[str, ImageT_contra]]) -> None:
        """Decode the images without the network: a broken one raises all the same."""
        ...


@dataclass(frozen=True)
class LabelProbability:
    label: str
    probability: float
    present: bool
    """At or above the label's threshold (from the model card)."""


@dataclass(frozen=True)
class ImageLabels:
    name: str
    scores: tuple[LabelProbability, ...]
    """Every label of the model, in the model's order; empty when the classifier does not
    answer for the archive."""

    @property
    def predicted(self) -> list[str]:
        """The labels at or above their thresholds."""
        return [score.label for score in self.scores if score.present]


@dataclass(frozen=True)
class Classification:
    images: list[ImageLabels]
    """One per image, in the images' order."""
    note: str | None = None
    """Why the labels are empty: the archive does not carry the model's labels."""


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


def image_labels(
    name: str, card: ModelCard, probabilities: Sequence[float] | np.ndarray
) -> ImageLabels:
    """An image's labels from the classifier's probabilities: every label's probability,
    present at or above the card's threshold for it."""
    thresholds = card.thresholds
    scores = (
        LabelProbability(label, float(p), bool(p >= threshold))
        for label, p, threshold in zip(card.label_names, probabilities, thresholds, strict=True)
    )
    return ImageLabels(name, tuple(scores))


async def classify_images(
    images: Sequence[tuple[str, ImageT]],
    card: ModelCard,
    model: ImageModel[ImageT],
    archive_labels: Sequence[str] | None = None,
) -> Classification:
    """The labels of named images under the model of `card`, which `model` runs. With
    `archive_labels` (the served archive's label names), the network runs only where its
    classifier speaks for that archive (`classifier_applies`); elsewhere the images are
    decoded all the same, so that a broken one is refused either way, and the answer holds
    no labels and says why. None: no archive to answer for (image files classified here)."""
    if archive_labels is not None and not classifier_applies(card, archive_labels):
        await model.decode(images)
        unlabelled = [ImageLabels(name, ()) for name, _ in images]
        return Classification(unlabelled, no_classifier_note(card))
    probabilities = await model.probabilities(images)
    return Classification(
        [image_labels(name, card, p) for (name, _), p in zip(images, probabilities, strict=True)]
    )


@dataclass(frozen=True)
class FileModel:
    """The network of a model file, run in this process on image files."""

    net: GRNNet
    card: ModelCard
    device: torch.device

    @classmethod
    def load(cls, model_path: str | Path, device: str) -> FileModel:
        """The model of `model_path` (a file, or a training folder holding it) on `device`
        (auto, cpu, cuda or cuda:N)."""
        from model.card import load_model
        from model.inference import resolve_device

        resolved = resolve_device(device)
        net, card = load_model(model_path, resolved)
        return cls(net, card, resolved)

    async def probabilities(self, images: Sequence[tuple[str, Path]]) -> Sequence[np.ndarray]:
        from model.inference import predict

        return list(predict(self.net, self.card, self._read(images), self.device).probabilities)

    async def decode(self, images: Sequence[tuple[str, Path]]) -> None:
        self._read(images)

    @staticmethod
    def _read(images: Sequence[tuple[str, Path]]) -> list[np.ndarray]:
        from model.imageio import read_image

        return [read_image(path) for _, path in images]
