"""The frozen-backbone feature cache with a joined backbone, on real UCM scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from extraction import extract_two_views
from torch import nn

from model.archive import load_archive
from model.backbones import create_backbone
from model.features import FeatureCache, FeatureKey, part_keys

JOINED = "tiny+efficientnet_lite0"


def test_a_joined_backbone_reads_and_fills_its_parts_caches(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    archive = load_archive(ucm_root, ucm_subset)
    positions = archive.indices("test")[:4]
    torch.manual_seed(0)
    joined, weights = create_backbone(JOINED, pretrained=False)
    key = FeatureKey(JOINED, weights, 64)
    cache = FeatureCache(tmp_path)

    def extract(module: nn.Module, key: FeatureKey, cache: FeatureCache | None) -> np.ndarray:
        return extract_two_views(module, key, archive, positions, cache)

    features = extract(joined, key, cache)
    assert features.shape == (2, 4, 64 + 1280)
    keys = part_keys(joined, key)
    assert [k.backbone for k in keys] == ["tiny", "efficientnet_lite0"]
    alone = [extract(part, k, None) for part, k in zip(joined.parts, keys, strict=True)]
    np.testing.assert_allclose(features, np.concatenate(alone, axis=2), atol=1e-4)
    # stored under each part's own key, where a run of that backbone alone looks
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        k.folder(view) for k in keys for view in (0, 1)
    )
    # and read back from there: a changed network is not run again
    with torch.no_grad():
        joined.parts[1].conv_stem.weight.zero_()
    np.testing.assert_array_equal(extract(joined, key, cache), features)


def test_a_feature_key_names_the_folders_keys_named_before() -> None:
    """A key reads its input normalisation from the backbone's spec; it hashes as it did
    when keys carried mean and std, so caches filled before are still found."""
    assert FeatureKey("efficientnet_lite0", "w1", 256).folder(3) == (
        "efficientnet_lite0-dbdf5a8429ee9b41-v3"
    )
    assert FeatureKey("tiny", "w1", 256).folder(3) == "tiny-424c23211031afae-v3"
    assert FeatureKey("resnet18+wide_resnet50_2", "w1", 256).folder(3) == (
        "resnet18+wide_resnet50_2-1ac5a71d712181b8-v3"
    )
    assert FeatureKey(JOINED, "random", 64).folder(0) == f"{JOINED}-91c4a3239f86cd23-v0"
