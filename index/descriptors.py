"""How an index version keeps its scenes' re-rank descriptors (`model.rerank`): int8 codes
with one scale per scene (the default), or float16.

A descriptor is a unit row of F backbone features (1,280 for EfficientNet-Lite0, whose
pooled ReLU6 features are non-negative and about 40% zeros). float16 keeps a row in 2 F
bytes (2.5 KB a scene, 2.4 GiB at a million); int8 in F bytes, each row scaled on its own
so that its largest magnitude becomes 127:

    codes = rint(127 x row / max |row|)

and read back as codes / |codes|. The scale is not stored: a descriptor has norm 1 by
definition, so the norm of its codes gives it back. Why one scale per scene rather than one
per dimension (FAISS's SQ8): each row is coded without statistics of the others, so a build
needs no training pass, an incremental build copies its parent's codes unchanged and adds
the new scenes' (coding decoded codes gives the same codes back), and nothing but the codes
is kept; over UCM's train scenes both give a mean cosine error of 3.7e-4 (max 2.7e-3 per
scene, 2.4e-3 per dimension). Symmetric codes, not unsigned ones, because other descriptors
have negative values (`grn synth`'s; a SiLU backbone's).

What int8 costs the served search, against float16 in the same run: `bench/descriptor_quant.py`
and docs/scaling.md ("Quantised re-rank descriptors").
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

DTYPES = ("int8", "float16")
"""How an index version may keep its descriptors (`grn reindex --descriptors`)."""
DEFAULT = "int8"
"""Within 0.0009 P@10 of float16 on UCM's split and three draws of held-out labels (the
bound: 0.005; docs/scaling.md)."""
LEGACY = "float16"
"""How versions built before the choice existed keep them (their manifest names none)."""
UNIT_TOLERANCE = 1e-2
"""A row coded as int8 must have a norm within this of 1 (or be all zeros)."""
CODE_MAX = 127
CHUNK = 65_536
"""Rows converted at a time: a million float16 rows are not widened all at once."""
TORCH_GRAIN = 32_768
"""torch converts a tensor of at most this many values on the calling thread (its
`at::internal::GRAIN_SIZE`); a larger one goes to its intra-op thread pool."""


@functools.cache
def _torch() -> Any:
    """The torch module, or None where it is not installed (asked once)."""
    try:
        import torch
    except ImportError:
        return None
    return torch


def widened(rows: np.ndarray) -> np.ndarray:
    """float16 rows as float32. numpy converts value by value, and descriptors' many tiny
    (subnormal) values take its slow path: 0.55 ms for 100 x 1280 against 0.01 ms in
    torch's vectorised conversion. torch gets pieces of at most TORCH_GRAIN values, so that
    it converts them on this thread: a search's pool of 201 descriptors in one call went to
    torch's thread pool, and waiting for its threads took 6-15 ms a call on 2 cores under
    other processes' load (bench.scale), against 0.03 ms in pieces."""
    torch = _torch()
    if rows.dtype != np.float16 or torch is None:  # no torch: a serving install, numpy's way
        return np.asarray(rows, dtype=np.float32)
    values = torch.from_numpy(np.ascontiguousarray(rows).reshape(-1))
    out = np.empty(rows.shape, dtype=np.float32)
    into = torch.from_numpy(out.reshape(-1))
    for start in range(0, len(values), TORCH_GRAIN):
        into[start : start + TORCH_GRAIN].copy_(values[start : start + TORCH_GRAIN])
    return out


def check_dtype(name: str) -> str:
    """`name` when it is one of DTYPES; else a ValueError that lists them."""
    if name not in DTYPES:
        raise ValueError(f"descriptors are kept as one of {', '.join(DTYPES)}, not {name!r}")
    return name


def decoded(rows: Any) -> np.ndarray:
    """Kept descriptors (int8 codes, float16 or float32 rows) as float32 unit rows."""
    rows = np.asarray(rows)
    if rows.dtype != np.int8:
        return widened(rows)
    out = rows.astype(np.float32)
    # sums of squared codes: whole numbers, exact in float32 below 2^24 (a row's is about
    # 4e5), so any batch of rows reads back the same; einsum takes half linalg.norm's time
    squares = np.einsum("ij,ij->i", out, out)
    out /= np.sqrt(np.maximum(squares, np.float32(1e-30)))[:, None]  # zero rows stay zero
    return out


def _codes(rows: np.ndarray, first: int) -> np.ndarray:
    """float32 unit rows as int8 codes; `first`: the first row's number, for the error."""
    norms = np.linalg.norm(rows, axis=1)
    bad = np.flatnonzero((np.abs(norms - 1) > UNIT_TOLERANCE) & (norms > 0))
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"descriptor {first + row} has norm {float(norms[row]):.4f}: int8 keeps unit rows "
            "only (their scale is not stored); keep these as float16"
        )
    peak = np.abs(rows).max(axis=1, keepdims=True)
    scaled = rows * (CODE_MAX / np.maximum(peak, np.float32(1e-30)))
    return np.rint(scaled).astype(np.int8)


def encoded(rows: Any, dtype: str) -> np.ndarray:
    """Descriptors (n, F) as an index version keeps them in `dtype` (one of DTYPES). `rows`
    may be unit float rows or rows kept already, in any of DTYPES (a parent version's):
    rows in `dtype` already come back as they are. int8 refuses rows that are not unit."""
    check_dtype(dtype)
    rows = rows if isinstance(rows, np.ndarray) else np.asarray(rows)
    if rows.dtype == np.dtype(dtype):
        return rows
    out = np.empty(rows.shape, dtype=dtype)
    for first in range(0, len(rows), CHUNK):
        part = decoded(rows[first : first + CHUNK])
        out[first : first + len(part)] = (
            _codes(part, first) if dtype == "int8" else part.astype(np.float16)
        )
    return out


def kept_as(rows: Any) -> str:
    """Which of DTYPES kept rows are in (a ValueError for any other dtype)."""
    name = np.dtype(rows.dtype).name
    return check_dtype(name)
