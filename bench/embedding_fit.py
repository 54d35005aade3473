"""The index benchmark's synthetic vectors against real GRN embeddings: how IVF's recall
behaves on each, and a generator fit to the real curve.

    .venv/bin/python -m bench.embedding_fit --model runs/ucm-head \
        --archive ../shared/datasets/ucm-multilabel [--views 4] [--cache runs/fit/real.npz]

1. Real vectors: every UCM scene embedded by the model, in `--views` dihedral views (the
   scene rotated by 0, 90, 180 and 270 degrees: more vectors than scenes, as the issue
   suggests; a scene's views are near one another, which real archives of overlapping tiles
   also show). Cached in `--cache`.
2. For a set of N vectors: 200 random queries held out, the rest indexed in `IVF{N/100},Flat`
   (inner product, as served); recall@10 against exact search at nprobe 1, 2, 4, 8, 16; and
   the neighbour-similarity profile: the mean cosine of each query's 1st and 10th nearest
   neighbour and of random pairs.
3. Generators at the same N: the benchmark's (index/synthetic.py: one centre per 100
   vectors, spread 0.039) and the subspace mixture (`subspace_unit_vectors`), whose
   parameters are fit here by a grid search on the real set's recall curve and profile.
Prints the curves side by side, the fitted parameters, and the same comparison at every
size of `--sizes` (real sets are the first N vectors of the cached set, views included).
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch

from bench._common import REPO, UCM
from index.synthetic import clustered_unit_vectors, subspace_unit_vectors

NPROBES = (1, 2, 4, 8, 16)
QUERIES = 200


def real_vectors(args: argparse.Namespace) -> np.ndarray:
    """(scenes, views, dim) unit embeddings, scenes in a shuffled order (cached)."""
    if args.cache.exists():
        return np.load(args.cache)["vectors"]
    from model.archive import iter_images, load_archive
    from model.card import load_model
    from model.features import apply_view
    from model.inference import batched, predict, prepare_batch

    net, card = load_model(args.model, "cpu")
    archive = load_archive(args.archive)
    views = [0, 4, 2, 6][: args.views]  # rotations by 0, 90, 180, 270 degrees (model/features)
    parts = []
    for chunk in batched(iter_images(archive, archive.indices(), workers=2), 32):
        images = [image for _, image in chunk]
        per_view = [
            predict(net, card, prepare_batch([apply_view(i, v) for i in images], card.input_size),
                    torch.device("cpu")).embeddings
            for v in views
        ]  # fmt: skip
        parts.append(np.stack(per_view, axis=1))
    vectors = np.concatenate(parts).astype(np.float32)
    vectors = vectors[np.random.default_rng(0).permutation(len(vectors))]
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(args.cache, vectors=vectors)
    return vectors


def curve(vectors: np.ndarray, seed: int = 0, nlist: int | None = None) -> dict[str, Any]:
    """IVF recall@10 by nprobe and the neighbour-similarity profile of one set (`nlist`
    lists; default one per 100 indexed vectors)."""
    rng = np.random.default_rng(seed)
    picked = rng.permutation(len(vectors))
    queries, base = vectors[picked[:QUERIES]], vectors[picked[QUERIES:]]
    sims = queries @ base.T
    exact = np.argsort(-sims, axis=1)[:, :10]
    top = np.take_along_axis(sims, exact, axis=1)
    nlist = nlist or max(4, len(base) // 100)
    quantizer = faiss.IndexFlatIP(base.shape[1])
    ivf = faiss.IndexIVFFlat(quantizer, base.shape[1], nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.seed = seed
    ivf.train(base)
    ivf.add(base)
    recall = {}
    for nprobe in NPROBES:
        ivf.nprobe = nprobe
        _, found = ivf.search(queries, 10)
        recall[nprobe] = float(
            np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact, strict=True)])
        )
    pairs = rng.integers(0, len(base), (2000, 2))
    return {
        "n": len(vectors),
        "nlist": nlist,
        "recall": recall,
        "nn1": float(top[:, 0].mean()),
        "nn10": float(top[:, 9].mean()),
        "random": float(np.einsum("ij,ij->i", base[pairs[:, 0]], base[pairs[:, 1]]).mean()),
    }


def distance(a: dict[str, Any], b: dict[str, Any]) -> float:
    """How far two curves are: squared recall gaps, plus the profile's gaps."""
    gaps = [a["recall"][p] - b["recall"][p] for p in NPROBES]
    profile = [a[k] - b[k] for k in ("nn1", "nn10", "random")]
    return float(np.sum(np.square(gaps)) + 0.5 * np.sum(np.square(profile)))


def row(name: str, c: dict[str, Any]) -> str:
    recall = " / ".join(f"{c['recall'][p]:.3f}" for p in NPROBES)
    return (
        f"| {name} | {c['n']} | IVF{c['nlist']} | {recall} | {c['nn1']:.3f} | {c['nn10']:.3f} | "
        f"{c['random']:.3f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs/ucm-head")
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--views", type=int, default=4, choices=[1, 2, 3, 4])
    parser.add_argument("--cache", type=Path, default=REPO / "runs/fit/real.npz")
    parser.add_argument("--fit-size", type=int, default=2100, help="vectors the fit uses")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2100, 4200, 8400])
    args = parser.parse_args()
    real = real_vectors(args)
    dim = real.shape[-1]

    def scenes_first(n: int) -> np.ndarray:
        """n real vectors: the first view of every scene, then the second view, and so on."""
        return real.transpose(1, 0, 2).reshape(-1, dim)[:n]

    target = curve(scenes_first(args.fit_size))
    grid = itertools.product(
        (8, 16, 32), (25, 100, 400), (0.5, 1.0, 1.5, 2.5), (0.05, 0.2), (0.0, 0.5, 1.0)
    )
    fits = []
    for rank, per_centre, within, noise, shift in grid:
        data = subspace_unit_vectors(
            args.fit_size, dim, rank=rank, centres=max(1, args.fit_size // per_centre),
            within=within, noise=noise, shift=shift, seed=1,
        )  # fmt: skip
        fits.append((distance(curve(data), target), rank, per_centre, within, noise, shift))
    fits.sort()
    _, rank, per_centre, within, noise, shift = fits[0]
    print(
        f"fit on {args.fit_size} real vectors (one view per scene): rank {rank}, one centre "
        f"per {per_centre} vectors, within {within}, noise {noise}, shift {shift} "
        f"(distance {fits[0][0]:.4f}; "
        f"the next: {', '.join(f'{f[0]:.4f}' for f in fits[1:4])})\n"
    )
    print(
        "| vectors | n | index | recall@10 at nprobe " + " / ".join(map(str, NPROBES))
        + " | mean cos 1st NN | 10th NN | random pair |"
    )  # fmt: skip
    print("| --- | ---: | --- | --- | ---: | ---: | ---: |")
    for n in args.sizes:
        print(row(f"real GRN embeddings ({args.views} views)", curve(scenes_first(n))))
        print(row("benchmark's mixture (0.039)", curve(clustered_unit_vectors(
            n, dim, centres=max(1, n // 100), spread=0.039, seed=n))))  # fmt: skip
        print(row("fitted subspace mixture", curve(subspace_unit_vectors(
            n, dim, rank=rank, centres=max(1, n // per_centre), within=within, noise=noise,
            shift=shift, seed=n))))  # fmt: skip


if __name__ == "__main__":
    main()
