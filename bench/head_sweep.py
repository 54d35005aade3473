"""Train head-mode variants and report val and test figures, from cached features.

    python bench/head_sweep.py '{"out": "a1", "hidden_dim": 512}' '{"out": "a2", ...}'

Each argument is a JSON object of TrainConfig fields (plus `out`, a folder under runs/).
The test split is scored with the trained head on the cached backbone features, the same
numbers `grn evaluate` gives without pushing every image through the network again.
"""

from __future__ import annotations

import json
import sys
import time

import torch

from model.card import load_model
from model.evaluate import Embedded, evaluation_metrics
from model.features import FeatureCache, FeatureKey, extract_features
from model.train import TrainConfig, Trainer

ARCHIVE = "../shared/datasets/ucm-multilabel"
CACHE = ".cache/features"


def main() -> None:
    for argument in sys.argv[1:]:
        settings = json.loads(argument)
        name = settings.pop("out")
        start = time.time()
        config = TrainConfig(
            archive=ARCHIVE, out=f"runs/{name}", cache_dir=CACHE, progress=False, **settings
        )
        trainer = Trainer(config)
        result = trainer.fit(resume=False)
        seconds = time.time() - start
        c = trainer.config
        key = FeatureKey(
            c.backbone, trainer.weights_id, c.input_size, trainer.spec.mean, trainer.spec.std
        )
        archive = trainer.archive
        features, kept = extract_features(
            trainer.net.backbone,
            key,
            archive,
            archive.indices("test"),
            views=1,
            cache=FeatureCache(CACHE),
            device=torch.device("cpu"),
            batch_size=8,
            progress=False,
        )
        net, card = load_model(f"runs/{name}")
        with torch.no_grad():
            query_out = net.head(torch.from_numpy(features[0]))
            base_out = net.head(trainer.train.inputs[0])
        query = Embedded(
            kept, query_out.embedding.numpy(), torch.sigmoid(query_out.logits).numpy(), 1.0
        )
        base = Embedded(
            trainer.train.positions,
            base_out.embedding.numpy(),
            torch.sigmoid(base_out.logits).numpy(),
            1.0,
        )
        m = evaluation_metrics(
            query,
            archive.label_matrix(kept),
            base,
            archive.label_matrix(trainer.train.positions),
            card.thresholds,
        )
        print(
            f"{name} {settings} {seconds:.0f}s best epoch {result.best_epoch} "
            f"val k-NN F1 {result.best_val['val_knn_sample_f1']:.4f} | test k-NN F1 "
            f"{m['knn_sample_f1']:.4f} mAP {m['map']:.4f} cls F1 {m['classifier_sample_f1']:.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
