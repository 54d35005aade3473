"""Vectors an archive carries with it: what a model made of its scenes, computed elsewhere (a
GPU cluster, or `grn synth`), so that indexing them needs no image decoded and no network run.

    ARCHIVE/vectors/
      manifest.json      format, model version, vector and descriptor widths, label names,
                         count, and what made them
      ids.npy            int64 scene ids (`model.archive.scene_id` of each image stem)
      vectors.npy        float32 (count, vector_dim): the vectors the index ranks by
      probabilities.npy  float32 (count, labels): the model's label probabilities
      descriptors.npy    float16 (count, F): backbone descriptors (optional, `model.rerank`)

The embedding step of a FAISS reindex (`index.stores.faiss_build`) takes a scene's rows from
here when the folder's model version is the one in use, and embeds the others as usual;
vectors of another model are ignored (its scenes are embedded).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from index.embedded import EmbeddingResult
from index.row_files import GatheredRows, Rows

FOLDER = "vectors"
MANIFEST = "manifest.json"
FORMAT = 1


class GivenVectorsError(ValueError):
    """A vectors folder that is malformed or does not match its manifest."""


@dataclass
class GivenVectors:
    folder: Path
    manifest: dict[str, Any]
    ids: np.ndarray
    vectors: np.ndarray
    probabilities: np.ndarray
    descriptors: np.ndarray | None
    _order: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    @classmethod
    def open(cls, folder: str | Path) -> GivenVectors:
        """Read a vectors folder (the matrices memory-mapped, read on demand)."""
        folder = Path(folder)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise GivenVectorsError(f"{folder}: no readable {MANIFEST} ({exc})") from exc
        if manifest.get("format") != FORMAT:
            raise GivenVectorsError(f"{folder}: not a vectors folder of format {FORMAT}")
        ids = np.load(folder / "ids.npy")
        vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        probabilities = np.load(folder / "probabilities.npy", mmap_mode="r")
        path = folder / "descriptors.npy"
        descriptors = np.load(path, mmap_mode="r") if path.is_file() else None
        count = int(manifest["count"])
        shapes = [len(ids), len(vectors), len(probabilities)]
        if descriptors is not None:
            shapes.append(len(descriptors))
        if any(n != count for n in shapes) or vectors.shape[1] != manifest["vector_dim"]:
            raise GivenVectorsError(
                f"{folder}: the matrices do not hold the {count} rows of "
                f"{manifest['vector_dim']}-d vectors its manifest announces"
            )
        order = np.argsort(ids, kind="stable")
        if len(ids) > 1 and np.any(ids[order][1:] == ids[order][:-1]):
            raise GivenVectorsError(f"{folder}: a scene id is listed twice")
        return cls(folder, manifest, ids, vectors, probabilities, descriptors, order)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The row of each id (-1 for ids the folder does not hold)."""
        ids = np.asarray(ids, np.int64)
        if len(self.ids) == 0:
            return np.full(len(ids), -1, np.int64)
        sorted_ids = self.ids[self._order]
        at = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        return np.where(sorted_ids[at] == ids, self._order[at], -1)

    def matches(self, model_version: str, vector_dim: int) -> bool:
        """Whether these are that model's vectors."""
        return self.model_version == model_version and self.vectors.shape[1] == vector_dim


def vectors_folder(archive_root: str | Path) -> Path | None:
    """The archive's vectors folder, when it carries one."""
    folder = Path(archive_root) / FOLDER
    return folder if (folder / MANIFEST).is_file() else None


class GivenVectorsWriter:
    """Writes a vectors folder row block by row block (`add`), memory staying bounded; the
    manifest last (`close`), so a folder without one was never finished."""

    def __init__(
        self,
        folder: str | Path,
        count: int,
        *,
        model_version: str,
        vector_dim: int,
        label_names: list[str],
        descriptor_dim: int | None,
        made_by: dict[str, Any],
    ) -> None:
        from numpy.lib.format import open_memmap

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=False)
        self.count = count
        self.manifest = {
            "format": FORMAT,
            "model_version": model_version,
            "vector_dim": vector_dim,
            "label_names": label_names,
            "descriptor_dim": descriptor_dim,
            "count": count,
            "made_by": made_by,
        }

        def matrix(name: str, dtype: Any, width: int | None = None) -> np.ndarray:
            shape = (count,) if width is None else (count, width)
            return open_memmap(self.folder / name, mode="w+", dtype=dtype, shape=shape)

        self.ids = matrix("ids.npy", np.int64)
        self.vectors = matrix("vectors.npy", np.float32, vector_dim)
        self.probabilities = matrix("probabilities.npy", np.float32, len(label_names))
        self.descriptors = (
            matrix("descriptors.npy", np.float16, descriptor_dim) if descriptor_dim else None
        )

    def add(
        self,
        first: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        probabilities: np.ndarray,
        descriptors: np.ndarray | None,
    ) -> None:
        end = first + len(ids)
        self.ids[first:end] = ids
        self.vectors[first:end] = vectors
        self.probabilities[first:end] = probabilities
        if self.descriptors is not None and descriptors is not None:
            self.descriptors[first:end] = descriptors

    def close(self) -> None:
        for matrix in (self.ids, self.vectors, self.probabilities, self.descriptors):
            if matrix is not None:
                matrix.flush()  # type: ignore[attr-defined]
        tmp = self.folder / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2))
        os.replace(tmp, self.folder / MANIFEST)


