"""Re-ranking a search's nearest scenes with the frozen backbone's descriptors.

The GRN embedding learns one archive's labels. On content it never saw, the frozen ImageNet
backbone it was trained from ranks as well or better (docs/results.md, "Good results on any
archive"), and a full blend of the two would need the backbone's 1280-d features in the
index. Re-ranking keeps the 128-d index: a search takes the index's `POOL` nearest scenes by
the GRN embedding and orders them by

    WEIGHT x GRN cosine + (1 - WEIGHT) x descriptor cosine

where a scene's descriptor is its backbone's pooled features on the unit sphere, an output of
the served graph (model/engine.py) kept beside each index version (int8 codes with a scale
per scene, or float16: index/descriptors.py). Measured on
UCM with folders and labels held out (`bench/unseen.py`, three draws): at WEIGHT 0.3 the
search is at or above the frozen backbone on P@10 and mAP in all six held-out sets (the GRN
embedding alone: four), and keeps the GRN embedding's mAP within 0.003 on seen content; it
costs seen content NDCG@10 (0.790 against 0.821). Hence `auto`: a query of content the
model did not train on is re-ranked, one of the content it trained on is not. Each index
version records which of its scenes are seen content (`model.rerank.seen_content`: the
folders the model trained on, in the archive it trained on with its labels); a search by a
scene goes by that scene, a search by an image by its `NEAREST` nearest scenes.

Only a model trained in head mode has descriptors worth keeping: its backbone is the frozen
ImageNet one. A fine-tuned backbone's features were not measured this way and are not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from model.archive import Archive
    from model.card import ModelCard

POOL = 200
"""The index's nearest scenes a search re-ranks (at least k). 100 left one relevant hit of
1000 out of a held-out draw's top 10s (docs/results.md, "How many of the nearest")."""
WEIGHT = 0.3
"""The GRN cosine's share of the re-ranking score."""
MODES = ("auto", "on", "off")
SEEN_SHARE = 0.5
"""`auto` re-ranks a query whose share of seen content is below this (`applies`)."""
NEAREST = 10
"""An image is unseen content when most of its this many nearest scenes are."""
DTYPE = np.float16
"""How descriptors leave the network (embedding shards, an archive's vectors folder): 2.5 KB
a scene for a 1280-d backbone. An index version may keep them in int8 (index/descriptors.py)."""


def no_descriptors(card: Any) -> np.ndarray:
    """No scenes' descriptors: a (0, F) array of the model's backbone width (the card's)."""
    return np.zeros((0, card.num_features), DTYPE)


def keeps_descriptors(card: Any) -> bool:
    """Whether the model's descriptors are the frozen ImageNet backbone's (head mode)."""
    return card.training.get("mode") == "head"


def applies(mode: str, seen: np.ndarray | None) -> bool:
    """Whether a search re-ranks (where the index keeps descriptors): `on` always, `off`
    never, `auto` when the query is content the model did not train on. `seen`: whether the
    query scene itself (searching by a scene), or else its `NEAREST` nearest scenes by the
    GRN embedding (an image), are seen content; None where the index version did not record
    it (then `auto` does not re-rank)."""
    if mode not in MODES:
        raise ValueError(f"re-ranking must be one of {MODES}, not {mode!r}")
    if mode != "auto":
        return mode == "on"
    return seen is not None and len(seen) > 0 and float(np.mean(seen)) < SEEN_SHARE


def blended(
    grn_scores: np.ndarray, query: np.ndarray, descriptors: np.ndarray, weight: float = WEIGHT
) -> np.ndarray:
    """The re-ranking score of candidates: their GRN cosines (n,), the query's descriptor
    (F,), the candidates' descriptors (n, F)."""
    similarity = np.asarray(descriptors, dtype=np.float32) @ np.asarray(query, dtype=np.float32)
    return weight * np.asarray(grn_scores, dtype=np.float32) + (1 - weight) * similarity


def reranked(
    grn: np.ndarray, descriptors: np.ndarray, pool: int = POOL, weight: float = WEIGHT
) -> np.ndarray:
    """Rankings (queries, archive), most similar first, of a search that re-ranks: `grn`
    and `descriptors` are the (queries, archive) cosines of the two; each query's first
    `pool` by `grn` re-ordered by the blended score, the rest left in GRN order. What
    `grn evaluate` and `bench/unseen.py` score."""
    order = np.argsort(-grn, axis=1, kind="stable")
    head = order[:, :pool]
    blend = weight * np.take_along_axis(grn, head, 1) + (1 - weight) * np.take_along_axis(
        descriptors, head, 1
    )
    order[:, :pool] = np.take_along_axis(head, np.argsort(-blend, axis=1, kind="stable"), 1)
    return order


def blended_similarities(
    grn: np.ndarray, descriptors: np.ndarray, pool: int = POOL, weight: float = WEIGHT
) -> np.ndarray:
    """(queries, archive) blended scores of each query's first `pool` by `grn`, -inf for the
    rest: the similarities a k-NN vote over a re-ranking search (k <= pool) sees."""
    head = np.argsort(-grn, axis=1, kind="stable")[:, :pool]
    out = np.full(grn.shape, -np.inf)
    blend = weight * np.take_along_axis(grn, head, 1) + (1 - weight) * np.take_along_axis(
        descriptors, head, 1
    )
    np.put_along_axis(out, head, blend, 1)
    return out


def seen_content(card: ModelCard, archive: Archive, positions: Sequence[int]) -> np.ndarray:
    """Which scenes show content the model was trained on: True for scenes of the folders
    it trained on, when the archive is the one it trained on (the same folder, or the same
    training scenes) with the same labels, in any order (the catalog lists them sorted);
    False for everything else."""
    training = card.training
    if set(card.label_names) != set(archive.label_names):  # columns may come in another order
        return np.zeros(len(positions), dtype=bool)
    source = training.get("archive")
    same = source is not None and Path(source).resolve() == archive.root.resolve()
    folders = training.get("folders")
    if folders is None:  # a card from before folders were recorded: its archive or not
        return np.full(len(positions), same, dtype=bool)
    known = set(folders)
    if not same:  # the same training scenes under another path
        train = archive.indices("train", labelled_only=True)
        folders = archive.folders_of(train)
        digest = archive.names_digest(
            [i for i, folder in zip(train, folders, strict=True) if folder in known]
        )
        same = training.get("train_scenes") == digest
    return np.asarray([same and folder in known for folder in archive.folders_of(positions)], bool)
