"""Rows taken from the vectors folders an archive carries (`index.given_vectors`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from index.given_vectors import GivenVectors, GivenVectorsWriter, take_given
from index.vectors import FullVectors


def _folder(path: Path, ids: np.ndarray, seed: int, descriptors: bool = True) -> GivenVectors:
    rng = np.random.default_rng(seed)
    writer = GivenVectorsWriter(
        path, len(ids), model_version="m", vector_dim=4, label_names=["a", "b"],
        descriptor_dim=6 if descriptors else None, made_by={"test": True},
    )  # fmt: skip
    writer.add(
        0, ids, rng.standard_normal((len(ids), 4), dtype=np.float32),
        rng.random((len(ids), 2), dtype=np.float32),
        rng.standard_normal((len(ids), 6)).astype(np.float16) if descriptors else None,
    )  # fmt: skip
    writer.close()
    return GivenVectors.open(path)


def test_taken_rows_come_sorted_by_id_from_the_first_folder_holding_them(tmp_path: Path) -> None:
    first = _folder(tmp_path / "first", np.array([50, 10, 40, 30, 20], np.int64), seed=1)
    second = _folder(tmp_path / "second", np.array([30, 60, 70, 5], np.int64), seed=2)
    asked = np.array([70, 30, 99, 10, 60, 5, 50], np.int64)  # 99: in neither folder

    taken = take_given([first, second], asked, descriptors=True)

    assert taken.mask.tolist() == [True, True, False, True, True, True, True]
    assert taken.ids.tolist() == [5, 10, 30, 50, 60, 70]
    assert taken.descriptors is not None
    for row, scene in enumerate(taken.ids):
        given = first if scene in first.ids else second  # 30: the first folder's row
        at = int(given.positions(np.array([scene]))[0])
        assert np.array_equal(taken.vectors[row], given.vectors[at])
        assert np.array_equal(taken.probabilities[row], given.probabilities[at])
        assert np.array_equal(taken.descriptors[row], given.descriptors[at])


def test_a_folder_without_descriptors_gives_none(tmp_path: Path) -> None:
    plain = _folder(tmp_path / "plain", np.array([3, 1, 2], np.int64), seed=3, descriptors=False)
    taken = take_given([plain], np.array([2, 3], np.int64), descriptors=True)
    assert taken.ids.tolist() == [2, 3] and taken.descriptors is None


def test_rows_sorted_by_id_are_kept_without_a_copy() -> None:
    rows = np.arange(12, dtype=np.float16).reshape(4, 3)
    kept = FullVectors.from_unsorted(np.array([1, 4, 7, 9]), rows, np.float16)
    assert kept.vectors is rows
    shuffled = FullVectors.from_unsorted(np.array([7, 1, 9, 4]), rows, np.float16)
    assert shuffled.ids.tolist() == [1, 4, 7, 9]
    assert np.array_equal(shuffled.vectors, rows[[1, 3, 0, 2]])
