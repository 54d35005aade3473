"""Train head-mode variants and report val and test figures, from cached features.

    python -m bench.head_sweep '{"out": "a1", "hidden_dim": 512}' '{"out": "a2", ...}'
    python -m bench.head_sweep --ensemble a1,a2,a3 b1,b2

Each argument is a JSON object of head mode's settings to change (TrainConfig fields, the
rest are `grn train --mode head`'s defaults), plus `out`, a folder under runs/. The test split
is scored with the trained head on the cached backbone features, the same numbers
`grn evaluate` gives without pushing every image through the network again.

Four scorings are printed per model (k-NN sample-F1, mAP, classifier sample-F1 @0.5):
`q1a1` is what is served (one view of each scene, as `grn evaluate` scores it); `a8` averages
the archive scenes' embeddings over the 8 symmetry views head mode trains on, `q8` the
queries' (the embeddings are averaged and normalised again, the probabilities averaged).
With `--ensemble`, each argument names trained runs whose embeddings are concatenated
(each weighted 1/sqrt(n), so a cosine is the mean of theirs) and probabilities averaged.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

import model.train as train_module
from model.backbones import BACKBONES, BackboneSpec, _efficientnet_lite_loader
from model.card import load_model, read_card
from model.embedding import Embedded
from model.evaluate import evaluation_metrics
from model.features import FeatureCache, extract_features
from model.train import Trainer
from model.train_config import config_for_mode

ARCHIVE = "../shared/datasets/ucm-multilabel"
CACHE = ".cache/features"
Scored = tuple[np.ndarray, np.ndarray]  # (embeddings, probabilities)


def test_features(trainer: Trainer) -> tuple[np.ndarray, list[int]]:
    """(8, n, features) for the test split, from the cache when there."""
    return extract_features(
        trainer.net.backbone,
        trainer.feature_key,
        trainer.archive,
        trainer.archive.indices("test"),
        views=8,
        cache=FeatureCache(CACHE),
        device=torch.device("cpu"),
        batch_size=8,
        progress=False,
    )


def view_mean(head: torch.nn.Module, views: list[torch.Tensor]) -> Scored:
    with torch.no_grad():
        outs = [head(v) for v in views]
    embedding = torch.stack([o.embedding for o in outs]).mean(0)
    probabilities = torch.stack([torch.sigmoid(o.logits) for o in outs]).mean(0)
    return torch.nn.functional.normalize(embedding, dim=1).numpy(), probabilities.numpy()


def scorings(run: str, test: np.ndarray, archive_inputs: torch.Tensor) -> dict[str, Scored]:
    """A trained run's query (q1, q8) and archive (a1, a8) embeddings."""
    net, _ = load_model(f"runs/{run}", engine="torch")
    net.eval()
    queries = [torch.as_tensor(view) for view in test]
    archive = [archive_inputs[v] for v in range(archive_inputs.shape[0])]
    return {
        "q1": view_mean(net.head, queries[:1]),
        "q8": view_mean(net.head, queries),
        "a1": view_mean(net.head, archive[:1]),
        "a8": view_mean(net.head, archive),
    }


def joined(parts: list[Scored]) -> Scored:
    embeddings = np.concatenate([p[0] for p in parts], axis=1) / np.sqrt(len(parts))
    return embeddings.astype(np.float32), np.mean([p[1] for p in parts], axis=0)


def report(trainer: Trainer, runs: list[str], kept: list[int], test: np.ndarray) -> str:
    archive = trainer.archive
    each = [scorings(run, test, trainer.train.inputs) for run in runs]
    card = read_card(f"runs/{runs[0]}")
    lines = []
    for q in ("q1", "q8"):
        for a in ("a1", "a8"):
            query, base = joined([s[q] for s in each]), joined([s[a] for s in each])
            m = evaluation_metrics(
                Embedded(kept, query[0], query[1], 1.0),
                archive.label_matrix(kept),
                Embedded(trainer.train.positions, base[0], base[1], 1.0),
                archive.label_matrix(trainer.train.positions),
                card.thresholds,
            )
            lines.append(
                f"  {q}{a}: k-NN F1 {m['knn_sample_f1']:.4f} mAP {m['map']:.4f} "
                f"cls F1 {m['classifier_sample_f1']:.4f}"
            )
    return "\n".join(lines)


