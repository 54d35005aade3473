"""Few-shot concept search on concepts the model never trained on: the labels held out as in
bench/unseen.py (same seed, same draw), a model trained without them, and for each held-out
label draws of 1, 5, 10 and 20 positives (archive scenes carrying it) plus as many negatives
(scenes without it). Every method ranks the archive (the train split) less the judged
scenes; relevant = carries the label. P@50 and average precision, mean over labels and draws.

    python -m bench.concept [--archive ../shared/datasets/ucm-multilabel] [--out build/unseen]
        [--labels 3] [--seed 0] [--draws 10] [--candidates 200]

Methods (one run, the same draws for all):
- `qbe one, grn`: query-by-example with the first positive, the GRN cosine (what /search by
  scene id serves for seen content); `qbe one, blend`: the same by the blended cosine with
  the backbone's descriptors (model.rerank.WEIGHT);
- `qbe mean, grn` / `qbe mean, blend`: the mean of the positives as the query;
- `feedback (Rocchio)`: /search's more_like / less_like (service.usecases.feedback.ROCCHIO);
- `concept, grn` / `concept, blend`: the probe (model.probe) on the embedding alone or on
  the blended features, scoring every archive scene;
- `concept, served`: as /search/concept serves it: candidates gathered by the GRN index (the
  `--candidates` nearest of each positive and of their mean), scored by the blended probe;
  the scenes not gathered follow in the mean's order.
The held-out model is trained by bench/unseen.py's recipe (reused when `--out` has it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench._common import UCM
from bench.unseen import (
    backbone_features,
    head_outputs,
    held_out,
    labels_csv_without,
    trained,
    unit,
)
from model.archive import load_archive
from model.probe import fit_probe, probe_features
from model.rerank import WEIGHT
from service.usecases.concept import BACKGROUND
from service.usecases.feedback import ROCCHIO

SHOTS = (1, 5, 10, 20)
P_AT = 50


def p_and_ap(order: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
    """P@50 and average precision of a ranking (indices into `relevant`)."""
    hits = relevant[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    ap = float((precision * hits).sum() / max(hits.sum(), 1))
    return float(hits[:P_AT].mean()), ap


def by_score(scores: np.ndarray) -> np.ndarray:
    return np.argsort(-scores, kind="stable")


def served_order(
    grn: np.ndarray, positives: np.ndarray, probe_scores: np.ndarray, candidates: int
) -> np.ndarray:
    """The served concept search's ranking: the `candidates` nearest (GRN cosine) of each
    positive and of their mean, ordered by the probe; the rest after, by the mean."""
    mean = unit(grn[positives].mean(axis=0, keepdims=True))
    queries = np.vstack([grn[positives], mean])
    nearest = np.argsort(-(queries @ grn.T), axis=1, kind="stable")[:, :candidates]
    gathered = np.unique(nearest)
    first = gathered[by_score(probe_scores[gathered])]
    by_mean = by_score(grn @ mean[0])
    return np.concatenate([first, by_mean[~np.isin(by_mean, gathered)]])


def rankings(
    grn: np.ndarray, blend: np.ndarray, pos: np.ndarray, neg: np.ndarray,
    background: np.ndarray, candidates: int,
) -> dict[str, np.ndarray]:  # fmt: skip
    """Every method's ranking of all rows (the judged ones removed by the caller)."""
    alpha, beta, gamma = ROCCHIO
    del alpha  # no query scene: the feedback alone
    rocchio = beta * grn[pos].mean(axis=0) - gamma * grn[neg].mean(axis=0)
    probe_grn = fit_probe(grn[pos], grn[neg], grn[background]).scores(grn)
    probe_blend = fit_probe(blend[pos], blend[neg], blend[background]).scores(blend)
    return {
        "qbe one, grn": by_score(grn @ grn[pos[0]]),
        "qbe one, blend": by_score(blend @ blend[pos[0]]),
        "qbe mean, grn": by_score(grn @ grn[pos].mean(axis=0)),
        "qbe mean, blend": by_score(blend @ blend[pos].mean(axis=0)),
        "feedback (Rocchio)": by_score(grn @ rocchio),
        "concept, grn": by_score(probe_grn),
        "concept, blend": by_score(probe_blend),
        "concept, served": served_order(grn, pos, probe_blend, candidates),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--out", type=Path, default=Path("build/unseen"))
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--folders", type=int, default=5, help="as bench/unseen.py draws")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=200)
    args = parser.parse_args()

    archive = load_archive(args.archive)
    labels = archive.label_matrix()
    held = sorted(held_out(archive, args.seed, args.folders, args.labels)[1])
    model = trained(
        args.archive,
        labels_csv_without(args.archive / "labels.csv", args.out / "labels.csv", labels=set(held)),
        args.out / "labels", args.seed,
    )  # fmt: skip
    features = backbone_features(archive, list(range(len(archive))), "efficientnet_lite0")
    rows = np.flatnonzero(np.asarray([s.split for s in archive.scenes]) == "train")
    grn_all, _ = head_outputs(model, features)
    grn = grn_all[rows]
    blend = probe_features(grn, unit(features[rows]), WEIGHT)
    print(f"held-out labels {held}; archive {len(rows)} scenes; {args.draws} draws per label")
    draws = np.random.default_rng(args.seed + 1)
    table: dict[int, dict[str, list[tuple[float, float]]]] = {n: {} for n in SHOTS}
    for name in held:
        carries = labels[rows, archive.label_names.index(name)] > 0
        for n in SHOTS:
            for _ in range(args.draws):
                pos = draws.choice(np.flatnonzero(carries), size=n, replace=False)
                neg = draws.choice(np.flatnonzero(~carries), size=n, replace=False)
                judged = np.concatenate([pos, neg])
                rest = np.setdiff1d(np.arange(len(rows)), judged)
                background = draws.choice(rest, size=min(BACKGROUND, len(rest)), replace=False)
                for method, order in rankings(
                    grn, blend, pos, neg, background, args.candidates
                ).items():
                    kept = order[~np.isin(order, judged)]
                    table[n].setdefault(method, []).append(p_and_ap(kept, carries))
    report = {"held_out_labels": held, "draws": args.draws, "candidates": args.candidates}
    methods = list(table[SHOTS[0]])
    print(f"\n{'method':>20} " + " ".join(f"{f'{n}+{n} P@50':>11} {'AP':>6}" for n in SHOTS))
    for method in methods:
        cells = []
        for n in SHOTS:
            p, ap = np.asarray(table[n][method]).mean(axis=0)
            report.setdefault(method, {})[str(n)] = {"p@50": float(p), "ap": float(ap)}
            cells.append(f"{p:>11.4f} {ap:>6.4f}")
        print(f"{method:>20} " + " ".join(cells))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "concept.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
