"""Checkpoints: the network's weights plus the model card that describes them.

A model file is one safetensors file. Its metadata holds the model card as JSON under
`grn_model_card`: backbone, weights origin, input size, mean/std, embedding size, label
names, per-label thresholds, training config, metrics and a version id. Whoever loads a model
takes preprocessing and label names from the card. Loading never unpickles anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

if TYPE_CHECKING:  # torch is imported where weights are touched: reading a card needs none
    import torch

    from model.network import GRNNet

CARD_KEY = "grn_model_card"
CARD_FORMAT = 1
MODEL_FILENAME = "model.safetensors"


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not a GRN model."""


@dataclass
class ModelCard:
    backbone: str
    weights: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_features: int
    embedding_dim: int
    hidden_dim: int
    label_names: list[str]
    thresholds: list[float]
    loss: str
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    created: str = ""
    format: int = CARD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        data = json.loads(text)
        if data.get("format") != CARD_FORMAT:
            raise ModelFileError(f"model card format {data.get('format')} is not {CARD_FORMAT}")
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


def build_network(card: ModelCard, pretrained: bool = False) -> GRNNet:
    """The network a card describes (random weights unless `pretrained`)."""
    from model.backbones import backbone_spec, create_backbone
    from model.network import GRNHead, GRNNet

    backbone, _ = create_backbone(card.backbone, pretrained=pretrained)
    head = GRNHead(
        backbone_spec(card.backbone).num_features,
        card.embedding_dim,
        len(card.label_names),
        card.hidden_dim,
    )
    return GRNNet(backbone, head)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict: the same weights give the same version id."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def resolve_model_path(path: str | Path) -> Path:
    """A model is named by its file or by the training folder that holds `model.safetensors`."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}; train one with `grn train`")
    return path


def save_model(path: str | Path, net: GRNNet, card: ModelCard) -> ModelCard:
    """Write weights and card atomically; the card's version is the weights' digest."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    card.version = "grn-" + weights_digest(state)[:16]
    card.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    from safetensors.torch import save_file

    save_file(state, str(tmp), metadata={CARD_KEY: card.to_json()})
    os.replace(tmp, path)
    return card


def read_card(path: str | Path) -> ModelCard:
    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for broken files
        raise ModelFileError(f"{path}: not a safetensors model file ({exc})") from exc
    if CARD_KEY not in metadata:
        raise ModelFileError(f"{path}: has no GRN model card; it was not written by `grn train`")
    return ModelCard.from_json(metadata[CARD_KEY])


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple[GRNNet, ModelCard]:
    """Load a trained model for inference (eval mode)."""
    path = resolve_model_path(path)
    card = read_card(path)
    net = build_network(card, pretrained=False)
    state: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            state[key] = handle.get_tensor(key)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match its model card ({exc})") from exc
    return net.to(device).eval(), card