class Lite0Variant(nn.Module):
    """EfficientNet-Lite0 (its ImageNet weights loaded by the registry) with another
    `forward(timm_net, images) -> features`."""

    def __init__(self, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        import timm

        self.net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
        self.features = forward

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(self.net, images)


def register_lite0_variant(
    name: str, num_features: int, forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
) -> None:
    """Registers a Lite0 variant as a backbone, so that `grn train`'s feature cache and head
    mode serve a sweep; the sweep's trained module stands in for the heads and would not fit
    the graph `grn train` exports at its end, so that export is skipped."""
    BACKBONES[name] = BackboneSpec(
        name, num_features, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5),
        lambda: Lite0Variant(forward), lambda module: _efficientnet_lite_loader(0)(module.net),
    )  # fmt: skip
    train_module.add_graph = lambda path: None


def one_view_report(
    trainer: Trainer,
    run: str,
    module: torch.nn.Module,
    prepare: Callable[[torch.Tensor], torch.Tensor] = lambda features: features,
) -> str:
    """For sweeps whose trained module stands in for the heads (bench/pooling_sweep.py,
    bench/tail_tune.py): loads the run's best weights of `module` (saved as the network's
    `head`) and scores the test split with one view, as `grn evaluate` scores a served
    model. `prepare` maps the cached test features as the run mapped its training ones."""
    state = load_file(f"runs/{run}/model.safetensors")
    module.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("head.")})
    module.eval()
    archive = trainer.archive
    test, kept = extract_features(
        trainer.net.backbone, trainer.feature_key, archive, archive.indices("test"),
        views=1, cache=FeatureCache(CACHE), device=torch.device("cpu"), batch_size=8,
        progress=False,
    )  # fmt: skip
    with torch.no_grad():
        query = module(prepare(torch.as_tensor(test[0])))
        base = module(trainer.train.inputs[0])
    m = evaluation_metrics(
        Embedded(kept, query.embedding.numpy(), torch.sigmoid(query.logits).numpy(), 1.0),
        archive.label_matrix(kept),
        Embedded(
            trainer.train.positions, base.embedding.numpy(), torch.sigmoid(base.logits).numpy(), 1.0
        ),
        archive.label_matrix(trainer.train.positions),
        read_card(f"runs/{run}").thresholds,
    )
    return (
        f"test k-NN F1 {m['knn_sample_f1']:.4f} mAP {m['map']:.4f} "
        f"cls F1 {m['classifier_sample_f1']:.4f} NDCG@10 {m['ndcg_at_k']['10']:.4f}"
    )


def trainer_for(name: str, settings: dict[str, Any]) -> Trainer:
    config = config_for_mode(
        "head", ARCHIVE, f"runs/{name}", cache_dir=CACHE, progress=False, **settings
    )
    return Trainer(config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ensemble", action="store_true", help="score groups of trained runs")
    parser.add_argument(
        "arguments", nargs="+", help="JSON settings with `out`; with --ensemble: RUN[,RUN...]"
    )
    args = parser.parse_args()
    arguments = args.arguments
    if args.ensemble:
        trainer = trainer_for("head-sweep-ensemble", {})  # the splits and the features only
        test, kept = test_features(trainer)
        for group in arguments:
            print(group, flush=True)
            print(report(trainer, group.split(","), kept, test), flush=True)
        return
    for argument in arguments:
        settings = json.loads(argument)
        name = settings.pop("out")
        start = time.time()
        trainer = trainer_for(name, settings)
        result = trainer.fit(resume=False)
        seconds = time.time() - start
        test, kept = test_features(trainer)
        print(
            f"{name} {settings} {seconds:.0f}s best epoch {result.best_epoch} "
            f"val k-NN F1 {result.best_val['val_knn_sample_f1']:.4f}",
            flush=True,
        )
        print(report(trainer, [name], kept, test), flush=True)


if __name__ == "__main__":
    main()
