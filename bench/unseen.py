"""Content the model never saw: train with scene folders (and, separately, labels) held out,
then measure retrieval on them for the served embedding, the frozen backbone and their blends.

    python -m bench.unseen --archive ../shared/datasets/ucm-multilabel [--folders 5]
        [--labels 3] [--seed 0] [--model runs/ucm-head/model.safetensors] [--pools 100 300]

Three models, all head mode on EfficientNet-Lite0 (or `--backbone`) with the recipe's defaults:
- `--model`: trained on everything (make run's default): the "seen content" figures, the
  usual protocol (queries = test split, archive = train split);
- trained without `--folders` scene folders (their rows left out of labels.csv): queries =
  the held-out folders' test scenes, archive = the whole train split, the held-out folders'
  train scenes included (the model never saw any of them);
- trained without `--labels` label columns: queries = test scenes carrying a held-out label,
  archive = the train split, relevance = sharing a held-out label (the labels the model never
  learned).
The held-out folders and labels are drawn with `--seed` (labels among those carried by at
least 5% of the scenes). Every candidate embedding is scored on the same queries: P@10, mAP
and NDCG@10 (model.metrics.retrieval_metrics; a hit is relevant when it shares a label).

Candidates: the GRN embedding (`grn`); the backbone's pooled features, L2-normalised
(`backbone`); the same reduced by PCA to `--dim` dimensions, plain or whitened, fit on the
archive's own features (no labels); and blends `grn+backbone a` (and one with PCA) whose
cosine is a x the GRN cosine + (1 - a) x the backbone's; and `grn top 100, by a`: the GRN
embedding's ranking with its first 100 re-ordered by that blend (a search that re-ranks the
index's 100 nearest with the backbone's features kept beside the index); and `served (auto)`:
what the service answers for a model without a label blend (GRN_BACKBONE_RERANK=auto,
model/rerank.py), re-ranked for a query whose 10 nearest archive scenes are mostly content
the model did not train on (the share of queries re-ranked is printed beside it); and
`grn+labels b`: the GRN embedding
joined with the model's label probabilities (bench/label_blend.py), cosine (1 - b) x the GRN
one + b x the probability vectors'; `auto, grn+labels b`: the served `auto` with the index
ranking by that blend (`auto, grn+labels 0.1` is what head mode's models serve by default,
with model.rerank.POOL nearest re-ranked; `--pools` adds rows with other numbers).
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import MODEL, REPO, UCM
from model import rerank
from model.archive import Archive, load_archive
from model.backbones import create_backbone
from model.card import load_model, read_card
from model.features import (
    FeatureCache,
    FeatureKey,
    default_cache_dir,
    extract_features,
)
from model.inference import ranking_vectors
from model.metrics import ranking_metrics, retrieval_metrics
from model.rerank import reranked, seen_content
from model.train import fit
from model.train_config import config_for_mode

BLENDS = (0.3, 0.4, 0.5, 0.7)
RERANKS = ((100, 0.3), (100, 0.5))
"""(top, a): the GRN embedding's `top` nearest, re-ordered by the blend's cosine."""
LABEL_BLENDS = (0.1, 0.3)


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def projector(
    features: np.ndarray, dim: int, power: float, eps: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """PCA of L2-normalised features, the components scaled by eigenvalue ** (-power / 2)
    (0: plain PCA, 1: whitening): (mean, projection (features, dim))."""
    x = unit(features.astype(np.float64))
    mean = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x - mean, rowvar=False))
    order = np.argsort(values)[::-1][:dim]
    return mean, vectors[:, order] * (values[order] + eps) ** (-power / 2)


def projected(features: np.ndarray, mean: np.ndarray, projection: np.ndarray) -> np.ndarray:
    return unit((unit(features.astype(np.float64)) - mean) @ projection).astype(np.float32)


def held_out(archive: Archive, seed: int, folders: int, labels: int) -> tuple[set[str], set[str]]:
    """The scene folders and the label columns held out with `seed`: `folders` folders, then
    `labels` labels among those carried by at least 5% of the scenes, in this order from one
    generator (so that each draw of a seed is the same in every benchmark)."""
    rng = np.random.default_rng(seed)
    names = sorted({s.folder for s in archive.scenes})
    held_folders = set(rng.choice(names, size=folders, replace=False).tolist())
    shares = archive.label_matrix().mean(axis=0)
    common = [n for n, share in zip(archive.label_names, shares, strict=True) if share >= 0.05]
    return held_folders, set(rng.choice(common, size=labels, replace=False).tolist())


def labels_csv_without(
    source: Path, out: Path, *, folders: set[str] = frozenset(), labels: set[str] = frozenset()
) -> Path:
    """A copy of labels.csv without the rows of `folders` and the columns of `labels`."""
    with source.open(newline="") as handle:
        rows = list(csv.reader(handle))
    keep = [i for i, name in enumerate(rows[0]) if i < 3 or name not in labels]
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        for number, row in enumerate(rows):
            if number and row[1] in folders:
                continue
            writer.writerow([row[i] for i in keep])
    return out


def trained(
    archive: Path,
    labels_csv: Path | None,
    out: Path,
    seed: int,
    distill: float | None = None,
    distill_temperature: float | None = None,
    **overrides: Any,
) -> Path:
    """A head-mode model with the recipe's defaults and these overrides (None: default),
    reused when `out` holds one already."""
    model = out / "model.safetensors"
    if model.is_file():
        print(f"reusing {model}", flush=True)
        return model
    started = time.perf_counter()
    config = config_for_mode(
        "head", str(archive), str(out), labels_csv=str(labels_csv) if labels_csv else None,
        seed=seed, distill_weight=distill, distill_temperature=distill_temperature,
        progress=False, **overrides,
    )  # fmt: skip
    result = fit(config)
    print(f"trained {out} in {time.perf_counter() - started:.0f} s", flush=True)
    return result.model_path


def backbone_features(archive: Archive, positions: list[int], name: str) -> np.ndarray:
    backbone, weights = create_backbone(name, pretrained=True)
    key = FeatureKey(name, weights, 256)
    features, kept = extract_features(
        backbone, key, archive, positions, views=1, cache=FeatureCache(default_cache_dir()),
        device=torch.device("cpu"), batch_size=32, progress=False,
    )  # fmt: skip
    assert kept == positions
    return features[0]


def head_outputs(model: Path, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit embeddings and label probabilities of the model's heads."""
    net, _ = load_model(model, "cpu", engine="torch")
    with torch.inference_mode():
        out = net.head(torch.from_numpy(features))
        return out.embedding.numpy(), torch.sigmoid(out.logits).numpy()


