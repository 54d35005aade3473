"""Served networks side by side: images/s of each model's checked CPU engine (ONNX Runtime by
default) on real UCM images at batch 1 and 16, the models interleaved round after round so
that a load that comes and goes hits all alike; the first model is the baseline.

    python -m bench.backbone_speed runs/ucm-head runs/efficientnet_lite1-head \
        runs/efficientnet_lite2-head [--rounds 5] [--seconds 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from bench._common import UCM
from model.archive import load_archive
from model.card import load_model
from model.imageio import read_image
from model.inference import prepare_batch

BATCHES = (1, 16)


def rate(run: object, batch: object, size: int, seconds: float) -> float:
    run(batch)  # type: ignore[operator]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run(batch)  # type: ignore[operator]
        done += size
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", type=Path, nargs="+")
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    archive = load_archive(args.archive)
    images = [read_image(archive.scenes[i].path) for i in archive.indices("test")[:16]]
    loaded = {}
    for path in args.models:
        net, card = load_model(path, "cpu")
        if net.engine is None:
            raise SystemExit(f"{path}: no CPU engine attached (GRN_ENGINE=torch?)")
        batches = {b: prepare_batch(images[:b], card.input_size).numpy() for b in BATCHES}
        loaded[path] = (card.backbone, net.engine, batches)
    figures: dict[tuple[Path, int], list[float]] = {}
    for _ in range(args.rounds):
        for path, (_, engine, batches) in loaded.items():
            for b in BATCHES:
                figures.setdefault((path, b), []).append(
                    rate(engine.run, batches[b], b, args.seconds)
                )
    base = args.models[0]
    print(f"medians of {args.rounds} rounds, {args.seconds:.0f} s each, engine "
          f"{loaded[base][1].name}")  # fmt: skip
    print("| backbone | model | images/s batch 1 / 16 | x first (1 / 16) |")
    print("| --- | --- | --- | --- |")
    for path, (backbone, _, _) in loaded.items():
        rates = [statistics.median(figures[(path, b)]) for b in BATCHES]
        firsts = [statistics.median(figures[(base, b)]) for b in BATCHES]
        ratios = [r / f for r, f in zip(rates, firsts, strict=True)]
        print(f"| {backbone} | {path} | {rates[0]:.1f} / {rates[1]:.1f} | "
              f"{ratios[0]:.2f} / {ratios[1]:.2f} |")  # fmt: skip


if __name__ == "__main__":
    main()
