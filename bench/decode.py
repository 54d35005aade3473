"""What decoding an image costs: libjpeg-turbo straight to an array against Pillow.

    python -m bench.decode [--archive ../shared/datasets/ucm-multilabel] [--rounds 7]

The archive's JPEGs (its test split) are read into memory, then decoded in rounds, the
two paths interleaved within each round, on one thread: Pillow's general path
(`decode_with_pillow`, what every image took before) and `decode_image`, which sends colour
JPEGs without EXIF to `decode_plain_jpeg`. The same for an upload (`decode_upload`: the
size check on the header, then the decode) against the earlier upload path (Pillow read the
header, then decoded). Medians of the per-image means over the rounds.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
import warnings
from collections.abc import Callable

from PIL import Image

from model.archive import load_archive
from model.imageio import ReadOptions, decode_image, decode_with_pillow
from service.api.uploads import decode_upload


def pillow_upload(data: bytes) -> object:
    """The upload path before: Pillow opened the file for its size, then decoded it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data)) as image:
            _ = image.size
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        return decode_with_pillow(data, "upload", ReadOptions())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", default="../shared/datasets/ucm-multilabel")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    archive = load_archive(args.archive)
    paths = [archive.scenes[i].path for i in archive.indices("test")]
    payloads = [p.read_bytes() for p in paths if p.suffix.lower() in (".jpg", ".jpeg")]
    if not payloads:
        raise SystemExit(f"{args.archive}: no JPEG scenes in the test split")
    cases: dict[str, Callable[[bytes], object]] = {
        "file, Pillow (before)": lambda d: decode_with_pillow(d, "scene", ReadOptions()),
        "file, decode_image (now)": decode_image,
        "upload, Pillow (before)": pillow_upload,
        "upload, decode_upload (now)": lambda d: decode_upload(
            d, "upload", max_bytes=2**30, max_pixels=40_000_000
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, decode in cases.items():
            start = time.perf_counter()
            for data in payloads:
                decode(data)
            times[name].append((time.perf_counter() - start) / len(payloads) * 1e3)
    print(f"{len(payloads)} JPEGs of {args.archive}, {args.rounds} rounds, one thread")
    ms = {name: statistics.median(t) for name, t in times.items()}
    for name, value in ms.items():
        print(f"  {name:<28} {value:.3f} ms/image  {1e3 / value:8.0f} images/s")
    for kind in ("file", "upload"):
        before = ms[f"{kind}, Pillow (before)"]
        now = next(v for k, v in ms.items() if k.startswith(kind) and "now" in k)
        print(f"  {kind}: {before / now:.2f}x faster, {before - now:.3f} ms less per image")


if __name__ == "__main__":
    main()
