"""Composite query images for the region tests: two real UCM scenes of different labels
side by side, so that a region (the left or the right half) is exactly one of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from model.archive import Archive, ArchiveEntry, scene_id
from model.imageio import read_image

LEFT_FOLDER, RIGHT_FOLDER = "airplane", "chaparral"
"""The scene folders of the two halves: their first scenes share no label."""


@dataclass(frozen=True)
class Composite:
    path: Path
    """A PNG (lossless: a half's pixels are the scene's own)."""
    left: ArchiveEntry
    right: ArchiveEntry
    width: int
    """Of one half; the composite is twice as wide."""
    height: int

    @property
    def left_id(self) -> str:
        return str(scene_id(self.left.name))

    @property
    def right_id(self) -> str:
        return str(scene_id(self.right.name))

    def half(self, side: str) -> list[int]:
        """The region [x0, y0, x1, y1] of the left or the right half."""
        x0 = 0 if side == "left" else self.width
        return [x0, 0, x0 + self.width, self.height]


def first_of(archive: Archive, folder: str) -> ArchiveEntry:
    return next(scene for scene in archive.scenes if scene.folder == folder)


def composite(archive: Archive, target: Path) -> Composite:
    """The first scene of LEFT_FOLDER beside the first of RIGHT_FOLDER, written to `target`."""
    left, right = first_of(archive, LEFT_FOLDER), first_of(archive, RIGHT_FOLDER)
    assert not set(np.flatnonzero(left.labels)) & set(np.flatnonzero(right.labels))
    a, b = read_image(left.path), read_image(right.path)
    assert a.shape == b.shape, (a.shape, b.shape)
    Image.fromarray(np.hstack([a, b])).save(target)
    return Composite(target, left, right, a.shape[1], a.shape[0])
