"""Score trained head-mode runs on the UCM test split, alone and joined, from cached features.

    GRN_CACHE_DIR=.cache python -m bench.join_sweep runs/l0 runs/l2 [runs/l02 ...]

Each run's head is applied to its backbone's cached pooled features (one view, as
`grn evaluate` scores a served model; missing features are computed and cached). Printed per
run: k-NN sample-F1, mAP, P@10 and NDCG@10 of its embeddings (blend 0) and of its ranking
vectors with blend 0.1. Then the first two runs joined: their unit embeddings side by side as
[sqrt(w) e1, sqrt(1 - w) e2] (a cosine is w x the first's + (1 - w) x the second's), their
probabilities averaged, for several w, with blend 0 and 0.1.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from model.archive import Archive, load_archive
from model.backbones import backbone_spec
from model.card import load_model
from model.features import FeatureCache, FeatureKey, default_cache_dir, extract_features
from model.inference import ranking_vectors
from model.metrics import KNN_K, knn_label_scores, retrieval_metrics, sample_f1

ARCHIVE = "../shared/datasets/ucm-multilabel"
Scored = tuple[np.ndarray, np.ndarray]  # (unit embeddings, probabilities)


def head_outputs(run: str, archive: Archive, positions: list[int]) -> Scored:
    net, card = load_model(run, engine="torch")
    spec = backbone_spec(card.backbone)
    key = FeatureKey(card.backbone, card.weights, card.input_size, spec.mean, spec.std)
    features, kept = extract_features(
        net.backbone, key, archive, positions, views=1, cache=FeatureCache(default_cache_dir()),
        device=torch.device("cpu"), batch_size=16, progress=False,
    )  # fmt: skip
    assert kept == positions
    with torch.no_grad():
        out = net.head(torch.as_tensor(features[0]))
    return out.embedding.numpy(), torch.sigmoid(out.logits).numpy()


def join(a: Scored, b: Scored, w: float) -> Scored:
    embeddings = np.hstack([np.sqrt(w) * a[0], np.sqrt(1 - w) * b[0]])
    return embeddings.astype(np.float32), (a[1] + b[1]) / 2


def figures(query: np.ndarray, base: np.ndarray, qy: np.ndarray, by: np.ndarray) -> str:
    found = retrieval_metrics(query, qy, base, by, (10,))
    knn = sample_f1(knn_label_scores(query, base, by, k=KNN_K) >= 0.5, qy)
    return (
        f"k-NN F1 {knn:.4f} mAP {found['map']:.4f} P@10 {found['p_at_k']['10']:.4f} "
        f"NDCG@10 {found['ndcg_at_k']['10']:.4f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="trained head-mode runs (folders)")
    runs = parser.parse_args().runs
    archive = load_archive(ARCHIVE)
    train = archive.indices("train", labelled_only=True)
    test = archive.indices("test", labelled_only=True)
    by, qy = archive.label_matrix(train), archive.label_matrix(test)
    scored = {
        run: (head_outputs(run, archive, train), head_outputs(run, archive, test)) for run in runs
    }
    for run, (base, query) in scored.items():
        for blend in (0.0, 0.1):
            q = ranking_vectors(*query, blend)
            b = ranking_vectors(*base, blend)
            print(f"{run} blend {blend}: {figures(q, b, qy, by)}", flush=True)
    if len(runs) < 2:
        return
    (base1, query1), (base2, query2) = scored[runs[0]], scored[runs[1]]
    for w in (0.3, 0.4, 0.5, 0.6, 0.7):
        for blend in (0.0, 0.1):
            q = ranking_vectors(*join(query1, query2, w), blend)
            b = ranking_vectors(*join(base1, base2, w), blend)
            print(f"joined w {w} blend {blend}: {figures(q, b, qy, by)}", flush=True)


if __name__ == "__main__":
    main()
