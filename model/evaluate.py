"""The evaluation report of the UCM protocol (`grn evaluate`).

It scores the labelled test scenes against the labelled train split, and splits the queries
by content: scenes of folders the model trained on ("seen") and the others ("unseen": folders
left out of training, or a whole archive it never saw, with its own label set). For both it
scores the frozen ImageNet backbone on the same queries, so the report says whether training
helped or hurt on content like the user's. The report itself is `model.eval_report`'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model import rerank
from model.archive import Archive, BrokenFile, load_archive
from model.backbones import MissingWeightsError, create_backbone
from model.card import ModelCard, load_model
from model.embedding import Embedded, embed_scenes
from model.engine import describe
from model.eval_report import markdown_table, plot_examples
from model.features import FeatureCache, FeatureKey, default_cache_dir, extract_features
from model.figures import content_figures, same_labels
from model.inference import configure_cpu_threads, default_batch_size, resolve_device
from model.metrics import (
    KNN_K,
    RANK_KS,
    classification_metrics,
    knn_label_scores,
    retrieval_metrics,
    sample_f1,
)
from model.network import GRNNet


def frozen_backbone(card: ModelCard, net: GRNNet) -> tuple[Any, str]:
    """The ImageNet backbone the model started from and its weights' id: the model's own
    backbone when it was trained frozen (head mode), else a fresh pretrained one. Raises
    when its weights are not installed."""
    if card.training.get("mode") == "head":
        return net.backbone, card.weights
    if not card.training.get("pretrained", True):
        raise ValueError("the model was trained from random weights, not an ImageNet backbone")
    return create_backbone(card.backbone, pretrained=True)


def evaluation_metrics(
    query: Embedded,
    query_labels: np.ndarray,
    base: Embedded,
    base_labels: np.ndarray,
    thresholds: Sequence[float] | None,
) -> dict[str, Any]:
    """Retrieval and k-NN figures; the classifier's too when `thresholds` is given (the
    archive has the model's labels)."""
    metrics: dict[str, Any] = dict(
        retrieval_metrics(query.embeddings, query_labels, base.embeddings, base_labels, RANK_KS)
    )
    knn_scores = knn_label_scores(query.embeddings, base.embeddings, base_labels, k=KNN_K)
    metrics["knn_sample_f1"] = sample_f1(knn_scores >= 0.5, query_labels)
    if thresholds is None:
        return metrics
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
    backbone: bool = True,
) -> dict[str, Any]:
    """The UCM protocol: archive = labelled train scenes, queries = labelled test scenes,
    cosine similarity; split into seen and unseen content, each against the frozen backbone
    (`backbone=False`: not scored). Writes metrics.json, report.md and examples.png into
    `out_dir`; returns the metrics."""
    torch_device = resolve_device(device)
    configure_cpu_threads(torch_network=torch_device.type == "cuda" or None)
    net, card = load_model(model_path, torch_device)
    archive = load_archive(archive_dir, labels_csv)
    if not archive.label_names:
        raise ValueError(
            f"{archive.labels_path or archive.root} has no label columns: evaluation needs "
            "labelled scenes to say which results are relevant"
        )
    broken: list[BrokenFile] = []
    common = dict(
        device=torch_device,
        batch_size=batch_size,
        skip_broken=skip_broken,
        broken=broken,
        progress=progress,
    )
    train = archive.indices("train", labelled_only=True)
    test = archive.indices("test", labelled_only=True)
    base = embed_scenes(net, card, archive, train, **common)  # type: ignore[arg-type]
    query = embed_scenes(net, card, archive, test, **common)  # type: ignore[arg-type]
    if not base.positions or not query.positions:
        raise ValueError("evaluation needs labelled scenes in both the train and the test split")
    base_labels = archive.label_matrix(base.positions)
    query_labels = archive.label_matrix(query.positions)
    matching = same_labels(card, archive)
    metrics = evaluation_metrics(
        query, query_labels, base, base_labels, card.thresholds if matching else None
    )
    features, unavailable = None, ""
    if backbone:
        try:
            features = backbone_features(
                card, net, archive, base.positions, query.positions,
                device=torch_device, batch_size=batch_size, progress=progress,
            )  # fmt: skip
        except (MissingWeightsError, ValueError) as exc:  # weights not installed, or none
            unavailable = str(exc)
    else:
        unavailable = "not asked for (--no-backbone)"
    seen = rerank.seen_content(card, archive, query.positions)
    metrics.update(
        model_version=card.version,
        archive_size=len(base.positions),
        query_count=len(query.positions),
        unlabelled_left_out=len(archive.indices("train")) + len(archive.indices("test"))
        - len(train) - len(test),
        labels_match_model=matching,
        content=content_figures(
            seen, query.embeddings, query_labels, base.embeddings, base_labels, features,
            descriptors=rerank.keeps_descriptors(card),
        ),
        backbone_unavailable=unavailable,
        device=str(torch_device),
        engine=describe(net) if torch_device.type == "cpu" else "torch",
        embed_images_per_s=(len(base.positions) + len(query.positions))
        / (base.seconds + query.seconds),
        broken_files=[asdict(b) for b in broken],
    )  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "report.md").write_text(markdown_table(metrics, card))
    if examples:
        plot_examples(out / "examples.png", archive, query, base)
    return metrics


def backbone_features(
    card: ModelCard,
    net: GRNNet,
    archive: Archive,
    base: Sequence[int],
    query: Sequence[int],
    *,
    device: torch.device,
    batch_size: int | None,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """The frozen backbone's pooled features, L2-normalised, of the query and base scenes
    (read from and added to the feature cache head-mode training fills)."""
    module, weights = frozen_backbone(card, net)
    key = FeatureKey(card.backbone, weights, card.input_size)
    positions = list(dict.fromkeys([*query, *base]))
    features, kept = extract_features(
        module, key, archive, positions, views=1, cache=FeatureCache(default_cache_dir()),
        device=device, batch_size=batch_size or default_batch_size(device),
        skip_broken=True, progress=progress,
    )  # fmt: skip
    row = {p: r for r, p in enumerate(kept)}
    unit = features[0] / np.maximum(np.linalg.norm(features[0], axis=1, keepdims=True), 1e-12)
    return unit[[row[p] for p in query]], unit[[row[p] for p in base]]
