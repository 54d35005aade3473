"""Reading the catalog from SQL for its arrays (`service.storage.scene_table`): the change
counter that says when to re-read, the embeddings SQL keeps for scenes added through the API
(`WrittenVectors`), chunked reads by id, and columns of names coded as integers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, select
from sqlalchemy.exc import OperationalError, ProgrammingError

from service.storage.db import CatalogState, SceneVector

CHUNK = 5000
"""Scene ids per `IN (...)` when re-reading changed scenes."""


def coded(values: Sequence[Any]) -> tuple[np.ndarray, list[Any]]:
    """A column of names as int32 codes into its sorted distinct names."""
    names = sorted(set(values))
    code = {name: number for number, name in enumerate(names)}
    return np.fromiter((code[v] for v in values), dtype=np.int32, count=len(values)), names


def merged_coded(
    first: np.ndarray, first_names: list[Any], second: np.ndarray, second_names: list[Any]
) -> tuple[np.ndarray, list[Any]]:
    """Two coded columns as one, over the union of their names."""
    names = sorted(set(first_names) | set(second_names))
    code = {name: number for number, name in enumerate(names)}
    remap = [
        np.asarray([code[n] for n in part], dtype=np.int32) for part in (first_names, second_names)
    ]
    return np.concatenate([remap[0][first], remap[1][second]]).astype(np.int32), names


class SchemaNotCurrentError(RuntimeError):
    """The database lacks a table this version needs: `grn db upgrade` has not run."""


GENERATION_SQL = f"SELECT generation FROM {CatalogState.__tablename__} WHERE id = 1"
"""Read on every search: as driver SQL it skips building and compiling a statement."""


def generation_of(connection: Connection) -> int:
    """The catalog's change counter (raised by triggers on every write)."""
    try:
        generation = connection.exec_driver_sql(GENERATION_SQL).scalar()
    except (OperationalError, ProgrammingError) as exc:
        if "catalog_state" not in str(exc):
            raise
        raise SchemaNotCurrentError(
            "the database schema is older than this version: run `grn db upgrade`"
        ) from exc
    if generation is None:
        raise SchemaNotCurrentError("catalog_state has no row: run `grn db upgrade`")
    return int(generation)


@dataclass(frozen=True)
class WrittenVectors:
    """The embeddings SQL keeps for scenes added through the API (`scene_vectors`), under
    one model: the scenes an index version may not hold yet (`service.storage.live_index`)."""

    model_version: str | None
    ids: np.ndarray
    """(m,) int64, sorted."""
    vectors: np.ndarray
    """(m, dim) float32 unit vectors."""
    probabilities: np.ndarray | None
    """(m, labels) float32 (NaN where a row kept none); None when no row kept any."""

    @classmethod
    def empty(cls, model_version: str | None) -> WrittenVectors:
        return cls(model_version, np.zeros(0, np.int64), np.zeros((0, 0), np.float32), None)

    @classmethod
    def read(
        cls, connection: Connection, model_version: str | None, only: np.ndarray | None = None
    ) -> WrittenVectors:
        """The rows of `model_version` (of the scenes in `only`, when given)."""
        if model_version is None:
            return cls.empty(None)
        query = select(
            SceneVector.scene_id, SceneVector.embedding, SceneVector.probabilities
        ).where(SceneVector.model_version == model_version)
        if only is None:
            rows = list(connection.execute(query).all())
        else:
            rows = []
            wanted = [int(i) for i in only]
            for start in range(0, len(wanted), CHUNK):
                chunk = wanted[start : start + CHUNK]
                rows += connection.execute(query.where(SceneVector.scene_id.in_(chunk))).all()
        if not rows:
            return cls.empty(model_version)
        rows.sort(key=lambda row: row[0])
        ids = np.fromiter((row[0] for row in rows), dtype=np.int64, count=len(rows))
        vectors = np.stack([np.frombuffer(row[1], dtype=np.float32) for row in rows])
        widths = {len(row[2]) // 4 for row in rows if row[2] is not None}
        probabilities = None
        if len(widths) == 1:
            width = widths.pop()
            probabilities = np.full((len(rows), width), np.nan, dtype=np.float32)
            for i, row in enumerate(rows):
                if row[2] is not None:
                    probabilities[i] = np.frombuffer(row[2], dtype=np.float32)
        return cls(model_version, ids, vectors, probabilities)

    def patched(self, fresh: WrittenVectors, changed: np.ndarray) -> WrittenVectors:
        """These rows with those of the scenes in `changed` replaced by `fresh`'s."""
        keep = ~np.isin(self.ids, changed)
        if keep.all() and not len(fresh.ids):
            return self
        kept = WrittenVectors(
            self.model_version,
            self.ids[keep],
            self.vectors[keep],
            None if self.probabilities is None else self.probabilities[keep],
        )
        parts = [part for part in (kept, fresh) if len(part.ids)]
        if not parts:
            return WrittenVectors.empty(self.model_version)
        ids = np.concatenate([part.ids for part in parts])
        order = np.argsort(ids, kind="stable")
        probabilities = None
        if all(part.probabilities is not None for part in parts) and (
            len({part.probabilities.shape[1] for part in parts if part.probabilities is not None})
            == 1
        ):
            probabilities = np.concatenate(
                [part.probabilities for part in parts if part.probabilities is not None]
            )[order]
        return WrittenVectors(
            self.model_version,
            ids[order],
            np.concatenate([part.vectors for part in parts])[order],
            probabilities,
        )
