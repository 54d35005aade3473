"""Frozen-backbone features, computed once and cached on disk.

The cache key is the backbone, the identity of its weights, the preprocessing and the view;
each entry is keyed by the SHA-256 of the image file's bytes, so renaming a file reuses its
features and editing it recomputes them.

Views are the symmetries of a square overhead scene (it has no up): identity, flips and
90-degree rotations. Training in head mode draws one view per scene per epoch, a cheap
stand-in for image augmentation.

On a CPU the frozen backbone runs through the engine of GRN_ENGINE (ONNX Runtime by default,
model/engine.py): exported with its preprocessing when features are missing (a few seconds)
and used only after its features matched torch's to within 1e-4 on the probe batch. The
cache key leaves the engine out: features from either are the same to that tolerance.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.archive import Archive, BrokenFile, iter_images
from model.backbones import JOIN, JoinedBackbone, backbone_spec
from model.graph_export import build_cpu_engine
from model.inference import decode_workers, run_batched, run_engine

# The eight symmetries of the square: (rotations by 90 degrees, then a horizontal flip).
VIEWS: tuple[tuple[int, bool], ...] = (
    (0, False),
    (0, True),
    (2, False),
    (2, True),
    (1, False),
    (1, True),
    (3, False),
    (3, True),
)
VIEW_COUNTS = (1, 2, 4, 8)


def default_cache_dir() -> Path:
    """Where backbone features are cached: $GRN_CACHE_DIR/features, ~/.cache/grn/features."""
    return Path(os.environ.get("GRN_CACHE_DIR", Path.home() / ".cache" / "grn")) / "features"


def apply_view(image: np.ndarray, view: int) -> np.ndarray:
    rotations, flip = VIEWS[view]
    out = np.rot90(image, rotations) if rotations else image
    return np.ascontiguousarray(out[:, ::-1] if flip else out)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class FeatureKey:
    """What cached backbone features are keyed by: the backbone, the weights it holds and
    the input size. The input normalisation is the backbone's own (`backbone_spec`), the
    same for each part of a joined backbone."""

    backbone: str
    weights: str
    input_size: int

    @property
    def mean(self) -> tuple[float, ...]:
        return backbone_spec(self.backbone).mean

    @property
    def std(self) -> tuple[float, ...]:
        return backbone_spec(self.backbone).std

    def folder(self, view: int) -> str:
        text = json.dumps([self.backbone, self.weights, self.input_size, self.mean, self.std, view])
        return f"{self.backbone}-{hashlib.sha256(text.encode()).hexdigest()[:16]}-v{view}"


class FeatureCache:
    """Features per (key, view) in one .npy per image digest, under `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: FeatureKey, view: int, digest: str) -> Path:
        return self.root / key.folder(view) / digest[:2] / f"{digest}.npy"

    def get(self, key: FeatureKey, view: int, digest: str) -> np.ndarray | None:
        path = self._path(key, view, digest)
        try:
            return np.load(path)
        except (OSError, ValueError):
            return None

    def put(self, key: FeatureKey, view: int, digest: str, features: np.ndarray) -> None:
        path = self._path(key, view, digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with tmp.open("wb") as handle:
            np.save(handle, features.astype(np.float32))
        os.replace(tmp, path)


def part_keys(backbone: JoinedBackbone, key: FeatureKey) -> list[FeatureKey]:
    """The cache keys of a joined backbone's parts: their names and weights' ids."""
    weights = key.weights.split(JOIN)
    if len(weights) != len(backbone.names):  # "random": no pretrained weights
        weights = [key.weights] * len(backbone.names)
    return [
        FeatureKey(name, weight, key.input_size)
        for name, weight in zip(backbone.names, weights, strict=True)
    ]


def extract_features(
    backbone: nn.Module,
    key: FeatureKey,
    archive: Archive,
    indices: Sequence[int],
    *,
    views: int,
    cache: FeatureCache | None,
    device: torch.device,
    batch_size: int,
    skip_broken: bool = False,
    broken: list[BrokenFile] | None = None,
    progress: bool = True,
) -> tuple[np.ndarray, list[int]]:
    """Features of each scene under the first `views` views: (views, n, features) float32,
    plus the archive positions that were read (broken files are left out when skipped).
    A joined backbone's parts are extracted one after the other, each under its own key, so
    that they share cache entries with runs of that backbone alone."""
    if isinstance(backbone, JoinedBackbone):
        parts: list[tuple[np.ndarray, list[int]]] = []
        kept = list(indices)
        for part, part_key in zip(backbone.parts, part_keys(backbone, key), strict=True):
            extracted = extract_features(
                part, part_key, archive, kept, views=views, cache=cache, device=device,
                batch_size=batch_size, skip_broken=skip_broken, broken=broken, progress=progress,
            )  # fmt: skip
            parts.append(extracted)
            kept = parts[-1][1]  # the next part reads only what this one could
        selected = []
        for features, read in parts:
            row = {position: r for r, position in enumerate(read)}
            selected.append(features[:, [row[i] for i in kept]])
        return np.concatenate(selected, axis=2), kept
    backbone = backbone.to(device).eval().to(memory_format=torch.channels_last)
    digests = {i: file_digest(archive.scenes[i].path) for i in indices}
    results: dict[tuple[int, int], np.ndarray] = {}
    missing: list[tuple[int, int]] = []
    for view in range(views):
        for i in indices:
            cached = cache.get(key, view, digests[i]) if cache else None
            if cached is None:
                missing.append((view, i))
            else:
                results[(view, i)] = cached
    failed: set[int] = set()
    if missing:
        need = sorted({i for _, i in missing})
        views_of: dict[int, list[int]] = {}
        for view, i in missing:
            views_of.setdefault(i, []).append(view)
        local_broken: list[BrokenFile] = []

        def view_images() -> Iterator[tuple[tuple[int, int], np.ndarray]]:
            for i, image in iter_images(
                archive,
                need,
                skip_broken=skip_broken,
                broken=local_broken,
                workers=decode_workers(device),
            ):
                for view in views_of[i]:
                    yield (view, i), apply_view(image, view)

        engine = (
            build_cpu_engine(
                backbone,
                key.mean,
                key.std,
                key.input_size,
                version=key.folder(0),
                what=f"the {key.backbone} backbone",
            )
            if device.type == "cpu"
            else None
        )
        bar = tqdm(total=len(missing), desc="features", unit="img", disable=not progress)
        stream = (
            run_engine(engine, view_images(), input_size=key.input_size, batch_size=batch_size)
            if engine is not None
            else run_batched(
                backbone,
                view_images(),
                input_size=key.input_size,
                mean=key.mean,
                std=key.std,
                device=device,
                batch_size=batch_size,
            )
        )
        # while the engine runs the backbone, torch only stacks decoded images in the
        # decoding thread: one thread, so that its OpenMP team leaves the cores to the engine
        torch_threads = torch.get_num_threads()
        if engine is not None and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(1)
        try:
            for out in stream:
                for (view, i), row in zip(out.positions, out.outputs.numpy(), strict=True):
                    results[(view, i)] = row
                    if cache:
                        cache.put(key, view, digests[i], row)
                bar.update(len(out.positions))
        finally:
            torch.set_num_threads(torch_threads)
        bar.close()
        failed = {archive.index_of(b.name) for b in local_broken}
        if broken is not None:
            broken.extend(local_broken)
    kept = [i for i in indices if i not in failed]
    stacked = np.stack(
        [
            np.stack([results[(v, i)] for i in kept]) if kept else np.zeros((0, 0), np.float32)
            for v in range(views)
        ]
    )
    return stacked.astype(np.float32), kept