def candidates(
    grn: np.ndarray,
    probabilities: np.ndarray,
    features: np.ndarray,
    archive_rows: np.ndarray,
    dim: int,
) -> dict[str, np.ndarray]:
    """Every candidate embedding of all scenes (rows as `features`); PCA is fit on the
    archive rows only (no labels). `grn+labels b` joins the model's label probabilities
    (bench/label_blend.py): cosine (1 - b) x the GRN one + b x the probabilities'."""
    backbone = unit(features)
    pca = projected(features, *projector(features[archive_rows], dim, power=0))
    white = projected(features, *projector(features[archive_rows], dim, power=1))
    out = {"grn": grn, "backbone": backbone, f"PCA {dim}": pca, f"whitened {dim}": white}
    for a in BLENDS:
        out[f"grn+backbone {a}"] = np.hstack([np.sqrt(a) * grn, np.sqrt(1 - a) * backbone])
    out[f"grn+PCA {dim} 0.3"] = np.hstack([np.sqrt(0.3) * grn, np.sqrt(0.7) * pca])
    for b in LABEL_BLENDS:
        out[f"grn+labels {b}"] = ranking_vectors(grn, probabilities, b)
    return out


def figures(m: dict[str, Any]) -> dict[str, float]:
    return {"p@10": m["p_at_k"]["10"], "map": m["map"], "ndcg@10": m["ndcg_at_k"]["10"]}


def scored(
    embeddings: dict[str, np.ndarray],
    labels: np.ndarray,
    queries: np.ndarray,
    archive_rows: np.ndarray,
    seen: np.ndarray,
    pools: tuple[int, ...] = (),
) -> dict[str, dict[str, float]]:
    """Every candidate's figures; `seen`: which archive rows are content the model trained
    on, as the index version records it (for the served `auto` row); `pools`: other numbers
    of nearest scenes re-ranked, for what head mode serves (`auto, grn+labels 0.1, pool N`)."""
    out = {}
    for name, e in embeddings.items():
        m = retrieval_metrics(e[queries], labels[queries], e[archive_rows], labels[archive_rows])
        out[name] = figures(m)
    grn, backbone = (embeddings[k] for k in ("grn", "backbone"))
    cosines = [e[queries] @ e[archive_rows].T for e in (grn, backbone)]
    for top, a in RERANKS:
        order = reranked(*cosines, top, a)  # a search with GRN_BACKBONE_RERANK=on
        m = ranking_metrics(order, labels[queries], labels[archive_rows])
        out[f"grn top {top}, by {a}"] = figures(m)
    out["served (auto)"] = served_auto(cosines[0], cosines[1], labels, queries, archive_rows, seen)
    for b in LABEL_BLENDS:
        e = embeddings[f"grn+labels {b}"]
        joined = e[queries] @ e[archive_rows].T
        out[f"auto, grn+labels {b}"] = served_auto(
            joined, cosines[1], labels, queries, archive_rows, seen
        )
        for pool in pools if b == LABEL_BLENDS[0] else ():
            out[f"auto, grn+labels {b}, pool {pool}"] = served_auto(
                joined, cosines[1], labels, queries, archive_rows, seen, pool
            )
    return out


