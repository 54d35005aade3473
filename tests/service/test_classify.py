"""The classify use case (`service.usecases.classify`) that POST /classify and `grn classify`
both call: a real tiny model run in this process on UCM image files."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from servers import Served

from model.imageio import InvalidImageError, read_image
from model.inference import predict
from service.usecases.classify import (
    Classification,
    FileModel,
    classify_images,
    no_classifier_note,
)


class CountingModel:
    """A `FileModel` that counts how often the network ran."""

    def __init__(self, model: FileModel) -> None:
        self.model = model
        self.runs = 0

    async def probabilities(self, images: Sequence[tuple[str, Path]]) -> Sequence[np.ndarray]:
        self.runs += 1
        return await self.model.probabilities(images)

    async def decode(self, images: Sequence[tuple[str, Path]]) -> None:
        await self.model.decode(images)


@pytest.fixture(scope="module")
def model(served: Served) -> FileModel:
    return FileModel.load(served.model, "cpu")


@pytest.fixture(scope="module")
def images(ucm_root: Path) -> list[tuple[str, Path]]:
    files = [*sorted((ucm_root / "images" / "airplane").iterdir())[:2]]
    files += sorted((ucm_root / "images" / "beach").iterdir())[:1]
    return [(path.name, path) for path in files]


def classify(
    images: list[tuple[str, Path]], model: FileModel | CountingModel, labels: list[str] | None
) -> Classification:
    card = model.model.card if isinstance(model, CountingModel) else model.card
    return asyncio.run(classify_images(images, card, model, labels))


def test_every_label_of_every_image_from_the_network(
    model: FileModel, images: list[tuple[str, Path]]
) -> None:
    card = model.card
    expected = predict(model.net, card, [read_image(path) for _, path in images], model.device)
    classified = classify(images, model, None)
    assert classified.note is None
    assert [image.name for image in classified.images] == [name for name, _ in images]
    for image, probabilities in zip(classified.images, expected.probabilities, strict=True):
        assert [score.label for score in image.scores] == card.label_names
        got = np.array([score.probability for score in image.scores])
        np.testing.assert_allclose(got, probabilities, rtol=1e-5, atol=1e-6)
        at_threshold = [
            name
            for name, p, t in zip(card.label_names, probabilities, card.thresholds, strict=True)
            if p >= t
        ]
        assert image.predicted == at_threshold


def test_an_archive_with_the_models_labels_gets_the_same_answer(
    model: FileModel, images: list[tuple[str, Path]]
) -> None:
    here = classify(images, model, None)
    served = classify(images, model, [*model.card.label_names, "an archive's own label"])
    assert served == here


def test_an_archive_without_the_models_labels_runs_no_network(
    model: FileModel, images: list[tuple[str, Path]], tmp_path: Path
) -> None:
    counting = CountingModel(model)
    classified = classify(images, counting, model.card.label_names[1:])
    assert counting.runs == 0
    assert [image.scores for image in classified.images] == [(), (), ()]
    assert [image.predicted for image in classified.images] == [[], [], []]
    assert classified.note == no_classifier_note(model.card)
    assert model.card.label_names[0] in classified.note

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image at all")
    with pytest.raises(InvalidImageError, match=r"broken\.jpg"):
        classify([*images, (broken.name, broken)], counting, [])
    assert counting.runs == 0
