"""Training the GRN: a config dataclass, then `train_one_epoch`, `validate` and `fit`.

Two modes:
- `full`: end-to-end fine-tuning with the paper's recipe. Training images are decoded once
  into a uint8 tensor at the input size and augmented in batches on the training device.
- `head`: the backbone is frozen; its features are computed once (cached on disk) under a
  few symmetry views, and only the heads train. Practical on a CPU.

Only labelled scenes train and validate: those whose label cells are empty are left out and
counted, and an archive with no labelled train or val scenes is refused before any work,
with what to do instead. Every epoch is validated by k-NN sample-F1 on the val split (train
split as the archive) and the best epoch is kept as `model.safetensors`, with per-label
thresholds tuned on val. The full training state is written atomically after every epoch
(`last_state.pt`), and each epoch draws its randomness from generators seeded by (seed,
epoch), so a run killed at any point and resumed gives the same weights as one that never
stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from model.archive import Archive, BrokenFile, iter_images, load_archive
from model.augment import AugmentConfig, augment_batch
from model.backbones import backbone_spec, create_backbone
from model.card import MODEL_FILENAME, ModelCard, add_graph, save_model
from model.distributed import (
    RowGather,
    all_gather_cat,
    all_reduce_sum,
    any_rank,
    init_distributed,
    shutdown,
)
from model.faults import kill_point
from model.features import (
    VIEW_COUNTS,
    FeatureCache,
    FeatureKey,
    default_cache_dir,
    extract_features,
)
from model.inference import (
    configure_cpu_threads,
    default_batch_size,
    normalize,
    resolve_device,
    to_uint8_tensor,
)
from model.losses import GRNCriterion, MemoryBank, momentum_at
from model.metrics import (
    classification_metrics,
    knn_label_scores,
    retrieval_metrics,
    sample_f1,
    tune_thresholds,
)
from model.network import GRNHead, GRNNet

STATE_FILENAME = "last_state.pt"
METRICS_FILENAME = "metrics.jsonl"
CURVE_FILENAME = "curve.png"
SUMMARY_FILENAME = "train_summary.json"

log = logging.getLogger("grn.train")


@dataclass
class TrainConfig:
    archive: str
    out: str
    labels_csv: str | None = None
    mode: str = "head"
    backbone: str = "efficientnet_lite0"
    pretrained: bool = True
    loss: str = "sndl_bce"
    embedding_dim: int = 128
    label_blend: float = 0.0
    """The card's: the index ranks by the embedding joined with the label probabilities."""
    hidden_dim: int = 0
    dropout: float = 0.0
    epochs: int = 130
    batch_size: int = 256
    optimizer: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_step: int = 30
    lr_gamma: float = 0.5
    temperature: float = 0.05
    bce_weight: float = 1.0
    distill_weight: float = 0.0
    """Weight of keeping the frozen backbone's batch neighbourhoods (model/losses.py)."""
    distill_temperature: float = 0.05
    use_unlabelled: bool = True
    """When distilling, unlabelled train scenes join each batch for the distillation term."""
    bank_init: str = "embeddings"
    input_size: int = 256
    hflip: bool = True
    dihedral: bool = False
    jitter: float = 0.4
    grayscale: float = 0.2
    crop_scale: float = 1.0
    feature_views: int = 1
    cache_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    skip_broken: bool = False
    progress: bool = True
    max_minutes: float | None = None
    """Stop cleanly after the epoch that passes this much training time; resume later."""
    drop_last: bool = False
    """Skip an epoch's last batch when it is short (always so under torchrun, where every
    rank must take an equal share of each batch)."""

    def validate(self) -> None:
        if self.mode not in ("head", "full"):
            raise ValueError(f"mode must be head or full, not {self.mode!r}")
        if self.feature_views not in VIEW_COUNTS:
            raise ValueError(f"feature views must be one of {VIEW_COUNTS}")
        if self.bank_init not in ("embeddings", "random"):
            raise ValueError("bank init must be embeddings or random")
        if self.optimizer not in ("sgd", "adamw"):
            raise ValueError("optimizer must be sgd or adamw")
        if self.epochs < 1 or self.batch_size < 2:
            raise ValueError("epochs must be >= 1 and batch size >= 2")
        if not 0 <= self.label_blend < 1:
            raise ValueError("label blend must be at least 0 and below 1")
        backbone_spec(self.backbone)
        GRNCriterion(self.loss, distill_weight=self.distill_weight,
                     distill_temperature=self.distill_temperature)  # fmt: skip


MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    # The paper's recipe.
    "full": {
        "epochs": 130,
        "lr_step": 30,
        "hidden_dim": 0,
        "dropout": 0.0,
        "temperature": 0.05,
        "bce_weight": 1.0,
        "distill_weight": 0.0,
        "label_blend": 0.0,
    },
    # Tuned on the UCM val split for frozen EfficientNet-Lite0 features (docs/results.md):
    # a hidden layer, dropout, a softer temperature and more weight on BCE keep the
    # full-ranking mAP up while k-NN F1 improves.
    "head": {
        "epochs": 60,
        "lr_step": 20,
        "hidden_dim": 512,
        "dropout": 0.3,
        "temperature": 0.1,
        "bce_weight": 3.0,
        "feature_views": 8,
        # Keeps more of the frozen backbone's neighbourhoods on content the labels do not
        # describe (held-out mAP above the backbone's in three draws; held-out folders' P@10
        # not in all). The softer teacher (0.1) also lifts mAP on UCM itself: 0.895 against
        # 0.880 at (0.1, 0.05), three seeds, k-NN F1 equal (docs/results.md, "Content the
        # model never saw").
        "distill_weight": 0.2,
        "distill_temperature": 0.1,
        # The index ranks by the embedding joined with the label probabilities, a tenth of
        # the weight on the probabilities: UCM test mAP 0.892 -> 0.922, NDCG@10 up, k-NN F1
        # within a seed's spread; held-out content under `auto` at or above the backbone
        # (docs/results.md, "Ranking by the embedding joined with the label probabilities").
        "label_blend": 0.1,
    },
}


def config_for_mode(mode: str, archive: str, out: str, **overrides: Any) -> TrainConfig:
    """A TrainConfig with the defaults of `mode`, then the given overrides (None: default)."""
    if mode not in MODE_DEFAULTS:
        raise ValueError(f"mode must be one of {', '.join(MODE_DEFAULTS)}, not {mode!r}")
    values = {**MODE_DEFAULTS[mode], **{k: v for k, v in overrides.items() if v is not None}}
    return TrainConfig(archive=archive, out=out, mode=mode, **values)


@dataclass
class SplitData:
    """What one split contributes: its archive positions, labels and inputs.

    `inputs` is (views, n, features) float features in head mode and (n, 3, S, S) uint8
    images in full mode."""

    positions: list[int]
    labels: torch.Tensor
    inputs: torch.Tensor


@dataclass
class TrainResult:
    model_path: Path
    best_epoch: int
    best_val: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    broken: list[BrokenFile] = field(default_factory=list)
    scenes: dict[str, int] = field(default_factory=dict)
    """Labelled scenes used and unlabelled ones left out, per split (`labelled_counts`)."""


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


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


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


