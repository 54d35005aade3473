"""Which pooled backbone features the heads should train on: a sweep from cached features.

    python -m bench.pooling_sweep gap gap+b6 gap+gem ...

EfficientNet-Lite0 is run once over the 8 symmetry views of every scene, keeping a superset
of pooled features (below); each argument names the parts a variant concatenates, each part
L2-normalised and scaled by 1/sqrt(parts) so that the joined vector is a unit vector and the
distillation teacher weighs the parts equally. Each variant trains head mode's defaults
(seed 0) on those features and is scored on the test split with one view, as `grn evaluate`
scores a served model (k-NN sample-F1, mAP, classifier sample-F1 @0.5).

Parts: `gap`, `gmp`, `gem` (average, max and generalised-mean p=3 pooling of the final
1280-channel map, the first being what is served today) and `b6`, `b5`, `b4`, `b3`
(average pooling of the last four stages' outputs: 320, 192, 112 and 80 channels).
`raw` before the parts skips the normalisation (`raw:gap` is exactly today's features).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bench.head_sweep import one_view_report, register_lite0_variant
from model.network import GRNHead
from model.train import Trainer
from model.train_config import config_for_mode

ARCHIVE = "../shared/datasets/ucm-multilabel"
PARTS = {"gap": 1280, "gmp": 1280, "gem": 1280, "b6": 320, "b5": 192, "b4": 112, "b3": 80}


def superset(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Every part of PARTS from Lite0 (timm's `net`), concatenated in that order."""
    x = net.bn1(net.conv_stem(x))
    stages = []
    for block in net.blocks:
        x = block(x)
        stages.append(x)
    head = net.bn2(net.conv_head(x))
    gem = head.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1.0 / 3)
    pooled = [head.mean((2, 3)), head.amax((2, 3)), gem]
    pooled += [s.mean((2, 3)) for s in stages[-1:-5:-1]]
    return torch.cat(pooled, dim=1)


register_lite0_variant("lite0_superset", sum(PARTS.values()), superset)


def columns(part: str) -> slice:
    start = 0
    for name, width in PARTS.items():
        if name == part:
            return slice(start, start + width)
        start += width
    raise ValueError(f"unknown part {part!r}")


def select(features: torch.Tensor, variant: str) -> torch.Tensor:
    raw = variant.startswith("raw:")
    parts = variant.removeprefix("raw:").split("+")
    chunks = [features[..., columns(p)] for p in parts]
    if not raw:
        chunks = [F.normalize(c.float(), dim=-1) / len(chunks) ** 0.5 for c in chunks]
    return torch.cat(chunks, dim=-1).contiguous()


def run(variant: str, settings: dict) -> str:
    name = "pool-" + variant.replace(":", "_").replace("+", "_")
    config = config_for_mode(
        "head", ARCHIVE, f"runs/{name}", cache_dir=".cache/features", progress=False,
        backbone="lite0_superset", **settings,
    )  # fmt: skip
    trainer = Trainer(config)
    for split in (trainer.train, trainer.val):
        split.inputs = select(split.inputs, variant)
    c = config
    head = GRNHead(
        trainer.train.inputs.shape[-1],
        c.embedding_dim,
        len(trainer.archive.label_names),
        c.hidden_dim,
        c.dropout,
    )
    trainer.net.head = head
    trainer.trainable = trainer.train_module = head
    trainer.optimizer = trainer._make_optimizer()
    trainer.scheduler = torch.optim.lr_scheduler.StepLR(
        trainer.optimizer, step_size=c.lr_step, gamma=c.lr_gamma
    )
    start = time.time()
    result = trainer.fit(resume=False)
    seconds = time.time() - start
    report = one_view_report(trainer, name, head, lambda test: select(test, variant))
    return (
        f"{variant} {settings} dims {trainer.train.inputs.shape[-1]} {seconds:.0f}s "
        f"best epoch {result.best_epoch} val k-NN F1 {result.best_val['val_knn_sample_f1']:.4f}"
        f" | {report}"
    )


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", help="PARTS or PARTS={JSON settings}")
    for argument in parser.parse_args().variants:
        variant, _, extra = argument.partition("=")
        settings = json.loads(extra) if extra else {}
        print(run(variant, settings), flush=True)


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    main()
