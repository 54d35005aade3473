"""Ranking by the embedding joined with the classifier's label probabilities: what it gives.

    python -m bench.label_blend --model runs/ucm-head [--blend 0 0.1 0.2 0.3 0.5]

Every scene of the archive's train (the archive searched), val and test splits goes through
the served network once (`embed_scenes`, the engine `grn evaluate` uses). A scene's vector
for ranking is then its unit embedding e and its label probabilities p scaled to unit length,
joined as [sqrt(1 - b) e, sqrt(b) p / |p|]: the inner product of two such vectors is
(1 - b) x the embeddings' cosine + b x the probability vectors' cosine, so a FAISS index over
them ranks by that blend. b = 0 is what is served. For each b the val and the test split are
scored against the train split as `grn evaluate` scores them (k-NN sample-F1, full-ranking
mAP, NDCG@10, P@10); b should be chosen on val. Rows `b, top N`: the same blend as a search
that re-ranks the embedding's N nearest (model/rerank.py), the rest left in its order.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from model import rerank
from model.archive import load_archive
from model.card import load_model
from model.embedding import Embedded, embed_scenes
from model.evaluate import evaluation_metrics
from model.inference import ranking_vectors
from model.metrics import knn_from_similarities, ranking_metrics, sample_f1


def unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def blended(scenes: Embedded, blend: float) -> Embedded:
    vectors = ranking_vectors(scenes.embeddings, scenes.probabilities, blend)
    return Embedded(scenes.positions, vectors, scenes.probabilities, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="runs/ucm-head")
    parser.add_argument("--archive", default="../shared/datasets/ucm-multilabel")
    parser.add_argument("--blend", type=float, nargs="+", default=[0, 0.1, 0.2, 0.3, 0.5])
    parser.add_argument("--pool", type=int, default=rerank.POOL)
    args = parser.parse_args()
    archive = load_archive(args.archive)
    net, card = load_model(args.model)
    splits = {
        split: embed_scenes(
            net,
            card,
            archive,
            archive.indices(split, labelled_only=True),
            device=torch.device("cpu"),
            progress=False,
        )
        for split in ("train", "val", "test")
    }
    base = splits["train"]
    base_labels = archive.label_matrix(base.positions)
    print(f"model {card.version}, archive {args.archive}")
    print("| b | split | k-NN sample-F1 | mAP | NDCG@10 | P@10 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for blend in args.blend:
        for split in ("val", "test"):
            query = splits[split]
            query_labels = archive.label_matrix(query.positions)
            m = evaluation_metrics(
                blended(query, blend), query_labels, blended(base, blend), base_labels, None
            )
            print(
                f"| {blend:g} | {split} | {m['knn_sample_f1']:.4f} | {m['map']:.4f} | "
                f"{m['ndcg_at_k']['10']:.4f} | {m['p_at_k']['10']:.4f} |",
                flush=True,
            )
            if blend == 0:
                continue
            # the same blend as a search that re-ranks the embedding's `--pool` nearest
            grn = query.embeddings @ base.embeddings.T
            labels = unit(query.probabilities) @ unit(base.probabilities).T
            found = ranking_metrics(
                rerank.reranked(grn, labels, args.pool, 1 - blend), query_labels, base_labels
            )
            knn = knn_from_similarities(
                rerank.blended_similarities(grn, labels, args.pool, 1 - blend), base_labels
            )
            print(
                f"| {blend:g}, top {args.pool} | {split} | "
                f"{sample_f1(knn >= 0.5, query_labels):.4f} | {found['map']:.4f} | "
                f"{found['ndcg_at_k']['10']:.4f} | {found['p_at_k']['10']:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
