"""What `bench.scale` checks the service's searches against: a synthetic archive's own columns
(labels.csv, scenes.csv) and the vectors it carries (vectors/), read without the service.

`filters()` picks, from those columns, a label, a box, an added and an acquisition date that
keep about 1% and about 50% of the scenes; `Truth.nearest()` is brute force over the vectors of
the scenes a filter keeps (exact inner product, the query scene left out), then, where the
service said it re-ranked (GRN_BACKBONE_RERANK: `auto` does for content the model did not train
on, which a synthetic archive's scenes are), the same re-ranking of that exact pool by the
carried backbone descriptors as the index version keeps them (`index.descriptors`: int8 codes
by default) (`model.rerank.blended`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from index.descriptors import DEFAULT as DEFAULT_DESCRIPTORS
from index.descriptors import decoded, encoded
from index.given_vectors import GivenVectors
from model import rerank
from model.archive_table import read_archive_table

TARGETS = {"1%": 0.01, "50%": 0.5}


@dataclass
class Truth:
    ids: np.ndarray
    """(n,) int64 scene ids, in labels.csv's order."""
    vectors: np.ndarray
    """(n, d) float32: each scene's ranking vector, in the same order."""
    label_names: list[str]
    labels: np.ndarray
    """(n, labels) bool."""
    bounds: np.ndarray
    """(n, 4) min_lon, min_lat, max_lon, max_lat."""
    added: np.ndarray
    """(n,) seconds since the epoch."""
    acquired: np.ndarray
    """(n,) seconds since the epoch; NaN where the archive does not say."""
    descriptors: np.ndarray | None
    """The archive's descriptors (memory-mapped, vectors/ order), None where it has none."""
    descriptor_rows: np.ndarray
    """(n,) each scene's row in `descriptors`."""
    descriptors_kept: str = DEFAULT_DESCRIPTORS
    """How the index version keeps them (`grn import --bulk` and `grn reindex`'s default)."""

    def descriptors_of(self, rows: np.ndarray) -> np.ndarray:
        """The descriptors of these rows as the service reads them from the version."""
        assert self.descriptors is not None
        kept = encoded(self.descriptors[self.descriptor_rows[rows]], self.descriptors_kept)
        return decoded(kept)

    def __len__(self) -> int:
        return len(self.ids)

    def keeps(self, fields: dict[str, Any]) -> np.ndarray:
        """Which scenes pass the filter fields of a search body (labels_all, bbox,
        added_after, acquired_after: the ones `filters()` uses), as the service reads them."""
        kept = np.ones(len(self), bool)
        for label in fields.get("labels_all", ()):
            kept &= self.labels[:, self.label_names.index(label)]
        if "bbox" in fields:
            west, south, east, north = fields["bbox"]
            low, high = self.bounds[:, :2], self.bounds[:, 2:]
            kept &= (low <= (east, north)).all(axis=1) & (high >= (west, south)).all(axis=1)
        if "added_after" in fields:
            kept &= self.added >= datetime.fromisoformat(fields["added_after"]).timestamp()
        if "acquired_after" in fields:  # NaN (not known) compares False: such scenes fail
            kept &= self.acquired >= datetime.fromisoformat(fields["acquired_after"]).timestamp()
        return kept

    def nearest(self, row: int, kept: np.ndarray, k: int, pool: int | None = None) -> list[int]:
        """The ids of the k scenes nearest scene `row` among the `kept` ones (itself left
        out), best first; with `pool`, the `pool` nearest re-ranked by descriptors first."""
        scores = self.vectors @ self.vectors[row]  # every row: cheaper than gathering the kept
        passing = kept.copy()
        passing[row] = False
        candidates = np.flatnonzero(passing)
        candidates, scores = _top(candidates, scores[candidates], pool or k)
        if pool:
            if self.descriptors is None:
                raise SystemExit("the service re-ranked, but the archive carries no descriptors")
            mine = self.descriptors_of(np.asarray([row]))[0]
            scores = rerank.blended(scores, mine, self.descriptors_of(candidates))
            candidates, scores = _top(candidates, scores, k)
        return [int(self.ids[i]) for i in candidates]


def _top(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best-scored candidates and their scores, best first."""
    if len(scores) > k:
        chosen = np.argpartition(-scores, k - 1)[:k]
        candidates, scores = candidates[chosen], scores[chosen]
    order = np.argsort(-scores, kind="stable")
    return candidates[order], scores[order]


def load_truth(archive: Path) -> Truth:
    """The archive's columns and carried vectors, rows aligned to labels.csv."""
    table = read_archive_table(archive)
    given = GivenVectors.open(archive / "vectors")
    rows = given.positions(table.ids)
    if np.any(rows < 0):
        raise SystemExit(f"{archive}: vectors/ lacks {int((rows < 0).sum())} of its scenes")
    if any(moment is None for moment in table.added):
        raise SystemExit(f"{archive}: scenes.csv does not give every scene's added time")
    added = np.asarray([moment.timestamp() for moment in table.added if moment], np.float64)
    acquired = np.asarray([m.timestamp() if m else np.nan for m in table.acquired], np.float64)
    return Truth(
        ids=np.asarray(table.ids, np.int64),
        vectors=np.ascontiguousarray(given.vectors[rows], np.float32),
        label_names=list(table.label_names),
        labels=np.asarray(table.labels, bool),
        bounds=np.asarray(table.bounds, np.float64),
        added=added,
        acquired=acquired,
        descriptors=given.descriptors,
        descriptor_rows=rows,
    )


def _between(values: np.ndarray, share: float) -> float:
    """A cut between two distinct values with about `share` of `values` at or below it (no
    value equals it, so that no rounding decides which side a scene falls on)."""
    distinct = np.unique(values)
    below = np.searchsorted(np.sort(values), distinct, side="right") / len(values)
    at = int(np.clip(np.argmin(np.abs(below - share)), 0, len(distinct) - 2))
    return float((distinct[at] + distinct[at + 1]) / 2)


def filters(truth: Truth) -> dict[str, dict[str, Any]]:
    """Search filters of about 1% and 50% selectivity each: one label or two (labels_all),
    a box over the west of the archive (bbox), the scenes added last (added_after) and those
    acquired last (acquired_after, where the archive gives acquisition times)."""
    out: dict[str, dict[str, Any]] = {}
    share = truth.labels.mean(axis=0)
    pairs = itertools.combinations(range(len(truth.label_names)), 2)
    choices = [((i,), float(share[i])) for i in range(len(share))] + [
        ((i, j), float((truth.labels[:, i] & truth.labels[:, j]).mean())) for i, j in pairs
    ]
    west, south = float(truth.bounds[:, 0].min()) - 1, float(truth.bounds[:, 1].min()) - 1
    north = float(truth.bounds[:, 3].max()) + 1
    for name, target in TARGETS.items():
        chosen, _ = min((c for c in choices if c[1] > 0), key=lambda c: abs(np.log(c[1] / target)))
        out[f"labels {name}"] = {"labels_all": [truth.label_names[i] for i in chosen]}
        out[f"bbox {name}"] = {"bbox": [west, south, _between(truth.bounds[:, 0], target), north]}
        after = _between(-truth.added, target) * -1
        out[f"added {name}"] = {"added_after": datetime.fromtimestamp(after, UTC).isoformat()}
        known = truth.acquired[~np.isnan(truth.acquired)]
        if len(known) > 1:
            after = _between(-known, target * len(truth) / len(known)) * -1
            stamp = datetime.fromtimestamp(after, UTC).isoformat()
            out[f"acquired {name}"] = {"acquired_after": stamp}
    return out
