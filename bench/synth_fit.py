"""Fit `grn synth`'s generator to the real UCM scenes, and compare IVF's recall on real and
generated vectors, unfiltered and under label filters.

    .venv/bin/python -m bench.synth_fit --model runs/ucm-head \
        --archive ../shared/datasets/ucm-multilabel --out model/defaults/ucm-head.synth.npz

1. Real data (`bench.synth_real`, cached in `--cache`): every UCM scene through the model:
   the vectors the index ranks by in two views (as it is, and rotated by 90 degrees), the
   label probabilities and backbone descriptors.
2. `index.synth_params.fit_params` on the 2100 first views, for each number of clusters of
   `--clusters`; then the deviations' multiple (`spread`) of `--spreads` whose IVF recall
   curve at `--size` vectors lies nearest the real one (`bench.embedding_fit.distance`).
3. At `--size` indexed vectors (the first view of every scene, then second views) plus 200
   held-out queries, `IVF{--nlist},Flat`: recall@10 at nprobe 1..16, unfiltered, and under a
   filter on each label held by 5-50% of the scenes (an id selector, as the service
   searches), real against generated. The chosen parameters go to `--out`.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from bench._common import REPO, UCM
from bench.embedding_fit import NPROBES, QUERIES, curve, distance, row
from bench.synth_real import real_ucm
from index.synth_params import SynthParams, draw, fit_params

SEEDS = (0, 1, 2)


def filtered_recall(
    vectors: np.ndarray, labels: np.ndarray, nlist: int, which: np.ndarray, seed: int = 0
) -> dict[str, Any]:
    """Mean recall@10 by nprobe of searches restricted to the scenes holding one label, over
    the labels `which` (200 held-out queries each)."""
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(vectors))
    queries, base = vectors[picked[:QUERIES]], vectors[picked[QUERIES:]]
    base_labels = labels[picked[QUERIES:]]
    quantizer = faiss.IndexFlatIP(base.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(base)
    ivf.add(base)
    recalls: dict[int, list[float]] = {p: [] for p in NPROBES}
    for label in which:
        allowed = np.flatnonzero(base_labels[:, label]).astype(np.int64)
        sims = queries @ base[allowed].T
        exact = allowed[np.argsort(-sims, axis=1)[:, :10]]
        selector = faiss.IDSelectorBatch(allowed)
        for nprobe in NPROBES:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            _, found = ivf.search(queries, 10, params=params)
            hits = [len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)]
            recalls[nprobe].append(float(np.mean(hits)))
    return {"labels": len(recalls[1]), "recall": {p: float(np.mean(r)) for p, r in recalls.items()}}


def descriptor_profile(vectors: np.ndarray, descriptors: np.ndarray, seed: int = 0) -> np.ndarray:
    """Of the descriptors: the mean cosine of 200 queries' 1st and 10th nearest scenes and of
    random pairs, and how many of a query's 10 nearest by the ranking vectors are among its
    10 nearest by the descriptors (what re-ranking moves)."""
    rng = np.random.default_rng(seed)
    queries = rng.choice(len(vectors), QUERIES, replace=False)
    by_descriptor = descriptors[queries] @ descriptors.T
    by_vector = vectors[queries] @ vectors.T
    for sims in (by_descriptor, by_vector):
        sims[np.arange(QUERIES), queries] = -np.inf  # not itself
    top_d = np.argsort(-by_descriptor, axis=1)[:, :10]
    top_v = np.argsort(-by_vector, axis=1)[:, :10]
    near = np.take_along_axis(by_descriptor, top_d, axis=1)
    pairs = rng.integers(0, len(vectors), (2000, 2))
    random = np.einsum("ij,ij->i", descriptors[pairs[:, 0]], descriptors[pairs[:, 1]]).mean()
    shared = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top_d, top_v, strict=True)])
    return np.asarray([near[:, 0].mean(), near[:, 9].mean(), random, shared])


def generated_profile(params: SynthParams, count: int, seed: int) -> np.ndarray:
    drawn = draw(params, count, np.random.default_rng(seed))
    assert drawn.descriptors is not None
    return descriptor_profile(drawn.vectors, drawn.descriptors.astype(np.float32), seed)


def fit_descriptors(params: SynthParams, target: np.ndarray, count: int) -> None:
    """The descriptors' spread and noise whose neighbour profile (mean of 2 draws) lies
    nearest the real one."""
    noise = params.descriptor_noise
    fits = []
    for spread, scale in itertools.product((0.6, 0.8, 1.0, 1.2), (0.4, 0.5, 0.6, 0.7, 0.85, 1.0)):
        params.descriptor_spread, params.descriptor_noise = spread, noise * scale
        profile = np.mean([generated_profile(params, count, s) for s in (7, 8)], axis=0)
        fits.append((float(np.sum(np.square(profile - target))), spread, noise * scale))
    _, params.descriptor_spread, params.descriptor_noise = min(fits)


def mean_curve(curves: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of several `curve`s (other draws, other held-out queries)."""
    mean = dict(curves[0])
    mean["recall"] = {p: float(np.mean([c["recall"][p] for c in curves])) for p in NPROBES}
    for key in ("nn1", "nn10", "random"):
        mean[key] = float(np.mean([c[key] for c in curves]))
    return mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs/ucm-head")
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--cache", type=Path, default=REPO / "runs/synth/ucm-real.npz")
    parser.add_argument("--out", type=Path, default=REPO / "model/defaults/ucm-head.synth.npz")
    parser.add_argument("--size", type=int, default=3570, help="indexed vectors compared")
    parser.add_argument("--nlist", type=int, default=36)
    parser.add_argument("--clusters", type=int, nargs="+", default=[210, 420, 700])
    parser.add_argument("--spreads", type=float, nargs="+", default=[1.1, 1.2, 1.3, 1.4, 1.5])
    args = parser.parse_args()
    from model.card import read_card

    real = real_ucm(args.model, args.archive, args.cache)
    card = read_card(args.model)
    if str(real["model_version"]) != card.version:
        raise SystemExit(f"{args.cache} holds another model's vectors; remove it")
    views = real["vectors"]
    count = args.size + QUERIES
    real_set = views.transpose(1, 0, 2).reshape(-1, views.shape[-1])[:count]
    real_labels = np.concatenate([real["labels"], real["labels"]])[:count]
    target = mean_curve([curve(real_set, seed, nlist=args.nlist) for seed in SEEDS])

    def generated(params: SynthParams, seed: int = 1) -> Any:
        return draw(params, count, np.random.default_rng(seed), descriptors=False)

    fits = []
    for clusters in args.clusters:
        params = fit_params(
            views[:, 0], real["probabilities"], real["descriptors"], real["labels"],
            folders=real["folders"], splits=real["splits"], images=real["images"],
            model_version=card.version, label_blend=card.label_blend,
            label_names=[str(n) for n in real["label_names"]], clusters=clusters,
            fitted_on=f"the {len(views)} scenes of {args.archive.name} (first view), "
            f"model {card.version}",
        )  # fmt: skip
        for spread in args.spreads:
            params.spread = spread
            fitted = mean_curve(
                [curve(generated(params, s).vectors, s, nlist=args.nlist) for s in SEEDS]
            )
            easier = max(fitted["recall"][p] - target["recall"][p] for p in NPROBES)
            fits.append((distance(fitted, target), clusters, spread, params, easier, fitted))
            print(f"clusters {clusters} spread {spread}: distance {fits[-1][0]:.4f}", flush=True)
    # the nearest curve that is not easier than the real one (recall at most 0.005 above)
    fits.sort(key=lambda f: (f[4] > 0.005, f[0]))
    _, clusters, spread, params, _, fitted = fits[0]
    params.spread = spread
    real_profile = descriptor_profile(views[:, 0], real["descriptors"])
    unfitted_noise = params.descriptor_noise
    unfitted = generated_profile(params, len(views), 9)
    fit_descriptors(params, real_profile, len(views))
    params.save(args.out)
    print(f"\nchosen: {clusters} clusters ({len(params.centres)} used), spread {spread}; "
          f"written to {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)\n")  # fmt: skip
    drawn = generated(params, seed=len(SEEDS))
    print("| vectors | n | index | recall@10 at nprobe " + " / ".join(map(str, NPROBES))
          + " | mean cos 1st NN | 10th NN | random pair |")  # fmt: skip
    print("| --- | ---: | --- | --- | ---: | ---: | ---: |")
    print(row(f"real (UCM, 2 views; mean of {len(SEEDS)} query draws)", target))
    for seed in SEEDS:
        print(row(f"real, query draw {seed}", curve(real_set, seed, nlist=args.nlist)))
    print(row(f"generated (grn synth; mean of {len(SEEDS)} draws)", fitted))
    print(row("generated, another draw", curve(drawn.vectors, nlist=args.nlist)))
    nprobes = " / ".join(map(str, NPROBES))
    print(f"\n| vectors | labels | filtered recall@10 at nprobe {nprobes} |")
    print("| --- | ---: | --- |")
    gen_labels = params.member_labels[drawn.members]
    share = real["labels"].mean(axis=0)
    which = np.flatnonzero((share >= 0.05) & (share <= 0.5))  # the same labels for both
    for name, (vectors, labels) in {
        "real (UCM, 2 views)": (real_set, real_labels),
        "generated (grn synth)": (drawn.vectors, gen_labels),
    }.items():
        result = filtered_recall(vectors, labels, args.nlist, which)
        recall = " / ".join(f"{result['recall'][p]:.3f}" for p in NPROBES)
        print(f"| {name} | {result['labels']} | {recall} |")
    scenes = len(views)
    print(f"\n| descriptors ({scenes} scenes) | mean cos 1st NN | 10th NN | random pair | "
          "top 10 shared with the vectors' |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, profile in (
        ("real", real_profile),
        (f"generated, spread 1.0, noise {unfitted_noise:.4f} (not fitted)", unfitted),
        (f"generated, spread {params.descriptor_spread}, noise {params.descriptor_noise:.4f}",
         generated_profile(params, scenes, 9)),
    ):  # fmt: skip
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in profile) + " |")
    real_pairs = real["labels"].T.astype(float) @ real["labels"] / len(real["labels"])
    gen_pairs = gen_labels.T.astype(float) @ gen_labels / len(gen_labels)
    print(f"\nlabels per scene: real {real['labels'].sum(1).mean():.2f}, generated "
          f"{gen_labels.sum(1).mean():.2f}; label pair co-occurrence rates differ by "
          f"{np.abs(real_pairs - gen_pairs).max():.3f} at most")  # fmt: skip


if __name__ == "__main__":
    main()
