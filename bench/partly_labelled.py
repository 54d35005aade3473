"""Partly labelled archives: does training gain from the scenes that carry no labels?

    python -m bench.partly_labelled --archive ../shared/datasets/ucm-multilabel
        [--labelled 0.1 0.3] [--seed 0]

For each share of labelled train scenes (drawn with `--seed`, the same draw for every model;
val stays labelled, as training needs it), three head-mode models on EfficientNet-Lite0 with
the recipe's defaults otherwise:
- `no distillation`: the labelled scenes only, `--distill 0`;
- `distill, labelled only`: head mode's distillation (`grn train`'s default weight and
  temperature), the unlabelled scenes left out;
- `distill + unlabelled`: the same with the unlabelled train scenes in every batch's
  distillation term (grn train's default).
Scored like `grn evaluate` (queries = test split, archive = the whole train split; the hidden
labels are used for scoring only), with the frozen backbone on the same queries: P@10, mAP,
NDCG@10 and 10-NN sample-F1.

`--folders N`: a second protocol, where the unlabelled scenes are not a random draw but whole
scene folders (N drawn with `--seed` as in bench/unseen.py, their train scenes unlabelled, their
val scenes left out): the distilled models with and without them, scored on those folders'
test scenes and on the others'.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench._common import REPO, UCM
from bench.unseen import backbone_features, head_outputs, trained, unit
from model.archive import Archive, load_archive
from model.figures import retrieval_figures


def labels_csv_hiding(
    source: Path,
    out: Path,
    hidden: Callable[[list[str]], bool],
    dropped: Callable[[list[str]], bool] = lambda row: False,
) -> Path:
    """A copy of labels.csv with the label cells of the `hidden` rows empty and without the
    `dropped` rows (rows as image, scene, split, labels...)."""
    with source.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            if not dropped(row):
                writer.writerow([*row[:3], *[""] * (len(row) - 3)] if hidden(row) else row)
    return out


def figures_of(
    models: dict[str, Path],
    features: np.ndarray,
    labels: np.ndarray,
    queries: np.ndarray,
    train: np.ndarray,
    label: str,
) -> dict[str, dict[str, float]]:
    """The frozen backbone's and each model's figures on `queries` against the train split,
    printed as rows headed by `label`."""
    backbone = unit(features)
    figures = {
        "frozen backbone": retrieval_figures(
            backbone[queries], labels[queries], backbone[train], labels[train]
        )
    }
    for name, model in models.items():
        e, _ = head_outputs(model, features)
        figures[name] = retrieval_figures(e[queries], labels[queries], e[train], labels[train])
    for name, row in figures.items():
        print(
            f"{label:>9} {name:>24} {row['p_at_10']:>7.4f} {row['map']:>7.4f} "
            f"{row['ndcg_at_10']:>8.4f} {row['knn_sample_f1']:>7.4f}",
            flush=True,
        )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--out", type=Path, default=REPO / "runs/partly-labelled")
    parser.add_argument("--labelled", type=float, nargs="+", default=[0.1, 0.3])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folders", type=int, default=5)
    args = parser.parse_args()

    archive = load_archive(args.archive)
    labels = archive.label_matrix()
    positions = list(range(len(archive)))
    features = backbone_features(archive, positions, "efficientnet_lite0")
    train = np.asarray(archive.indices("train"))
    test = np.asarray(archive.indices("test"))
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(train)
    results: dict[str, dict[str, object]] = {}
    print(f"{'labelled':>9} {'model':>24} {'P@10':>7} {'mAP':>7} {'NDCG@10':>8} {'kNN-F1':>7}")

    for share in args.labelled:
        keep = set(order[: round(share * len(order))].tolist())
        hidden = {archive.scenes[i].name for i in train if i not in keep}
        folder = args.out / f"labelled-{share}"
        csv_path = labels_csv_hiding(
            args.archive / "labels.csv",
            folder / "labels.csv",
            lambda row, names=hidden: row[0] in names,
        )
        models = {
            "no distillation": trained(args.archive, csv_path, folder / "plain", args.seed, 0.0),
            "distill, labelled only": trained(
                args.archive,
                csv_path,
                folder / "labelled-only",
                args.seed,
                None,
                use_unlabelled=False,
            ),
            "distill + unlabelled": trained(
                args.archive,
                csv_path,
                folder / "with-unlabelled",
                args.seed,
                None,
                use_unlabelled=True,
            ),
        }
        figures = figures_of(models, features, labels, test, train, f"{share:.2f}")
        results[str(share)] = {"labelled_train_scenes": len(keep), "figures": figures}
    if args.folders:
        results["folders"] = unlabelled_folders(args, archive, labels, features)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "partly-labelled.json").write_text(json.dumps(results, indent=2) + "\n")


def unlabelled_folders(
    args: argparse.Namespace, archive: Archive, labels: np.ndarray, features: np.ndarray
) -> dict[str, object]:
    """The `--folders` protocol: whole folders unlabelled in train, left out of val."""
    rng = np.random.default_rng(args.seed)  # the draw bench/unseen.py makes
    folders = sorted({s.folder for s in archive.scenes})
    held = set(rng.choice(folders, size=args.folders, replace=False).tolist())
    print(f"\nfolders without labels: {sorted(held)}")
    folder = args.out / f"folders-{args.folders}-{args.seed}"
    csv_path = labels_csv_hiding(
        args.archive / "labels.csv", folder / "labels.csv",
        hidden=lambda row: row[1] in held, dropped=lambda row: row[1] in held and row[2] == "val",
    )  # fmt: skip
    models = {
        "distill, labelled only": trained(
            args.archive, csv_path, folder / "labelled-only", args.seed, None,
            use_unlabelled=False,
        ),
        "distill + unlabelled": trained(
            args.archive, csv_path, folder / "with-unlabelled", args.seed, None,
            use_unlabelled=True,
        ),
    }  # fmt: skip
    train = np.asarray(archive.indices("train"))
    test = np.asarray(archive.indices("test"))
    in_held = np.asarray([archive.scenes[i].folder in held for i in test])
    out: dict[str, object] = {"folders": sorted(held)}
    for group, queries in (
        ("unlabelled folders", test[in_held]),
        ("labelled folders", test[~in_held]),
    ):
        print(f"{group}: {len(queries)} queries")
        figures = figures_of(models, features, labels, queries, train, "")
        out[group] = {"queries": len(queries), "figures": figures}
    return out


if __name__ == "__main__":
    main()
