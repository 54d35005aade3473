"""Embedding an archive with a trained model, and the evaluation report of the UCM protocol.

`embed_scenes` is the one place images go through a trained network in batch; `grn embed`,
`grn evaluate` and the indexing job all call it. On a CPU the network runs through the engine
`load_model` attached (model/engine.py), decoding overlapped in a background thread.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.archive import Archive, BrokenFile, iter_images, load_archive
from model.card import ModelCard, load_model
from model.engine import describe
from model.imageio import read_image
from model.inference import (
    configure_cpu_threads,
    decode_workers,
    default_batch_size,
    predict,
    prepared_batches,
    resolve_device,
)
from model.metrics import (
    KNN_K,
    RANK_KS,
    classification_metrics,
    knn_label_scores,
    retrieval_metrics,
    sample_f1,
)
from model.network import GRNNet


@dataclass
class Embedded:
    positions: list[int]
    """Archive positions that were embedded (broken files left out when skipped)."""
    embeddings: np.ndarray
    probabilities: np.ndarray
    seconds: float
    engine: str = "torch"
    """What ran the network: torch, or the CPU engine (model/engine.py)."""

    @property
    def images_per_s(self) -> float:
        return len(self.positions) / self.seconds if self.seconds > 0 else 0.0


def embed_scenes(
    net: GRNNet,
    card: ModelCard,
    archive: Archive,
    positions: Sequence[int],
    *,
    device: torch.device,
    batch_size: int | None = None,
    skip_broken: bool = False,
    broken: list[BrokenFile] | None = None,
    progress: bool = True,
) -> Embedded:
    """Unit embeddings and label probabilities of archive scenes, in order."""
    net = net.to(device).eval().to(memory_format=torch.channels_last)
    kept: list[int] = []
    embeddings = [np.zeros((0, card.embedding_dim), np.float32)]
    probabilities = [np.zeros((0, len(card.label_names)), np.float32)]
    start = time.perf_counter()
    bar = tqdm(total=len(positions), desc="embed", unit="img", disable=not progress)
    stream = prepared_batches(
        iter_images(
            archive,
            positions,
            skip_broken=skip_broken,
            broken=broken,
            workers=decode_workers(device),
        ),
        input_size=card.input_size,
        batch_size=batch_size or default_batch_size(device),
    )
    for keys, batch in stream:
        out = predict(net, card, batch, device)
        kept.extend(keys)
        embeddings.append(out.embeddings)
        probabilities.append(out.probabilities)
        bar.update(len(keys))
    bar.close()
    seconds = time.perf_counter() - start
    return Embedded(
        kept,
        np.concatenate(embeddings),
        np.concatenate(probabilities),
        seconds,
        engine=describe(net) if device.type == "cpu" else "torch",
    )


def save_embeddings(
    path: str | Path, archive: Archive, embedded: Embedded, card: ModelCard
) -> None:
    """An .npz anyone can read: names, embeddings (n x d, unit norm), probabilities."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        tmp,
        names=np.asarray([archive.scenes[i].name for i in embedded.positions]),
        embeddings=embedded.embeddings,
        probabilities=embedded.probabilities,
        label_names=np.asarray(card.label_names),
        model_version=np.asarray(card.version),
    )
    os.replace(tmp, path)


def _check_labels(card: ModelCard, archive: Archive) -> None:
    if list(card.label_names) != list(archive.label_names):
        raise ValueError(
            f"the model's labels {card.label_names} differ from the archive's "
            f"{archive.label_names}; evaluate on an archive with the same label columns"
        )


def evaluation_metrics(
    query: Embedded,
    query_labels: np.ndarray,
    base: Embedded,
    base_labels: np.ndarray,
    thresholds: Sequence[float],
) -> dict[str, Any]:
    metrics: dict[str, Any] = dict(
        retrieval_metrics(query.embeddings, query_labels, base.embeddings, base_labels, RANK_KS)
    )
    knn_scores = knn_label_scores(query.embeddings, base.embeddings, base_labels, k=KNN_K)
    metrics["knn_sample_f1"] = sample_f1(knn_scores >= 0.5, query_labels)
    at_half = classification_metrics(query.probabilities, query_labels, 0.5)
    tuned = classification_metrics(query.probabilities, query_labels, np.asarray(thresholds))
    metrics.update(
        classifier_sample_f1=at_half["sample_f1"],
        classifier_micro_f1=at_half["micro_f1"],
        classifier_macro_f1=at_half["macro_f1"],
        hamming_loss=at_half["hamming_loss"],
        classifier_tuned={k: v for k, v in tuned.items()},
    )
    return metrics