class Trainer:
    """Holds the network, data and optimisation state of one run."""

    def __init__(self, config: TrainConfig) -> None:
        config.validate()
        self.config = config
        # before any heavy work: an archive without labelled scenes stops here
        self.archive = load_archive(config.archive, config.labels_csv)
        self.scene_counts = require_labels(self.archive)
        self.out = Path(config.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.dist, device_name = init_distributed(config.device)
        if self.dist.enabled and config.batch_size % self.dist.world_size:
            raise ValueError(
                f"batch size {config.batch_size} does not split over "
                f"{self.dist.world_size} processes; use a multiple"
            )
        self.device = resolve_device(device_name)
        configure_cpu_threads(torch_network=True)  # training is torch's
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        torch.manual_seed(config.seed)
        if self.dist.is_main:
            counts = self.scene_counts
            joined = config.distill_weight > 0 and config.use_unlabelled
            log.info(
                "training on %d labelled train scenes (%d unlabelled %s), validating on "
                "%d labelled val scenes (%d unlabelled left out)",
                counts["train_labelled"], counts["train_unlabelled"],
                "in the distillation term only" if joined else "left out",
                counts["val_labelled"], counts["val_unlabelled"],
            )  # fmt: skip
        self.spec = backbone_spec(config.backbone)
        backbone, self.weights_id = create_backbone(config.backbone, pretrained=config.pretrained)
        head = GRNHead(
            self.spec.num_features,
            config.embedding_dim,
            len(self.archive.label_names),
            config.hidden_dim,
            config.dropout,
        )
        self.net = GRNNet(backbone, head).to(self.device)
        if config.mode == "full":
            self.net = self.net.to(memory_format=torch.channels_last)
        self.trainable: nn.Module = self.net if config.mode == "full" else self.net.head
        # Under torchrun the trained module is wrapped in DDP (gradients averaged over the
        # ranks); the memory bank is not part of it: every rank keeps the whole bank and
        # applies the same update from the gathered batch (see train_one_epoch).
        self.train_module: nn.Module = self.trainable
        if self.dist.enabled:
            self.train_module = nn.parallel.DistributedDataParallel(
                self.trainable,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.criterion = GRNCriterion(
            config.loss,
            config.temperature,
            config.bce_weight,
            config.distill_weight,
            config.distill_temperature,
        )
        # under torchrun the distillation term's neighbourhoods span every process's rows
        self.gather = RowGather(self.dist) if self.dist.enabled else None
        # Full mode distils from a frozen copy of the backbone as it starts (the pretrained
        # one); head mode's backbone is frozen already, its cached features are the teacher.
        self.teacher: nn.Module | None = None
        if self.criterion.distills and config.mode == "full":
            self.teacher = copy.deepcopy(self.net.backbone).eval().requires_grad_(False)
        self.augment = AugmentConfig(
            hflip=config.hflip,
            dihedral=config.dihedral,
            jitter=config.jitter,
            grayscale=config.grayscale,
            crop_scale=config.crop_scale,
        )
        self.broken: list[BrokenFile] = []
        self.timings: dict[str, float] = {}
        self.train = self._load_split("train")
        self.val = self._load_split("val")
        # unlabelled train scenes: only the distillation term has something to say of them
        self.unlabelled: SplitData | None = None
        if (
            self.criterion.distills
            and config.use_unlabelled
            and self.scene_counts["train_unlabelled"]
        ):
            self.unlabelled = self._load_split("train", unlabelled=True)
            self.scene_counts["train_unlabelled_distilled"] = len(self.unlabelled.positions)
        if not self.train.positions or not self.val.positions:
            raise ValueError(
                "training needs readable labelled scenes in both the train and the val split"
            )
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer, step_size=config.lr_step, gamma=config.lr_gamma
        )
        self.bank: MemoryBank | None = None
        self.start_epoch = 0
        self.global_step = 0
        self.history: list[dict[str, Any]] = []
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_val: dict[str, Any] = {}

    # -- data ---------------------------------------------------------------------------
    @property
    def feature_key(self) -> FeatureKey:
        """What the cached backbone features of this run's backbone and input are keyed by."""
        c = self.config
        return FeatureKey(c.backbone, self.weights_id, c.input_size, self.spec.mean, self.spec.std)

    def _load_split(self, split: str, unlabelled: bool = False) -> SplitData:
        """The labelled scenes of a split, or with `unlabelled` its unlabelled ones (their
        labels all 0, never read)."""
        c = self.config
        positions = self.archive.indices(split, labelled_only=True)
        if unlabelled:
            labelled = set(positions)
            positions = [i for i in self.archive.indices(split) if i not in labelled]
        start = time.perf_counter()
        if c.mode == "head":
            key = self.feature_key
            cache = FeatureCache(c.cache_dir or default_cache_dir())
            views = c.feature_views if split == "train" else 1
            features, kept = extract_features(
                self.net.backbone,
                key,
                self.archive,
                positions,
                views=views,
                cache=cache,
                device=self.device,
                batch_size=default_batch_size(self.device),
                skip_broken=c.skip_broken,
                broken=self.broken,
                progress=c.progress,
            )
            inputs = torch.from_numpy(features).to(self.device)
            count = len(kept) * views
        else:
            images, kept = load_image_tensor(
                self.archive,
                positions,
                c.input_size,
                skip_broken=c.skip_broken,
                broken=self.broken,
                progress=c.progress,
            )
            inputs = images.to(self.device)
            count = len(kept)
        seconds = time.perf_counter() - start
        name = f"{split}_unlabelled" if unlabelled else split
        self.timings[f"{name}_input_seconds"] = seconds
        self.timings[f"{name}_input_images"] = count
        if unlabelled:
            labels = torch.zeros(len(kept), len(self.archive.label_names), device=self.device)
        else:
            labels = torch.from_numpy(self.archive.label_matrix(kept)).to(self.device)
        return SplitData(kept, labels, inputs)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = self.trainable.parameters()
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )

    # -- forward passes -----------------------------------------------------------------
    def _autocast(self) -> Any:
        enabled = self.config.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _forward_train(
        self,
        data: SplitData,
        rows: torch.Tensor,
        views: torch.Tensor,
        generator: torch.Generator,
        extra: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[Any, torch.Tensor | None]:
        """The batch's output and, when distilling, the frozen backbone's features of it.
        `extra`: rows and views of unlabelled scenes, appended after the labelled ones."""
        head = self.config.mode == "head"
        batch = data.inputs[views, rows] if head else data.inputs[rows]
        if extra is not None and self.unlabelled is not None:
            more = self.unlabelled.inputs
            batch = torch.cat([batch, more[extra[1], extra[0]] if head else more[extra[0]]])
        if head:
            return self.train_module(batch), batch if self.criterion.distills else None
        images = augment_batch(batch, self.augment, generator)
        inputs = normalize(images, self.spec.mean, self.spec.std)
        teacher = None
        with self._autocast():
            if self.teacher is not None:
                with torch.no_grad():
                    teacher = self.teacher(inputs)
            return self.train_module(inputs), teacher

    @torch.no_grad()
    def embed_split(self, data: SplitData) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented embeddings and label probabilities of a split (eval mode)."""
        self.net.eval()
        embeddings, probabilities = [], []
        step = 1024 if self.config.mode == "head" else 128
        for start in range(0, len(data.positions), step):
            if self.config.mode == "head":
                out = self.net.head(data.inputs[0, start : start + step])
            else:
                inputs = normalize(data.inputs[start : start + step], self.spec.mean, self.spec.std)
                with self._autocast():
                    out = self.net(inputs)
            embeddings.append(out.embedding.float())
            probabilities.append(torch.sigmoid(out.logits.float()))
        return torch.cat(embeddings), torch.cat(probabilities)

    def init_bank(self) -> None:
        if not self.criterion.uses_bank:
            return
        if self.config.bank_init == "random":
            generator = torch.Generator().manual_seed(self.config.seed)
            self.bank = MemoryBank.random(
                len(self.train.positions),
                self.config.embedding_dim,
                self.train.labels.cpu(),
                generator,
            ).to(self.device)
        else:
            embeddings, _ = self.embed_split(self.train)
            self.bank = MemoryBank(embeddings, self.train.labels)

    # -- epochs -------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int, bar: tqdm | None = None) -> dict[str, float]:
        c = self.config
        torch.manual_seed(c.seed * 1_000_003 + epoch)
        generator = torch.Generator().manual_seed(c.seed * 1_000_003 + epoch)
        momentum = momentum_at(epoch / c.epochs)
        n = len(self.train.positions)
        order = torch.randperm(n, generator=generator)
        view_count = self.train.inputs.shape[0] if c.mode == "head" else 1
        views = torch.randint(0, view_count, (n,), generator=generator)
        # unlabelled scenes, spread over the epoch's batches (drawn only when there are some,
        # so runs without them draw exactly as before)
        extra_order = extra_views = None
        per_batch = 0
        if self.unlabelled is not None:
            u = len(self.unlabelled.positions)
            extra_order = torch.randperm(u, generator=generator)
            extra_views = torch.randint(0, view_count, (u,), generator=generator)
            per_batch = math.ceil(u * c.batch_size / n)
        self.net.train()
        if c.mode == "head":
            self.net.backbone.eval()
        totals = {"loss": 0.0, "sndl": 0.0, "bce": 0.0, "distill": 0.0}
        seen = 0
        start = time.perf_counter()
        world, rank = self.dist.world_size, self.dist.rank
        share = c.batch_size // world
        for batch_start in range(0, n, c.batch_size):
            batch_cpu = order[batch_start : batch_start + c.batch_size]
            if len(batch_cpu) < 2 or (
                (c.drop_last or self.dist.enabled) and len(batch_cpu) < c.batch_size
            ):
                continue
            kill_point(f"train-step:{self.global_step}")
            # each rank takes its contiguous share of the global batch, in rank order
            rows_cpu = batch_cpu[rank * share : (rank + 1) * share] if world > 1 else batch_cpu
            rows = rows_cpu.to(self.device)
            extra = None
            if extra_order is not None and extra_views is not None:
                chunk = extra_order[batch_start // c.batch_size * per_batch :][:per_batch]
                chunk = chunk[rank::world]
                extra = (chunk.to(self.device), extra_views[chunk].to(self.device))
            output, teacher = self._forward_train(
                self.train, rows, views[rows_cpu].to(self.device), generator, extra
            )
            labels = self.train.labels[rows]
            parts = self.criterion(output, labels, rows, self.bank, teacher, self.gather)
            self.optimizer.zero_grad(set_to_none=True)
            parts.total.backward()
            self.optimizer.step()
            if self.bank is not None:
                # the whole batch's rows and embeddings, so every rank's bank stays the same
                self.bank.update(
                    all_gather_cat(rows, self.dist),
                    all_gather_cat(output.embedding[: len(rows)].detach().float(), self.dist),
                    momentum,
                )
            self.global_step += 1
            size = len(rows_cpu)
            losses = torch.tensor(
                [
                    float(parts.total.detach()) * size,
                    float(parts.sndl.detach()) * size if parts.sndl is not None else 0.0,
                    float(parts.bce.detach()) * size if parts.bce is not None else 0.0,
                    float(parts.distill.detach()) * size if parts.distill is not None else 0.0,
                    float(size),
                ],
                dtype=torch.float64,
            )
            losses = all_reduce_sum(losses, self.dist)
            seen += int(losses[4])
            for position, key in enumerate(("loss", "sndl", "bce", "distill")):
                totals[key] += float(losses[position])
            if bar is not None:
                bar.set_postfix(loss=f"{float(parts.total.detach()):.4f}", refresh=False)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        stats = {k: v / max(seen, 1) for k, v in totals.items()}
        stats.update(momentum=momentum, train_seconds=seconds, train_images_per_s=seen / seconds)
        return stats

    def validate(self) -> tuple[dict[str, Any], np.ndarray]:
        """k-NN sample-F1 (and more) on val against the train split; returns the metrics and
        the val label probabilities of the classifier."""
        if self.config.mode == "full" and self.bank is not None:
            # As the reference code does: the memory bank stands in for the train split's
            # embeddings, which saves a pass over the training images every epoch.
            train_emb = self.bank.memory
        else:
            train_emb, _ = self.embed_split(self.train)
        val_emb, val_prob = self.embed_split(self.val)
        train_np, val_np = train_emb.cpu().numpy(), val_emb.cpu().numpy()
        val_labels = self.val.labels.cpu().numpy()
        scores = knn_label_scores(val_np, train_np, self.train.labels.cpu().numpy())
        retrieval = retrieval_metrics(
            val_np, val_labels, train_np, self.train.labels.cpu().numpy(), ks=(10,)
        )
        probabilities = val_prob.cpu().numpy()
        metrics = {
            "val_knn_sample_f1": sample_f1(scores >= 0.5, val_labels),
            "val_map": retrieval["map"],
            "val_classifier_sample_f1": classification_metrics(probabilities, val_labels)[
                "sample_f1"
            ],
        }
        return metrics, probabilities

    # -- state --------------------------------------------------------------------------
    def state_dict(self, epoch: int) -> dict[str, Any]:
        return {
            "epoch": epoch,
            "global_step": self.global_step,
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "bank": None if self.bank is None else self.bank.memory.cpu(),
            "history": self.history,
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "config": asdict(self.config),
            "train_scenes": self.train_scenes_digest(),
        }

    def train_scenes_digest(self) -> str:
        """Names the training scenes (the memory bank's rows), which change with labels.csv
        even when the settings do not."""
        return self.archive.names_digest(self.train.positions)

    def save_state(self, epoch: int) -> None:
        path = self.out / STATE_FILENAME
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(self.state_dict(epoch), tmp)
        os.replace(tmp, path)

    def load_state(self) -> bool:
        path = self.out / STATE_FILENAME
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = dict(state["config"])
        mine = asdict(self.config)
        ignore = {"progress", "device", "cache_dir", "skip_broken", "max_minutes"}
        differ = sorted(k for k in mine if k not in ignore and saved.get(k) != mine[k])
        if differ:
            raise ValueError(
                f"{path} was written by a run with other settings ({', '.join(differ)}); "
                "resume with the same settings or train into a new folder"
            )
        if state.get("train_scenes", self.train_scenes_digest()) != self.train_scenes_digest():
            raise ValueError(
                f"{path} was written by a run over other training scenes (labels.csv changed; "
                f"{len(self.train.positions)} labelled train scenes now); pass --restart or "
                "train into a new folder"
            )
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state["bank"] is not None:
            self.bank = MemoryBank.restore(state["bank"].to(self.device), self.train.labels)
        self.history = list(state["history"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.best_val = dict(state["best_val"])
        self.start_epoch = int(state["epoch"]) + 1
        self.global_step = int(state["global_step"])
        return True

    def card(self, thresholds: np.ndarray, metrics: dict[str, Any]) -> ModelCard:
        c = self.config
        return ModelCard(
            backbone=c.backbone,
            weights=self.weights_id,
            input_size=c.input_size,
            mean=self.spec.mean,
            std=self.spec.std,
            num_features=self.spec.num_features,
            embedding_dim=c.embedding_dim,
            hidden_dim=c.hidden_dim,
            label_names=list(self.archive.label_names),
            thresholds=[float(t) for t in thresholds],
            loss=c.loss,
            label_blend=c.label_blend,
            training={
                **{k: v for k, v in asdict(c).items() if k not in ("progress",)},
                # what the model saw, so `grn evaluate` can tell seen from unseen content
                "folders": sorted({self.archive.scenes[i].folder for i in self.train.positions}),
                "train_scenes": self.train_scenes_digest(),
            },
            metrics=metrics,
        )

    def write_logs(self) -> None:
        lines = "".join(json.dumps(row) + "\n" for row in self.history)
        _atomic_write_text(self.out / METRICS_FILENAME, lines)
        plot_curves(self.history, self.out / CURVE_FILENAME)

    # -- the loop -----------------------------------------------------------------------
    def fit(self, resume: bool = True) -> TrainResult:
        c = self.config
        resumed = resume and self.load_state()
        if not resumed:
            self.init_bank()
        epochs = range(self.start_epoch, c.epochs)
        bar = tqdm(
            epochs,
            desc=f"train {c.mode}",
            unit="epoch",
            disable=not c.progress,
            initial=self.start_epoch,
            total=c.epochs,
        )
        started = time.perf_counter()
        for epoch in bar:
            out_of_time = (
                c.max_minutes is not None and time.perf_counter() - started > c.max_minutes * 60
            )
            if any_rank(out_of_time, self.dist, self.device):
                break
            stats = self.train_one_epoch(epoch, bar)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            if not self.dist.is_main:
                continue  # rank 0 validates, keeps the best model and checkpoints
            val, probabilities = self.validate()
            row = {"epoch": epoch, "lr": lr, **stats, **val}
            self.history.append(row)
            score = val["val_knn_sample_f1"]
            if score > self.best_score:
                self.best_score, self.best_epoch = score, epoch
                val_labels = self.val.labels.cpu().numpy()
                thresholds = tune_thresholds(probabilities, val_labels)
                tuned = classification_metrics(probabilities, val_labels, thresholds)
                self.best_val = {
                    **val,
                    "epoch": epoch,
                    "val_classifier_sample_f1_tuned": tuned["sample_f1"],
                }
                # the ONNX graph is exported once, for the final best model (below)
                save_model(
                    self.out / MODEL_FILENAME,
                    self.net,
                    self.card(thresholds, self.best_val),
                    with_graph=False,
                )
            self.save_state(epoch)
            self.write_logs()
            bar.set_postfix(
                loss=f"{stats['loss']:.4f}", val_f1=f"{score:.4f}", best=f"{self.best_score:.4f}"
            )
        bar.close()
        if self.dist.is_main and (self.out / MODEL_FILENAME).is_file():
            start = time.perf_counter()
            add_graph(self.out / MODEL_FILENAME)  # exported and checked against torch
            self.timings["graph_export_seconds"] = time.perf_counter() - start
        if not self.dist.is_main:
            shutdown(self.dist)
            return TrainResult(
                self.out / MODEL_FILENAME,
                self.best_epoch,
                self.best_val,
                self.history,
                [],
                self.scene_counts,
            )
        summary = {
            "config": asdict(c),
            "device": str(self.device),
            "processes": self.dist.world_size,
            "weights": self.weights_id,
            "best_epoch": self.best_epoch,
            "best_val": self.best_val,
            "timings": self.timings,
            "broken_files": [asdict(b) for b in self.broken],
            "scenes": self.scene_counts,
            "epochs_run": len(self.history),
        }
        _atomic_write_text(self.out / SUMMARY_FILENAME, json.dumps(summary, indent=2))
        shutdown(self.dist)
        return TrainResult(
            self.out / MODEL_FILENAME,
            self.best_epoch,
            self.best_val,
            self.history,
            self.broken,
            self.scene_counts,
        )


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and validation F1 per epoch, as a PNG beside the checkpoint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is a convenience; training goes on without it
        return
    epochs = [row["epoch"] for row in history]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("loss", "sndl", "bce", "distill"):
        values = [row.get(key, 0.0) for row in history]
        if any(values):
            left.plot(epochs, values, label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("training loss")
    left.legend()
    for key, name in (
        ("val_knn_sample_f1", "k-NN sample-F1"),
        ("val_map", "mAP"),
        ("val_classifier_sample_f1", "classifier sample-F1"),
    ):
        right.plot(epochs, [row[key] for row in history], label=name)
    right.set_xlabel("epoch")
    right.set_ylabel("validation")
    right.legend()
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def fit(
    config: TrainConfig, resume: bool = True, on_ready: Callable[[Trainer], None] | None = None
) -> TrainResult:
    """Train a GRN model as configured; resumes from `out/last_state.pt` when present."""
    trainer = Trainer(config)
    if on_ready is not None:
        on_ready(trainer)
    return trainer.fit(resume=resume)
