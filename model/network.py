"""The GRN network: a backbone, an embedding head and a multi-label classifier head.

backbone -> pooled features -> [optional hidden layer] -> linear to `embedding_dim`
  -> L2-normalised embedding (used for retrieval and by the SNDL loss)
  -> linear classifier on the un-normalised embedding (one logit per label, BCE loss)

This is the paper's architecture; the optional hidden layer (off by default) is for the
frozen-backbone mode, where only the heads learn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class GRNOutput:
    embedding: torch.Tensor
    """(B, D) L2-normalised embedding."""
    logits: torch.Tensor
    """(B, labels) classifier logits."""
    features: torch.Tensor | None = None
    """(B, F) the backbone's pooled features the heads ran on (set by `GRNNet`)."""


class GRNHead(nn.Module):
    """Embedding and classifier heads on top of backbone features."""

    def __init__(
        self,
        in_features: int,
        embedding_dim: int,
        num_labels: int,
        hidden_dim: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden_dim > 0:
            self.hidden: nn.Module = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(in_features, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            )
            in_features = hidden_dim
        else:
            self.hidden = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.embedding = nn.Linear(in_features, embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_labels)

    def forward(self, features: torch.Tensor) -> GRNOutput:
        raw = self.embedding(self.hidden(features))
        return GRNOutput(embedding=F.normalize(raw, dim=1), logits=self.classifier(raw))


class GRNNet(nn.Module):
    """Backbone plus heads; `embed` and `classify` are the two views users need."""

    def __init__(self, backbone: nn.Module, head: GRNHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.engine: Any = None
        """The checked CPU engine `load_model` attached (model/engine.py), or None: torch.
        Not a weight: state dicts and training never see it."""

    def forward(self, images: torch.Tensor) -> GRNOutput:
        features = self.backbone(images)
        out = self.head(features)
        out.features = features
        return out

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images).embedding

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images).logits
