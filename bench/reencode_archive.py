"""Re-encode an archive's images as JPEG of a given quality into a new archive folder.

Used to carry the UCM archive to a GPU machine within a 64 MiB transfer:
    python -m bench.reencode_archive ../shared/datasets/ucm-multilabel .device/ucm --quality 85
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from PIL import Image

from model.archive import load_archive


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    parser.add_argument("--quality", type=int, default=85)
    args = parser.parse_args()
    archive = load_archive(args.source)
    for scene in archive.scenes:
        relative = scene.path.relative_to(args.source).with_suffix(".jpg")
        destination = args.target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(scene.path) as image:
            image.convert("RGB").save(destination, quality=args.quality)
    shutil.copy(args.source / "labels.csv", args.target / "labels.csv")
    size = sum(p.stat().st_size for p in args.target.rglob("*") if p.is_file())
    print(f"{len(archive.scenes)} images, {size / 2**20:.1f} MiB in {args.target}")


if __name__ == "__main__":
    main()
