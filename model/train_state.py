"""What a training run writes into its folder, and reads back to resume.

- `model.safetensors`: the best epoch's network with its model card (`card`); its ONNX
  graph is added once, at the end of the run.
- `last_state.pt`: the whole training state, written atomically after every epoch; a run
  resumes from it only with the same settings and the same training scenes (`load_state`).
- `metrics.jsonl` and `curve.png`: one row per epoch, and their plot (`write_logs`).
- `train_summary.json`: the settings, timings, broken files and scene counts.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.archive import Archive
from model.backbones import BackboneSpec
from model.card import ModelCard
from model.losses import MemoryBank
from model.network import GRNNet
from model.train_config import TrainConfig
from model.train_data import SplitData

STATE_FILENAME = "last_state.pt"
METRICS_FILENAME = "metrics.jsonl"
CURVE_FILENAME = "curve.png"
SUMMARY_FILENAME = "train_summary.json"


def atomic_write_text(path: Path, text: str) -> None:
    """Replace `path` with `text` in one step: a reader finds the old file or the new one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class Checkpointing:
    """The checkpoint side of `model.train.Trainer`, which holds the attributes below: the
    training state saved after every epoch and restored to resume, the best epoch's model
    card, and the epochs' log."""

    config: TrainConfig
    archive: Archive
    out: Path
    device: torch.device
    spec: BackboneSpec
    weights_id: str
    net: GRNNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    train: SplitData
    bank: MemoryBank | None
    history: list[dict[str, Any]]
    best_score: float
    best_epoch: int
    best_val: dict[str, Any]
    start_epoch: int
    global_step: int

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
        atomic_write_text(self.out / METRICS_FILENAME, lines)
        plot_curves(self.history, self.out / CURVE_FILENAME)


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
