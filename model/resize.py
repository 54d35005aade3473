"""Resizing uint8 images without torch, byte for byte as torchvision does it.

The network's inputs are the card's `input_size` square: torchvision's
`resize(..., antialias=True)` (bilinear) on a uint8 tensor, which torch computes in fixed
point as Pillow does (aten/src/ATen/native/cpu/UpSampleKernel.cpp,
`_compute_index_ranges_int16_weights`): per output pixel, the taps of a triangle filter
stretched by the scale when shrinking, normalised, then turned into int16 weights with as
many fraction bits as the largest weight allows; the horizontal pass first, rounded and
clamped to uint8, then the vertical pass on its result. A dimension already at its size is
not resampled. Doing the same here in numpy gives the same bytes (tests/model/test_resize.py
compares them over many sizes), so that a serving image without torch feeds the exported
graph exactly what the torch path feeds it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

INT16_LIMIT = 1 << 15
MAX_PRECISION = 22


@lru_cache(maxsize=64)
def _taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """How `in_size` pixels resample to `out_size`: each output's input indices
    (out_size, taps) and int16 weights (as int32, 0 past a row's last tap), and the number of
    fraction bits the weights carry."""
    scale = in_size / out_size
    support = scale if scale >= 1.0 else 1.0  # a linear filter's half width, stretched
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    max_taps = int(np.ceil(support)) * 2 + 1
    index = np.zeros((out_size, max_taps), np.intp)
    weights = np.zeros((out_size, max_taps), np.float64)
    largest = 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xsize = min(int(center + support + 0.5), in_size) - xmin
        xsize = min(max(xsize, 0), max_taps)
        row = [max(0.0, 1.0 - abs((j + xmin - center + 0.5) * invscale)) for j in range(xsize)]
        total = sum(row)  # summed in order, as torch does
        if total != 0.0:
            row = [w / total for w in row]
            largest = max(largest, *row)
        index[i] = np.minimum(xmin + np.arange(max_taps), in_size - 1)
        weights[i, :xsize] = row
    precision = 0
    while precision < MAX_PRECISION:
        if int(0.5 + largest * (1 << (precision + 1))) >= INT16_LIMIT:
            break
        precision += 1
    scaled = weights * (1 << precision)
    rounded = np.where(scaled < 0, np.trunc(scaled - 0.5), np.trunc(scaled + 0.5))
    return index, rounded.astype(np.int32), precision


def _resample(planes: np.ndarray, out_size: int, axis: int) -> np.ndarray:
    """One pass over (C, H, W) int32 bytes along `axis` (1: rows, 2: columns): the sum of
    taps times weights plus a half, shifted by the precision and clamped to 0..255, as
    torch's uint8 kernel does (the sums stay below 2**31)."""
    index, weights, precision = _taps(planes.shape[axis], out_size)
    shape = list(planes.shape)
    shape[axis] = out_size
    total = np.full(shape, (1 << precision) >> 1, np.int32)
    for k in range(index.shape[1]):
        if axis == 2:
            total += planes[:, :, index[:, k]] * weights[:, k]
        else:
            total += planes[:, index[:, k], :] * weights[:, k, None]
    return np.clip(total >> precision, 0, 255)


def resize_chw(image: np.ndarray, size: int) -> np.ndarray:
    """(H, W, C) uint8 -> (C, size, size) uint8, equal to torchvision's antialiased bilinear
    resize of the image as a (C, H, W) tensor: the horizontal pass, then the vertical pass
    on its bytes; a side already at `size` is left as it is."""
    if image.dtype != np.uint8 or image.ndim != 3:
        raise ValueError(f"expected an (H, W, C) uint8 image, got {image.dtype} {image.shape}")
    planes = image.transpose(2, 0, 1).astype(np.int32)
    if planes.shape[2] != size:
        planes = _resample(planes, size, axis=2)
    if planes.shape[1] != size:
        planes = _resample(planes, size, axis=1)
    return planes.astype(np.uint8)


def uint8_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Decoded (H, W, 3) uint8 images -> one (B, 3, size, size) uint8 batch, each resized
    to `size` x `size` where it is not already."""
    return np.stack(
        [
            image.transpose(2, 0, 1) if image.shape[:2] == (size, size) else resize_chw(image, size)
            for image in images
        ]
    )