def served_auto(
    grn: np.ndarray,
    backbone: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    archive_rows: np.ndarray,
    seen: np.ndarray,
    pool: int = rerank.POOL,
) -> dict[str, float]:
    """Served with GRN_BACKBONE_RERANK=auto: a query (an image: it is not in the archive) is
    re-ranked when most of its nearest scenes by `grn` (the (queries, archive) cosines the
    index ranks by) are unseen content; its `pool` nearest are re-ranked."""
    plain = np.argsort(-grn, axis=1, kind="stable")
    nearest_seen = seen[plain[:, : rerank.NEAREST]]
    unseen = np.asarray([rerank.applies("auto", row) for row in nearest_seen])
    order = np.where(unseen[:, None], reranked(grn, backbone, pool, rerank.WEIGHT), plain)
    m = ranking_metrics(order, labels[queries], labels[archive_rows])
    return {**figures(m), "reranked_share": float(unseen.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--out", type=Path, default=REPO / "runs/unseen")
    parser.add_argument("--folders", type=int, default=5)
    parser.add_argument("--labels", type=int, default=3)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--distill", type=float, default=None,
        help="train all three models with this weight on keeping the backbone's batch "
        "neighbourhoods (grn train --distill; 0: off); default: head mode's, and --model "
        "for seen content",
    )  # fmt: skip
    parser.add_argument("--distill-temperature", type=float, default=None)
    parser.add_argument(
        "--backbone", default="efficientnet_lite0",
        help="the held-out models' backbone (grn train --backbone), also the frozen one scored; "
        "--model should have the same",
    )  # fmt: skip
    parser.add_argument(
        "--pools", type=int, nargs="*", default=[],
        help="also score what is served with these numbers of nearest scenes re-ranked "
        f"(default {rerank.POOL})",
    )  # fmt: skip
    args = parser.parse_args()

    archive = load_archive(args.archive)
    labels = archive.label_matrix()
    held_folders, held_labels = held_out(archive, args.seed, args.folders, args.labels)
    print(f"held-out folders: {sorted(held_folders)}; held-out labels: {sorted(held_labels)}")

    positions = list(range(len(archive)))
    features = backbone_features(archive, positions, args.backbone)
    split = np.asarray([s.split for s in archive.scenes])
    folder = np.asarray([s.folder for s in archive.scenes])
    archive_rows = np.flatnonzero(split == "train")
    test = split == "test"
    unseen_folder = np.isin(folder, sorted(held_folders))
    label_columns = [archive.label_names.index(n) for n in sorted(held_labels)]

    source = args.archive / "labels.csv"
    out, custom = args.out, args.distill is not None or args.distill_temperature is not None
    recipe = {
        "distill": args.distill,
        "distill_temperature": args.distill_temperature,
        "backbone": args.backbone,
    }
    if custom:
        out = args.out / f"distill-{args.distill}-{args.distill_temperature}"
    models = {
        "all": trained(args.archive, None, out / "all", args.seed, **recipe)
        if custom
        else args.model,
        "folders": trained(
            args.archive,
            labels_csv_without(source, out / "folders.csv", folders=held_folders),
            out / "folders",
            args.seed,
            **recipe,
        ),
        "labels": trained(
            args.archive,
            labels_csv_without(source, out / "labels.csv", labels=held_labels),
            out / "labels",
            args.seed,
            **recipe,
        ),
    }
    held_label_matrix = labels[:, label_columns]
    protocols: dict[str, tuple[str, np.ndarray, np.ndarray]] = {
        "seen (test split, model trained on all)": ("all", np.flatnonzero(test), labels),
        "seen folders (model without the held-out folders)": (
            "folders", np.flatnonzero(test & ~unseen_folder), labels),
        "held-out folders": ("folders", np.flatnonzero(test & unseen_folder), labels),
        "held-out labels": (
            "labels", np.flatnonzero(test & (held_label_matrix.sum(axis=1) > 0)),
            held_label_matrix),
    }  # fmt: skip
    results: dict[str, Any] = {
        "held_out_folders": sorted(held_folders),
        "held_out_labels": sorted(held_labels),
        "pca_dim": args.dim,
    }
    for protocol, (model, queries, relevance) in protocols.items():
        grn, probabilities = head_outputs(models[model], features)
        embeddings = candidates(grn, probabilities, features, archive_rows, args.dim)
        seen = seen_content(read_card(models[model]), archive, archive_rows.tolist())
        table = scored(embeddings, relevance, queries, archive_rows, seen, tuple(args.pools))
        results[protocol] = {"queries": len(queries), "figures": table}
        print(f"\n{protocol}: {len(queries)} queries, archive {len(archive_rows)}")
        print(f"{'embedding':>20} {'P@10':>7} {'mAP':>7} {'NDCG@10':>8}")
        for name, row in table.items():
            share = f" (re-ranked {row['reranked_share']:.0%})" if "reranked_share" in row else ""
            print(
                f"{name:>20} {row['p@10']:>7.4f} {row['map']:>7.4f} {row['ndcg@10']:>8.4f}{share}"
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "unseen.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
