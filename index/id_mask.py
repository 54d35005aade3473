"""A set of scene ids held as a boolean mask over a sorted array of ids (the catalog's).

What a filter keeps at a million scenes is often hundreds of thousands of ids. Listing them
(`ids[mask]`), checking they are sorted, building FAISS's `IDSelectorBatch` (a hash set)
from them and looking the index's ids up in them cost tens of milliseconds a search, each
growing with the count. An `IdMask` is the mask itself, made once per filter from the
catalog's columns (`service.storage.scene_table`), and a store that can map its own entries
to the universe's rows once (`index.masked_scan`) tests an entry with one array lookup.

It is also an ordinary allow-list where one is needed (`SceneFilter.allow_ids`): `len`,
iteration and `np.asarray` give the ids, listed once and kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from functools import cached_property
from typing import Any

import numpy as np


class IdMask:
    """The ids of `universe` (sorted ascending, unique) where `mask` is True."""

    def __init__(self, universe: np.ndarray, mask: np.ndarray) -> None:
        if mask.dtype != np.bool_ or mask.shape != universe.shape:
            raise ValueError("an IdMask needs one boolean per id of its universe")
        self.universe = universe
        self.mask = mask

    @cached_property
    def count(self) -> int:
        return int(np.count_nonzero(self.mask))

    @cached_property
    def ids(self) -> np.ndarray:
        """The allowed ids, sorted (listed on first use)."""
        return self.universe[self.mask]

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids.tolist())

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self.ids if dtype is None else self.ids.astype(dtype)

    def rows(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Each id's row in the universe, -1 for an id it does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        if not len(self.universe):
            return np.full(len(ids), -1, dtype=np.int64)
        rows = np.clip(np.searchsorted(self.universe, ids), 0, len(self.universe) - 1)
        return np.where(self.universe[rows] == ids, rows, -1)

    def contains(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Which of `ids` are allowed."""
        rows = self.rows(ids)
        return (rows >= 0) & self.mask[np.maximum(rows, 0)]

    def excluding(self, ids: Sequence[int] | np.ndarray) -> IdMask:
        """This set less `ids` (a copy of the mask: the original may be shared, cached)."""
        rows = self.rows(ids)
        rows = rows[rows >= 0]
        if not len(rows) or not self.mask[rows].any():
            return self
        mask = self.mask.copy()
        mask[rows] = False
        return IdMask(self.universe, mask)

    def meeting(self, other: IdMask) -> IdMask:
        """The ids both sets allow, over this set's universe (two filters' masks, each kept
        and shared: a new mask, neither changed)."""
        if other.universe is self.universe:
            return IdMask(self.universe, self.mask & other.mask)
        return IdMask(self.universe, self.mask & other.contains(self.universe))

    def __repr__(self) -> str:
        return f"IdMask({self.count} of {len(self.universe)})"
