"""What a training run reads: the scenes of a split as `SplitData`.

Only labelled scenes train and validate: those whose label cells are empty are left out and
counted, and an archive with no labelled train or val scenes is refused before any work, with
what to do instead (`require_labels`). The unlabelled train scenes are read only for the
distillation term. In head mode a split is the frozen backbone's features (cached on disk)
under a few symmetry views; in full mode its images, decoded once into a uint8 tensor at the
input size.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn
from tqdm import tqdm

from model.archive import Archive, BrokenFile, iter_images
from model.features import FeatureCache, FeatureKey, default_cache_dir, extract_features
from model.inference import default_batch_size, to_uint8_tensor
from model.train_config import TrainConfig

log = logging.getLogger("grn.train")


@dataclass
class SplitData:
    """What one split contributes: its archive positions, labels and inputs.

    `inputs` is (views, n, features) float features in head mode and (n, 3, S, S) uint8
    images in full mode."""

    positions: list[int]
    labels: torch.Tensor
    inputs: torch.Tensor


class MissingLabelsError(ValueError):
    """The archive has no labelled scenes to train on or to validate with."""


def labelled_counts(archive: Archive) -> dict[str, int]:
    """How many train and val scenes are labelled and how many are not (left out)."""
    counts: dict[str, int] = {}
    for split in ("train", "val"):
        labelled = len(archive.indices(split, labelled_only=True))
        counts[f"{split}_labelled"] = labelled
        counts[f"{split}_unlabelled"] = len(archive.indices(split)) - labelled
    return counts


def require_labels(archive: Archive) -> dict[str, int]:
    """The counts of `labelled_counts`; raises MissingLabelsError, saying what training
    needs and how to serve the archive without it, when train or val has no labelled scene."""
    counts = labelled_counts(archive)
    source = archive.labels_path or archive.root
    labels = ""
    if archive.labels_path is not None and archive.labels_path != archive.root / "labels.csv":
        labels = f" --labels {archive.labels_path}"
    instead = (
        "To search this archive without training, serve it with an existing model: "
        f"`grn import {archive.root}{labels}` then "
        f"`grn reindex --model MODEL --archive {archive.root}{labels}` embeds it with that model."
    )
    needs = (
        "training needs labels.csv to have one 0/1 column per label after image,scene,split, "
        "and labelled scenes in the train split and in the val split"
    )
    if not archive.label_names:
        raise MissingLabelsError(f"{source} has no label columns: {needs}. {instead}")
    for split in ("train", "val"):
        if not counts[f"{split}_labelled"]:
            unlabelled = counts[f"{split}_unlabelled"]
            raise MissingLabelsError(
                f"{source}: none of the {unlabelled} {split} scenes is labelled (their label "
                f"cells are empty): {needs}. Label some {split} scenes, or: {instead}"
            )
    return counts


def log_scene_counts(counts: dict[str, int], distilled: bool) -> None:
    """Says which scenes train and validate (`require_labels`' counts); `distilled`: the
    unlabelled train scenes join the distillation term."""
    log.info(
        "training on %d labelled train scenes (%d unlabelled %s), validating on "
        "%d labelled val scenes (%d unlabelled left out)",
        counts["train_labelled"], counts["train_unlabelled"],
        "in the distillation term only" if distilled else "left out",
        counts["val_labelled"], counts["val_unlabelled"],
    )  # fmt: skip


def load_image_tensor(
    archive: Archive,
    positions: list[int],
    size: int,
    *,
    skip_broken: bool,
    broken: list[BrokenFile],
    progress: bool,
) -> tuple[torch.Tensor, list[int]]:
    """Decode scenes once into a (n, 3, size, size) uint8 tensor, on every core."""
    kept: list[int] = []
    tensors: list[torch.Tensor] = []
    images = iter_images(
        archive, positions, skip_broken=skip_broken, broken=broken, workers=os.cpu_count() or 1
    )
    for i, image in tqdm(
        images, total=len(positions), desc="decode", unit="img", disable=not progress
    ):
        kept.append(i)
        tensors.append(to_uint8_tensor(image, size))
    if not tensors:
        return torch.zeros(0, 3, size, size, dtype=torch.uint8), kept
    return torch.stack(tensors), kept


def load_split(
    config: TrainConfig,
    archive: Archive,
    split: str,
    *,
    backbone: nn.Module,
    key: FeatureKey,
    device: torch.device,
    broken: list[BrokenFile],
    timings: dict[str, float],
    unlabelled: bool = False,
) -> SplitData:
    """The labelled scenes of a split, or with `unlabelled` its unlabelled ones (their
    labels all 0, never read), as the mode's inputs on `device`: `backbone`'s features keyed
    by `key` in head mode, decoded images in full mode. Unreadable files go to `broken`
    (with `config.skip_broken`); the seconds and images it took go to `timings`."""
    c = config
    positions = archive.indices(split, labelled_only=True)
    if unlabelled:
        labelled = set(positions)
        positions = [i for i in archive.indices(split) if i not in labelled]
    start = time.perf_counter()
    if c.mode == "head":
        cache = FeatureCache(c.cache_dir or default_cache_dir())
        views = c.feature_views if split == "train" else 1
        features, kept = extract_features(
            backbone,
            key,
            archive,
            positions,
            views=views,
            cache=cache,
            device=device,
            batch_size=default_batch_size(device),
            skip_broken=c.skip_broken,
            broken=broken,
            progress=c.progress,
        )
        inputs = torch.from_numpy(features).to(device)
        count = len(kept) * views
    else:
        images, kept = load_image_tensor(
            archive,
            positions,
            c.input_size,
            skip_broken=c.skip_broken,
            broken=broken,
            progress=c.progress,
        )
        inputs = images.to(device)
        count = len(kept)
    seconds = time.perf_counter() - start
    name = f"{split}_unlabelled" if unlabelled else split
    timings[f"{name}_input_seconds"] = seconds
    timings[f"{name}_input_images"] = count
    if unlabelled:
        labels = torch.zeros(len(kept), len(archive.label_names), device=device)
    else:
        labels = torch.from_numpy(archive.label_matrix(kept)).to(device)
    return SplitData(kept, labels, inputs)


@dataclass(frozen=True)
class EpochOrder:
    """Which train scenes each step of an epoch sees: the labelled ones shuffled with a view
    of each, and the unlabelled ones (when the run distils on them) spread over the batches.
    Drawn from the epoch's own generator, so a resumed run draws as one that never stopped."""

    order: torch.Tensor
    views: torch.Tensor
    extra_order: torch.Tensor | None = None
    extra_views: torch.Tensor | None = None
    per_batch: int = 0
    """Unlabelled scenes per batch."""

    @classmethod
    def draw(
        cls,
        generator: torch.Generator,
        count: int,
        view_count: int,
        batch_size: int,
        unlabelled: int | None = None,
    ) -> EpochOrder:
        """The order of `count` labelled scenes with `view_count` views each and, unless
        `unlabelled` is None, of that many unlabelled ones."""
        order = torch.randperm(count, generator=generator)
        views = torch.randint(0, view_count, (count,), generator=generator)
        if unlabelled is None:  # nothing more drawn, so runs without them draw as before
            return cls(order, views)
        extra_order = torch.randperm(unlabelled, generator=generator)
        extra_views = torch.randint(0, view_count, (unlabelled,), generator=generator)
        per_batch = math.ceil(unlabelled * batch_size / count)
        return cls(order, views, extra_order, extra_views, per_batch)

    def batches(
        self, batch_size: int, *, whole_only: bool, rank: int = 0, world: int = 1
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]]:
        """Each step's rows and views of the labelled scenes for process `rank` of `world`
        (its contiguous share of the global batch, in rank order), and the rows and views of
        its unlabelled scenes (None without them). A batch of one scene is skipped, and with
        `whole_only` a short last batch."""
        share = batch_size // world
        for batch_start in range(0, len(self.order), batch_size):
            batch = self.order[batch_start : batch_start + batch_size]
            if len(batch) < 2 or (whole_only and len(batch) < batch_size):
                continue
            rows = batch[rank * share : (rank + 1) * share] if world > 1 else batch
            extra = None
            if self.extra_order is not None and self.extra_views is not None:
                start = batch_start // batch_size * self.per_batch
                chunk = self.extra_order[start:][: self.per_batch][rank::world]
                extra = (chunk, self.extra_views[chunk])
            yield rows, self.views[rows], extra
