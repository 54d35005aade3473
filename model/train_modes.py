"""What the two training modes do differently with the network and its inputs.

- `head`: the backbone is frozen and only the heads train, on the backbone's cached
  features ((views, n, F) per split; each step takes one view of a scene). A batch's
  features are also the distillation term's teacher.
- `full`: the whole network trains (channels-last), on uint8 images augmented in batches on
  the training device and normalised with the backbone's mean and std, under bf16 autocast
  on CUDA when `amp` is set. A frozen copy of the starting backbone is the teacher.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from model.augment import AugmentConfig, augment_batch
from model.backbones import BackboneSpec
from model.inference import normalize
from model.network import GRNNet
from model.train_config import TrainConfig
from model.train_data import SplitData


class TrainMode:
    """A run's mode (`config.mode`): how the network trains and sees its inputs on `device`."""

    def __init__(self, config: TrainConfig, spec: BackboneSpec, device: torch.device) -> None:
        self.config = config
        self.spec = spec
        self.device = device
        self.head = config.mode == "head"
        self.augment = AugmentConfig(
            hflip=config.hflip,
            dihedral=config.dihedral,
            jitter=config.jitter,
            grayscale=config.grayscale,
            crop_scale=config.crop_scale,
        )
        """Full mode's batch augmentation."""

    def trained_part(self, net: GRNNet) -> tuple[GRNNet, nn.Module]:
        """The network laid out for the mode, and the part of it that trains."""
        if not self.head:
            net = net.to(memory_format=torch.channels_last)
        return net, net.head if self.head else net

    def teacher(self, net: GRNNet, distills: bool) -> nn.Module | None:
        """Full mode distils from a frozen copy of the backbone as it starts (the pretrained
        one); head mode's backbone is frozen already, its cached features are the teacher."""
        if distills and not self.head:
            return copy.deepcopy(net.backbone).eval().requires_grad_(False)
        return None

    def view_count(self, data: SplitData) -> int:
        """How many views of each scene a split holds (head mode's symmetry views)."""
        return data.inputs.shape[0] if self.head else 1

    def set_training(self, net: GRNNet) -> None:
        """Training mode for what trains; head mode's frozen backbone stays in eval mode."""
        net.train()
        if self.head:
            net.backbone.eval()

    def autocast(self) -> Any:
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def forward(
        self,
        module: nn.Module,
        teacher: nn.Module | None,
        distills: bool,
        data: SplitData,
        rows: torch.Tensor,
        views: torch.Tensor,
        generator: torch.Generator,
        extra: tuple[SplitData, torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[Any, torch.Tensor | None]:
        """`module`'s output of a training batch of `data` (its `rows`, each in its view)
        and, when it `distills`, the frozen backbone's features of the batch (full mode's
        `teacher`'s). `extra`: other scenes (data, rows, views) appended after those. Full
        mode augments the images with `generator` first."""
        batch = data.inputs[views, rows] if self.head else data.inputs[rows]
        if extra is not None:
            more, more_rows, more_views = extra
            picked = more.inputs[more_views, more_rows] if self.head else more.inputs[more_rows]
            batch = torch.cat([batch, picked])
        if self.head:
            return module(batch), batch if distills else None
        images = augment_batch(batch, self.augment, generator)
        inputs = normalize(images, self.spec.mean, self.spec.std)
        features = None
        with self.autocast():
            if teacher is not None:
                with torch.no_grad():
                    features = teacher(inputs)
            return module(inputs), features

    @torch.no_grad()
    def embed(self, net: GRNNet, data: SplitData) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented embeddings and label probabilities of a split (eval mode)."""
        net.eval()
        embeddings, probabilities = [], []
        step = 1024 if self.head else 128
        for start in range(0, len(data.positions), step):
            if self.head:
                out = net.head(data.inputs[0, start : start + step])
            else:
                inputs = normalize(data.inputs[start : start + step], self.spec.mean, self.spec.std)
                with self.autocast():
                    out = net(inputs)
            embeddings.append(out.embedding.float())
            probabilities.append(torch.sigmoid(out.logits.float()))
        return torch.cat(embeddings), torch.cat(probabilities)