def given_for(archive: Any, model_version: str, vector_dim: int) -> list[GivenVectors]:
    """The vectors folders of the archive's root and sources that hold this model's vectors."""
    found = []
    for root in dict.fromkeys((archive.root, *getattr(archive, "sources", ()))):
        folder = vectors_folder(root)
        if folder is not None:
            given = GivenVectors.open(folder)
            if given.matches(model_version, vector_dim):
                found.append(given)
    return found


@dataclass
class Taken:
    """The rows of some scenes, taken from vectors folders."""

    mask: np.ndarray
    """Over the ids asked for: True where a folder held the scene."""
    ids: np.ndarray
    """The ids of the scenes taken, sorted; the matrices' rows in that order."""
    vectors: Rows
    probabilities: Rows
    descriptors: Rows | None
    """None when a folder that gave rows keeps no descriptors."""


def take_given(folders: list[GivenVectors], ids: np.ndarray, descriptors: bool) -> Taken:
    """The rows of `ids` that `folders` hold (the first folder holding a scene gives it),
    sorted by id. Nothing is read here: each matrix is a `GatheredRows` over the folders'
    files, read with `pread` a chunk at a time by whoever uses it (the index build, the new
    version's writer), so the process never holds the archive's rows, nor the pages of a
    mapped file."""
    from index.vectors import VectorFile

    ids = np.asarray(ids, np.int64)
    mask = np.zeros(len(ids), bool)
    found: list[tuple[np.ndarray, GivenVectors, np.ndarray]] = []
    for given in folders:
        rows = given.positions(ids)
        fresh = (rows >= 0) & ~mask
        if fresh.any():
            found.append((np.flatnonzero(fresh), given, rows[fresh]))
            mask |= fresh
    held = np.flatnonzero(mask)
    order = np.argsort(ids[held], kind="stable")
    slot = np.empty(len(held), np.int64)  # where each held scene goes in the sorted result
    slot[order] = np.arange(len(held))
    parts = [(slot[np.searchsorted(held, where)], given, rows) for where, given, rows in found]

    def gathered(name: str) -> GatheredRows | None:
        """One matrix of the taken rows, sorted by id."""
        sources: list[Rows] = []
        source_of, row_of = np.zeros(len(held), np.int32), np.zeros(len(held), np.int64)
        for slots, given, rows in parts:
            path = given.folder / f"{name}.npy"
            if not path.is_file():
                return None
            source_of[slots], row_of[slots] = len(sources), rows
            sources.append(VectorFile(path))
        return GatheredRows(sources, source_of, row_of) if sources else None

    vectors = gathered("vectors")
    probabilities = gathered("probabilities")
    return Taken(
        mask,
        ids[held][order],
        vectors if vectors is not None else np.zeros((0, 0), np.float32),
        probabilities if probabilities is not None else np.zeros((0, 0), np.float32),
        gathered("descriptors") if descriptors else None,
    )


def with_taken(embedded: EmbeddingResult, taken: Taken) -> EmbeddingResult:
    """An embedding step's result joined with the rows taken from vectors folders."""
    if not taken.mask.any():
        return embedded
    if len(embedded.ids) == 0:  # every scene taken: no copy
        return replace(
            embedded, ids=taken.ids, embeddings=taken.vectors,
            probabilities=taken.probabilities, descriptors=taken.descriptors,
        )  # fmt: skip
    descriptors = None
    if embedded.descriptors is not None and taken.descriptors is not None:
        descriptors = GatheredRows.joined([embedded.descriptors, taken.descriptors])
    # joined, not copied: the embedded rows may be the job's files, read on demand
    return replace(
        embedded,
        ids=np.concatenate([embedded.ids, taken.ids]),
        embeddings=GatheredRows.joined([embedded.embeddings, taken.vectors]),
        probabilities=GatheredRows.joined([embedded.probabilities, taken.probabilities]),
        descriptors=descriptors,
    )


def nothing_embedded(card: Any, descriptors: bool) -> EmbeddingResult:
    """An embedding step that had no scene to embed (every one was taken)."""
    from model.rerank import no_descriptors

    return EmbeddingResult(
        ids=np.zeros(0, np.int64),
        embeddings=np.zeros((0, card.vector_dim), np.float32),
        probabilities=np.zeros((0, len(card.label_names)), np.float32),
        model_version=card.version,
        computed=0,
        seconds=0.0,
        broken=[],
        descriptors=no_descriptors(card) if descriptors else None,
    )
