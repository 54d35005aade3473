"""Would training the backbone's last stage on the CPU reach what the frozen backbone cannot?

    python -m bench.tail_tune '{"tail_lr": 0.01}' '{"tail_lr": 0.01, "distill_weight": 0}' ...

Head mode trains only the heads on frozen EfficientNet-Lite0 features. Here the frozen part
stops one stage earlier: the cached features are the 192 x 8 x 8 maps that Lite0's sixth
stage gives for a 256 x 256 view (8 symmetry views per train scene, as head mode), and the
trained module is Lite0's last stage (one inverted-residual block), its 1 x 1 head
convolution and batch norm, average pooling, then head mode's heads. The tail starts from the
ImageNet weights and learns at `tail_lr` (the heads at head mode's lr). Everything else is
head mode's defaults (seed 0); the distillation teacher is then the cached maps, flattened.
Scored on the test split with one view, as `grn evaluate` scores a served model.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from bench.head_sweep import one_view_report, register_lite0_variant
from model.backbones import _efficientnet_lite_loader
from model.network import GRNHead, GRNOutput
from model.train import Trainer
from model.train_config import config_for_mode

ARCHIVE = "../shared/datasets/ucm-multilabel"
MAP = (192, 8, 8)


def lite0() -> nn.Module:
    import timm

    net = timm.create_model("efficientnet_lite0", pretrained=False, num_classes=0)
    _efficientnet_lite_loader(0)(net)
    return net


def stem(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Lite0 (timm's `net`) up to the end of its sixth stage, flattened: the frozen part."""
    x = net.bn1(net.conv_stem(x))
    for block in net.blocks[:-1]:
        x = block(x)
    return x.flatten(1)


register_lite0_variant("lite0_stage6", MAP[0] * MAP[1] * MAP[2], stem)


class Tail(nn.Module):
    """Lite0's last stage, head convolution and pooling, then the GRN heads."""

    def __init__(self, heads: GRNHead) -> None:
        super().__init__()
        source = lite0()
        self.block = source.blocks[-1]
        self.conv_head = source.conv_head
        self.bn2 = source.bn2
        self.heads = heads

    def forward(self, features: torch.Tensor) -> GRNOutput:
        x = features.view(-1, *MAP)
        x = self.bn2(self.conv_head(self.block(x)))
        return self.heads(x.mean((2, 3)))


def run(settings: dict) -> str:
    tail_lr = settings.pop("tail_lr", 0.01)
    name = "tail-" + "-".join(f"{k}{v}" for k, v in sorted(settings.items())) + f"-t{tail_lr}"
    config = config_for_mode(
        "head", ARCHIVE, f"runs/{name}", cache_dir=".cache/features", progress=False,
        backbone="lite0_stage6", **settings,
    )  # fmt: skip
    trainer = Trainer(config)
    c = config
    heads = GRNHead(1280, c.embedding_dim, len(trainer.archive.label_names), c.hidden_dim,
                    c.dropout)  # fmt: skip
    tail = Tail(heads)
    trainer.net.head = tail  # type: ignore[assignment]
    trainer.trainable = trainer.train_module = tail
    trainer.optimizer = torch.optim.SGD(
        [
            {"params": [p for n, p in tail.named_parameters() if not n.startswith("heads.")],
             "lr": tail_lr},
            {"params": heads.parameters(), "lr": c.lr},
        ],
        lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay,
    )  # fmt: skip
    trainer.scheduler = torch.optim.lr_scheduler.StepLR(
        trainer.optimizer, step_size=c.lr_step, gamma=c.lr_gamma
    )
    start = time.time()
    result = trainer.fit(resume=False)
    seconds = time.time() - start
    return (
        f"{name} {seconds:.0f}s best epoch {result.best_epoch} "
        f"val k-NN F1 {result.best_val['val_knn_sample_f1']:.4f} | "
        + one_view_report(trainer, name, tail)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("settings", nargs="+", help="JSON objects of settings, one run each")
    settings = parser.parse_args().settings
    torch.set_num_threads(2)
    for argument in settings:
        print(run(json.loads(argument)), flush=True)


if __name__ == "__main__":
    main()
