"""Training the GRN: `Trainer` holds one run, with `train_one_epoch`, `validate` and `fit`.

The run's settings are `model.train_config`'s, what it reads `model.train_data`'s, what its
mode (`head` or `full`) changes `model.train_modes`'s and what it writes `model.train_state`'s.
Every epoch is validated by k-NN sample-F1 on the val split (train split as the archive) and
the best epoch is kept as `model.safetensors`, with per-label thresholds tuned on val. The
full training state is written atomically after every epoch (`last_state.pt`), and each epoch
draws its randomness from generators seeded by (seed, epoch), so a run killed at any point and
resumed gives the same weights as one that never stopped.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model.archive import BrokenFile, load_archive
from model.backbones import backbone_spec, create_backbone
from model.card import MODEL_FILENAME, add_graph, save_model
from model.distributed import (
    RowGather,
    all_gather_cat,
    all_reduce_sum,
    any_rank,
    init_distributed,
    shutdown,
    wrap_module,
)
from model.faults import kill_point
from model.features import FeatureKey
from model.inference import configure_cpu_threads, resolve_device
from model.losses import MemoryBank, momentum_at
from model.metrics import (
    classification_metrics,
    knn_label_scores,
    retrieval_metrics,
    sample_f1,
    tune_thresholds,
)
from model.network import GRNHead, GRNNet
from model.train_config import TrainConfig
from model.train_data import EpochOrder, SplitData, load_split, log_scene_counts, require_labels
from model.train_modes import TrainMode
from model.train_state import SUMMARY_FILENAME, Checkpointing, atomic_write_text

log = logging.getLogger("grn.train")


@dataclass
class TrainResult:
    model_path: Path
    best_epoch: int
    best_val: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    broken: list[BrokenFile] = field(default_factory=list)
    scenes: dict[str, int] = field(default_factory=dict)
    """Labelled scenes used and unlabelled ones left out, per split (`labelled_counts`)."""


class Trainer(Checkpointing):
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
            log_scene_counts(self.scene_counts, config.distill_weight > 0 and config.use_unlabelled)
        self.spec = backbone_spec(config.backbone)
        self.mode = TrainMode(config, self.spec, self.device)
        backbone, self.weights_id = create_backbone(config.backbone, pretrained=config.pretrained)
        head = GRNHead(
            self.spec.num_features,
            config.embedding_dim,
            len(self.archive.label_names),
            config.hidden_dim,
            config.dropout,
        )
        self.net, self.trainable = self.mode.trained_part(GRNNet(backbone, head).to(self.device))
        # Under torchrun the trained module is wrapped in DDP (gradients averaged over the
        # ranks); the memory bank is not part of it: every rank keeps the whole bank and
        # applies the same update from the gathered batch (see train_one_epoch).
        self.train_module = wrap_module(self.trainable, self.dist, self.device)
        self.criterion = config.criterion()
        # under torchrun the distillation term's neighbourhoods span every process's rows
        self.gather = RowGather(self.dist) if self.dist.enabled else None
        self.teacher = self.mode.teacher(self.net, self.criterion.distills)
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
        self.bank = None
        self.start_epoch = 0
        self.global_step = 0
        self.history = []
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_val = {}

    # -- data ---------------------------------------------------------------------------
    @property
    def feature_key(self) -> FeatureKey:
        """What the cached backbone features of this run's backbone and input are keyed by."""
        c = self.config
        return FeatureKey(c.backbone, self.weights_id, c.input_size)

    def _load_split(self, split: str, unlabelled: bool = False) -> SplitData:
        """The labelled scenes of a split, or with `unlabelled` its unlabelled ones."""
        return load_split(
            self.config,
            self.archive,
            split,
            backbone=self.net.backbone,
            key=self.feature_key,
            device=self.device,
            broken=self.broken,
            timings=self.timings,
            unlabelled=unlabelled,
        )

    def _make_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = self.trainable.parameters()
        if c.optimizer == "adamw":
            return torch.optim.AdamW(params, lr=c.lr, weight_decay=c.weight_decay)
        return torch.optim.SGD(
            params, lr=c.lr, momentum=c.momentum, nesterov=c.nesterov, weight_decay=c.weight_decay
        )

    def embed_split(self, data: SplitData) -> tuple[torch.Tensor, torch.Tensor]:
        """Un-augmented embeddings and label probabilities of a split (eval mode)."""
        return self.mode.embed(self.net, data)

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
        unlabelled = None if self.unlabelled is None else len(self.unlabelled.positions)
        draws = EpochOrder.draw(
            generator,
            len(self.train.positions),
            self.mode.view_count(self.train),
            c.batch_size,
            unlabelled,
        )
        self.mode.set_training(self.net)
        totals = {"loss": 0.0, "sndl": 0.0, "bce": 0.0, "distill": 0.0}
        seen = 0
        start = time.perf_counter()
        batches = draws.batches(
            c.batch_size,
            whole_only=c.drop_last or self.dist.enabled,
            rank=self.dist.rank,
            world=self.dist.world_size,
        )
        for rows_cpu, views, extra_cpu in batches:
            kill_point(f"train-step:{self.global_step}")
            rows = rows_cpu.to(self.device)
            extra = None
            if extra_cpu is not None and self.unlabelled is not None:
                extra_rows, extra_views = (part.to(self.device) for part in extra_cpu)
                extra = (self.unlabelled, extra_rows, extra_views)
            output, teacher = self.mode.forward(
                self.train_module,
                self.teacher,
                self.criterion.distills,
                self.train,
                rows,
                views.to(self.device),
                generator,
                extra,
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
            losses = torch.tensor([*parts.scaled(size), float(size)], dtype=torch.float64)
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
        if self.dist.is_main:
            if (self.out / MODEL_FILENAME).is_file():
                start = time.perf_counter()
                add_graph(self.out / MODEL_FILENAME)  # exported and checked against torch
                self.timings["graph_export_seconds"] = time.perf_counter() - start
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
            atomic_write_text(self.out / SUMMARY_FILENAME, json.dumps(summary, indent=2))
        shutdown(self.dist)
        return TrainResult(
            self.out / MODEL_FILENAME,
            self.best_epoch,
            self.best_val,
            self.history,
            self.broken if self.dist.is_main else [],
            self.scene_counts,
        )


def fit(
    config: TrainConfig, resume: bool = True, on_ready: Callable[[Trainer], None] | None = None
) -> TrainResult:
    """Train a GRN model as configured; resumes from `out/last_state.pt` when present."""
    trainer = Trainer(config)
    if on_ready is not None:
        on_ready(trainer)
    return trainer.fit(resume=resume)
