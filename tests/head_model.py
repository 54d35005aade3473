"""A head-mode model without training: EfficientNet-Lite0 with its installed ImageNet weights
and seeded random heads, saved as `grn train` saves one."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from model.card import ModelCard, build_network, save_model


def random_heads_model(
    path: Path,
    *,
    mode: str = "head",
    label_names: Sequence[str] = ("a", "b", "c"),
    embedding_dim: int = 16,
    input_size: int = 64,
    label_blend: float = 0.0,
) -> ModelCard:
    card = ModelCard(
        backbone="efficientnet_lite0", weights="", input_size=input_size, mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5), num_features=1280, embedding_dim=embedding_dim, hidden_dim=32,
        label_names=list(label_names), thresholds=[0.5] * len(label_names), loss="sndl_bce",
        label_blend=label_blend, training={"mode": mode},
    )  # fmt: skip
    net = build_network(card, pretrained=True).eval()
    torch.manual_seed(0)
    with torch.no_grad():
        for tensor in net.head.parameters():
            tensor.copy_(torch.randn_like(tensor) * 0.1)
    return save_model(path, net, card)