def markdown_table(metrics: dict[str, Any], card: ModelCard) -> str:
    tuned = metrics["classifier_tuned"]
    lines = [
        f"# Evaluation of {card.version}",
        "",
        f"backbone `{card.backbone}`, loss `{card.loss}`, embedding {card.embedding_dim}-d; "
        f"archive = train split ({metrics['archive_size']}), queries = test split "
        f"({metrics['query_count']}).",
        "",
        "| metric | value |",
        "| --- | --- |",
        f"| mAP (full ranking) | {metrics['map']:.4f} |",
        f"| k-NN sample-F1 (k = {KNN_K}) | {metrics['knn_sample_f1']:.4f} |",
        f"| classifier sample-F1 @0.5 | {metrics['classifier_sample_f1']:.4f} |",
        f"| classifier micro-F1 @0.5 | {metrics['classifier_micro_f1']:.4f} |",
        f"| classifier macro-F1 @0.5 | {metrics['classifier_macro_f1']:.4f} |",
        f"| Hamming loss @0.5 | {metrics['hamming_loss']:.4f} |",
        f"| classifier sample-F1, tuned thresholds | {tuned['sample_f1']:.4f} |",
        "",
        "| k | P@k | mAP@k | NDCG@k | ACG@k |",
        "| --- | --- | --- | --- | --- |",
    ]
    for k in RANK_KS:
        key = str(k)
        lines.append(
            f"| {k} | {metrics['p_at_k'][key]:.4f} | {metrics['map_at_k'][key]:.4f} | "
            f"{metrics['ndcg_at_k'][key]:.4f} | {metrics['acg_at_k'][key]:.4f} |"
        )
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


def evaluate(
    model_path: str | Path,
    archive_dir: str | Path,
    out_dir: str | Path,
    *,
    labels_csv: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    skip_broken: bool = False,
    progress: bool = True,
    examples: bool = True,
) -> dict[str, Any]:
    """The UCM protocol: archive = train split, queries = test split, cosine similarity.
    Writes metrics.json, report.md and examples.png into `out_dir`; returns the metrics."""
    torch_device = resolve_device(device)
    configure_cpu_threads(torch_network=torch_device.type == "cuda" or None)
    net, card = load_model(model_path, torch_device)
    archive = load_archive(archive_dir, labels_csv)
    _check_labels(card, archive)
    broken: list[BrokenFile] = []
    common = dict(
        device=torch_device,
        batch_size=batch_size,
        skip_broken=skip_broken,
        broken=broken,
        progress=progress,
    )
    base = embed_scenes(net, card, archive, archive.indices("train"), **common)  # type: ignore[arg-type]
    query = embed_scenes(net, card, archive, archive.indices("test"), **common)  # type: ignore[arg-type]
    if not base.positions or not query.positions:
        raise ValueError("evaluation needs scenes in both the train and the test split")
    metrics = evaluation_metrics(
        query,
        archive.label_matrix(query.positions),
        base,
        archive.label_matrix(base.positions),
        card.thresholds,
    )
    metrics.update(
        model_version=card.version,
        archive_size=len(base.positions),
        query_count=len(query.positions),
        device=str(torch_device),
        engine=describe(net) if torch_device.type == "cpu" else "torch",
        embed_images_per_s=(len(base.positions) + len(query.positions))
        / (base.seconds + query.seconds),
        broken_files=[asdict(b) for b in broken],
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(markdown_table(metrics, card))
    if examples:
        plot_examples(out / "examples.png", archive, query, base)
    return metrics


def embed_archive(
    model_path: str | Path,
    archive_dir: str | Path,
    out_file: str | Path,
    *,
    split: str = "all",
    labels_csv: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    skip_broken: bool = False,
    progress: bool = True,
) -> tuple[Embedded, list[BrokenFile]]:
    """`grn embed`: embeddings and probabilities of one split into an .npz file."""
    torch_device = resolve_device(device)
    configure_cpu_threads(torch_network=torch_device.type == "cuda" or None)
    net, card = load_model(model_path, torch_device)
    archive = load_archive(archive_dir, labels_csv)
    broken: list[BrokenFile] = []
    embedded = embed_scenes(
        net,
        card,
        archive,
        archive.indices(split),
        device=torch_device,
        batch_size=batch_size,
        skip_broken=skip_broken,
        broken=broken,
        progress=progress,
    )
    save_embeddings(out_file, archive, embedded, card)
    return embedded, broken
