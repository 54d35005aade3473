"""model.resize against torchvision: the same bytes, shrinking and enlarging, for the real
UCM scenes (256 x 256 and the few 256 x 247 ones) and for random sizes and content."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model.imageio import read_image
from model.inference import prepare_batch, to_uint8_tensor
from model.resize import resize_chw, uint8_batch


def _torchvision(image: np.ndarray, size: int) -> np.ndarray:
    return to_uint8_tensor(image, size).numpy()


@pytest.mark.parametrize("seed", range(6))
def test_random_sizes_give_torchvisions_bytes(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(12):
        height, width = (int(n) for n in rng.integers(1, 640, 2))
        size = int(rng.choice([1, 2, 7, 64, 224, 256, 299, 512]))
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        ramp = np.add.outer(np.arange(height), 3 * np.arange(width)) % 256
        smooth = np.stack([ramp, ramp[::-1], 255 - ramp], axis=2).astype(np.uint8)
        for image in (noise, smooth):
            ours = resize_chw(image, size)
            assert ours.shape == (3, size, size)
            assert np.array_equal(ours, _torchvision(image, size)), (height, width, size)


def test_ucm_scenes_give_torchvisions_bytes(ucm_root: Path) -> None:
    files = sorted((ucm_root / "images").rglob("*.jpg"))[::100]
    assert files
    images = [read_image(path) for path in files]
    for size in (224, 256, 300):
        ours = uint8_batch(images, size)
        theirs = np.stack([_torchvision(image, size) for image in images])
        assert np.array_equal(ours, theirs)
        assert np.array_equal(prepare_batch(images, size).numpy(), theirs)


def test_refuses_what_is_not_an_rgb_byte_image() -> None:
    with pytest.raises(ValueError, match="uint8"):
        resize_chw(np.zeros((8, 8, 3), np.float32), 4)
    with pytest.raises(ValueError, match="uint8"):
        resize_chw(np.zeros((8, 8), np.uint8), 4)
