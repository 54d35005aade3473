"""The evaluation's report: `report.md`, a table of the figures, and `examples.png`, a grid
of queries and their top results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from model import rerank
from model.archive import Archive
from model.card import ModelCard
from model.embedding import Embedded
from model.imageio import read_image
from model.metrics import KNN_K, RANK_KS


def markdown_table(metrics: dict[str, Any], card: ModelCard) -> str:
    blend = card.label_blend
    joined = f" joined with the label probabilities (blend {blend:g})" if blend > 0 else ""
    lines = [
        f"# Evaluation of {card.version}",
        "",
        f"backbone `{card.backbone}`, loss `{card.loss}`, embedding {card.embedding_dim}-d"
        f"{joined}; archive = labelled train scenes ({metrics['archive_size']}), "
        f"queries = labelled test scenes ({metrics['query_count']}); unlabelled scenes left out: "
        f"{metrics['unlabelled_left_out']}.",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mAP (full ranking) | {metrics['map']:.4f} |",
        f"| k-NN sample-F1 (k = {KNN_K}) | {metrics['knn_sample_f1']:.4f} |",
    ]
    if "classifier_tuned" in metrics:
        tuned = metrics["classifier_tuned"]
        lines += [
            f"| classifier sample-F1 @0.5 | {metrics['classifier_sample_f1']:.4f} |",
            f"| classifier micro-F1 @0.5 | {metrics['classifier_micro_f1']:.4f} |",
            f"| classifier macro-F1 @0.5 | {metrics['classifier_macro_f1']:.4f} |",
            f"| Hamming loss @0.5 | {metrics['hamming_loss']:.4f} |",
            f"| classifier sample-F1, tuned thresholds | {tuned['sample_f1']:.4f} |",
        ]
    else:
        lines += ["", "The archive's labels are not the model's: no classifier figures."]
    lines += ["", "| k | P@k | mAP@k | NDCG@k | ACG@k |", "| --- | --- | --- | --- | --- |"]
    for k in RANK_KS:
        key = str(k)
        lines.append(
            f"| {k} | {metrics['p_at_k'][key]:.4f} | {metrics['map_at_k'][key]:.4f} | "
            f"{metrics['ndcg_at_k'][key]:.4f} | {metrics['acg_at_k'][key]:.4f} |"
        )
    lines += [
        "",
        "## Seen and unseen content, against the frozen backbone",
        "",
        "Seen: test scenes of folders the model trained on, in the archive it trained on. "
        "Unseen: the others (folders left out of training, or another archive). The frozen "
        "backbone's pooled features are scored on the same queries. `reranked`: the model's "
        f"{rerank.POOL} nearest re-ordered by {rerank.WEIGHT} x its cosine + "
        f"{1 - rerank.WEIGHT:.1f} x the backbone's, as a search does where GRN_BACKBONE_RERANK "
        "says so (by default on unseen content, model/rerank.py).",
        "",
        "| content | queries | embedding | P@10 | mAP | NDCG@10 | k-NN sample-F1 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, group in metrics["content"].items():
        if not group["queries"]:
            lines.append(f"| {name} | 0 | | | | | |")
        for who in ("model", "reranked", "backbone"):
            if who in group:
                f = group[who]
                lines.append(
                    f"| {name} | {group['queries']} | {who} | {f['p_at_10']:.4f} | "
                    f"{f['map']:.4f} | {f['ndcg_at_10']:.4f} | {f['knn_sample_f1']:.4f} |"
                )
    if metrics.get("backbone_unavailable"):
        lines += ["", f"No backbone figures: {metrics['backbone_unavailable']}."]
    return "\n".join(lines) + "\n"


def plot_examples(
    path: Path, archive: Archive, query: Embedded, base: Embedded, count: int = 4, top: int = 5
) -> None:
    """A grid: each row a query and its top results, with their labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    picks = rng.choice(len(query.positions), size=min(count, len(query.positions)), replace=False)
    fig, axes = plt.subplots(
        len(picks), top + 1, figsize=(2.2 * (top + 1), 2.6 * len(picks)), squeeze=False
    )
    names = archive.label_names

    def show(ax: Any, position: int, title: str) -> None:
        scene = archive.scenes[position]
        ax.imshow(read_image(scene.path))
        labels = ", ".join(n for n, v in zip(names, scene.labels, strict=True) if v)
        ax.set_title(f"{title}\n{scene.name}", fontsize=7)
        ax.set_xlabel(labels, fontsize=6, wrap=True)
        ax.set_xticks([])
        ax.set_yticks([])

    for row, q in enumerate(picks):
        sims = base.embeddings @ query.embeddings[q]
        order = np.argsort(-sims, kind="stable")[:top]
        show(axes[row, 0], query.positions[q], "query")
        for col, b in enumerate(order, start=1):
            show(axes[row, col], base.positions[b], f"#{col}  {sims[b]:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
