"""Head mode with random resized crops as extra cached views beside the 8 symmetries.

    python -m bench.crop_views EXTRA [BACKBONE] [MIN_SCALE]
    python -m bench.crop_views 16 efficientnet_lite0 0.4

Views 8 to 8 + EXTRA - 1 are crops of MIN_SCALE to 1 of the scene's area (aspect 3/4 to 4/3),
drawn from the view number and the image's pixels (the same crop every time, so the feature
cache holds), then one of the 8 symmetries, resized to the input size as usual. The cache is
`.cache/crops{MIN_SCALE}` (git-ignored, like every cache); link the folders of
`.cache/features` into it first so that the 8 symmetry views are read, not computed again.
Head mode trains with its defaults on all 8 + EXTRA views; the test split is scored as
`bench/head_sweep.py` scores it (q1a1 is what is served).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import model.features as features_module
import model.train as train_module
import model.train_config as config_module
from bench import head_sweep

symmetry_view = features_module.apply_view


def crop_views(min_scale: float) -> None:
    """Makes views from 8 on crops of the scene (model.features.apply_view)."""

    def apply_view(image: np.ndarray, view: int) -> np.ndarray:
        if view < 8:
            return symmetry_view(image, view)
        h, w = image.shape[:2]
        seed = [view, int(min_scale * 100), h, w, int(image[::37, ::41].sum())]
        rng = np.random.default_rng(seed)
        scale = rng.uniform(min_scale, 1.0)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        ch = min(h, round(float(np.sqrt(scale * h * w / ratio))))
        cw = min(w, round(float(np.sqrt(scale * h * w * ratio))))
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        return symmetry_view(np.ascontiguousarray(image[y : y + ch, x : x + cw]), view % 8)

    features_module.apply_view = apply_view


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("extra", type=int, help="crop views beside the 8 symmetries")
    parser.add_argument("backbone", nargs="?", default="efficientnet_lite0")
    parser.add_argument("min_scale", type=float, nargs="?", default=0.4)
    args = parser.parse_args()
    extra, backbone, min_scale = args.extra, args.backbone, args.min_scale
    crop_views(min_scale)
    config_module.VIEW_COUNTS = (1, 2, 4, 8, 8 + extra)
    name = f"crops{extra}-{min_scale}-{backbone}"
    config = config_module.config_for_mode(
        "head", head_sweep.ARCHIVE, f"runs/{name}", cache_dir=f".cache/crops{min_scale}",
        progress=False, feature_views=8 + extra, backbone=backbone,
    )  # fmt: skip
    start = time.time()
    trainer = train_module.Trainer(config)
    result = trainer.fit(resume=False)
    print(
        f"{name} {time.time() - start:.0f}s best epoch {result.best_epoch} "
        f"val k-NN F1 {result.best_val['val_knn_sample_f1']:.4f}",
        flush=True,
    )
    test, kept = head_sweep.test_features(trainer)
    print(head_sweep.report(trainer, [name], kept, test), flush=True)


if __name__ == "__main__":
    main()
