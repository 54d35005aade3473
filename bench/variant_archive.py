"""Not a measure: writes an archive of N distinct JPEG files made from a real archive's images
(UCM by default), for the real-image path at scale (`bench.realpath`).

Scene n is source scene `n % S` (S scenes in the source) in its variant `n // S`: one of the
8 symmetries of the square (`bench.ingest.TRANSFORMS`, in turn), a square crop of 208 to
256 pixels at a random place, a gain of up to 6% per colour channel and JPEG quality 85 to
95, all drawn from a generator seeded with n, so that no two files are the same (`grn import`
records each file's SHA-256; `bench.realpath` counts the distinct ones). Each keeps its
source's folder, split and labels, under the name `SOURCE-vNNN`. labels.csv is written last,
so a folder that has it is complete.

    .venv/bin/python -m bench.variant_archive --scenes 20000 --out ../scratch/archive-20000
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Sequence
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

from bench._common import UCM
from bench.ingest import TRANSFORMS
from model.archive import ArchiveEntry, load_archive


def variant(source: Path, n: int, variant_number: int, target: Path) -> None:
    """Write variant `variant_number` of the image `source` (drawn with seed `n`) to
    `target` as JPEG."""
    rng = np.random.default_rng(n)
    with Image.open(source) as opened:
        image = opened.convert("RGB")
    transform = TRANSFORMS[variant_number % len(TRANSFORMS)]
    if transform is not None:
        image = image.transpose(transform)
    side = int(rng.integers(208, min(image.size) + 1))
    left = int(rng.integers(0, image.width - side + 1))
    top = int(rng.integers(0, image.height - side + 1))
    pixels = np.asarray(image.crop((left, top, left + side, top + side)), dtype=np.float32)
    gain = 1.0 + rng.uniform(-0.06, 0.06, size=3).astype(np.float32)
    shifted = np.clip(pixels * gain + 0.5, 0, 255).astype(np.uint8)
    Image.fromarray(shifted).save(target, format="JPEG", quality=int(rng.integers(85, 96)))


def _write(job: tuple[str, int, int, str]) -> None:
    source, n, variant_number, target = job
    variant(Path(source), n, variant_number, Path(target))


def write_variant_archive(
    out: Path, scenes: int, source: Path = UCM, *, processes: int = 2
) -> Path:
    """An archive folder at `out` of `scenes` distinct files made from `source`'s images
    (see the module docstring); kept as it is when its labels.csv already lists that many."""
    labels = out / "labels.csv"
    if labels.is_file() and sum(1 for _ in labels.open()) == scenes + 1:
        return out
    archive = load_archive(source)
    entries: Sequence[ArchiveEntry] = archive.scenes
    jobs, rows = [], []
    for n in range(scenes):
        entry = entries[n % len(entries)]
        number = n // len(entries)
        name = f"{entry.name}-v{number:03d}"
        target = out / "images" / entry.folder / f"{name}.jpg"
        jobs.append((str(entry.path), n, number, str(target)))
        rows.append([name, entry.folder, entry.split, *entry.labels])
    for folder in {entry.folder for entry in entries}:
        (out / "images" / folder).mkdir(parents=True, exist_ok=True)
    with Pool(processes) as pool:
        for _ in pool.imap_unordered(_write, jobs, chunksize=64):
            pass
    tmp = labels.with_name(".labels.csv.tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "scene", "split", *archive.label_names])
        writer.writerows(rows)
    tmp.replace(labels)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenes", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--source", type=Path, default=UCM)
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    started = time.perf_counter()
    write_variant_archive(args.out, args.scenes, args.source, processes=args.processes)
    size = sum(p.stat().st_size for p in (args.out / "images").rglob("*.jpg"))
    print(
        f"{args.scenes} files, {size / 2**20:.1f} MiB in {args.out} "
        f"({time.perf_counter() - started:.1f} s)"
    )


if __name__ == "__main__":
    main()
