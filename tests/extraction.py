"""Backbone features as the model tests extract them: two views, batches of 4, on the CPU."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from model.archive import Archive
from model.features import FeatureCache, FeatureKey, extract_features


def extract_two_views(
    module: nn.Module,
    key: FeatureKey,
    archive: Archive,
    positions: Sequence[int],
    cache: FeatureCache | None = None,
) -> np.ndarray:
    """(2, n, F) features of the scenes at `positions` (through `cache` when given), after
    checking that none was left out."""
    features, kept = extract_features(
        module, key, archive, positions, views=2, cache=cache,
        device=torch.device("cpu"), batch_size=4, progress=False,
    )  # fmt: skip
    assert kept == positions
    return features
