"""Training on real UCM scenes (a 126-scene subset), with the tiny backbone for speed and
with frozen EfficientNet-Lite0 features for the head mode."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from model.archive import load_archive
from model.card import load_model
from model.faults import FAULT_ENV
from model.features import file_digest
from model.metrics import knn_label_scores, sample_f1
from model.train import MODE_DEFAULTS, TrainConfig, config_for_mode, fit

REPO = Path(__file__).resolve().parents[2]


def chance_knn_f1(archive_root: Path, labels: Path, draws: int = 5) -> float:
    """k-NN sample-F1 on val with random unit embeddings (mean of a few draws): what no
    learning gives."""
    archive = load_archive(archive_root, labels)
    train, val = archive.indices("train"), archive.indices("val")
    rng = np.random.default_rng(0)
    values = []
    for _ in range(draws):
        emb = rng.normal(size=(len(archive), 128))
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        scores = knn_label_scores(emb[val], emb[train], archive.label_matrix(train))
        values.append(sample_f1(scores >= 0.5, archive.label_matrix(val)))
    return float(np.mean(values))


def test_full_mode_learns_on_real_scenes(ucm_root: Path, ucm_subset: Path, tmp_path: Path) -> None:
    config = config_for_mode(
        "full",
        str(ucm_root),
        str(tmp_path / "run"),
        labels_csv=str(ucm_subset),
        backbone="tiny",
        pretrained=False,
        epochs=20,
        batch_size=32,
        lr=0.1,
        lr_step=10,
        input_size=64,
        dihedral=True,
        progress=False,
    )
    result = fit(config)
    history = result.history
    assert len(history) == 20
    assert history[-1]["loss"] < history[0]["loss"] * 0.8
    assert result.best_val["val_knn_sample_f1"] > chance_knn_f1(ucm_root, ucm_subset) + 0.1
    run = tmp_path / "run"
    for name in (
        "model.safetensors",
        "last_state.pt",
        "metrics.jsonl",
        "curve.png",
        "train_summary.json",
    ):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == list(range(20))
    _, card = load_model(run)
    assert card.label_names == load_archive(ucm_root).label_names
    assert len(card.thresholds) == 17 and card.training["mode"] == "full"
    assert card.metrics["epoch"] == result.best_epoch


def test_head_mode_on_imagenet_features_beats_chance(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    def head_config(out: str) -> TrainConfig:
        return config_for_mode(
            "head",
            str(ucm_root),
            str(tmp_path / out),
            labels_csv=str(ucm_subset),
            epochs=15,
            batch_size=32,
            feature_views=1,
            cache_dir=str(tmp_path / "cache"),
            progress=False,
        )

    result = fit(head_config("run"))
    assert result.best_val["val_knn_sample_f1"] > chance_knn_f1(ucm_root, ucm_subset) + 0.2
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    # one cached feature file per distinct image content (UCM has duplicate files)
    archive = load_archive(ucm_root, ucm_subset)
    used = archive.indices("train") + archive.indices("val")
    digests = {file_digest(archive.scenes[i].path) for i in used}
    cache_files = {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.npy")}
    assert {p.stem for p in cache_files} == digests
    # a second run reads them back without rewriting any, and trains the same way
    result2 = fit(head_config("run2"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*.npy")} == cache_files
    timing = ("train_seconds", "train_images_per_s")
    assert [{k: v for k, v in row.items() if k not in timing} for row in result2.history] == [
        {k: v for k, v in row.items() if k not in timing} for row in result.history
    ]


def _train_command(ucm_root: Path, labels: Path, out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "service.cli",
        "train",
        "--archive",
        str(ucm_root),
        "--labels",
        str(labels),
        "--out",
        str(out),
        "--mode",
        "full",
        "--backbone",
        "tiny",
        "--no-pretrained",
        "--epochs",
        "4",
        "--batch-size",
        "32",
        "--input-size",
        "64",
        "--lr",
        "0.05",
        "--lr-step",
        "2",
        "--dihedral",
        "--quiet",
    ]


def test_a_run_killed_mid_epoch_resumes_exactly(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    steps_per_epoch = 3  # 84 train scenes, batches of 32
    killed = subprocess.run(
        _train_command(ucm_root, ucm_subset, tmp_path / "killed"),
        cwd=REPO,
        env={**env, FAULT_ENV: f"train-step:{2 * steps_per_epoch + 1}"},
        capture_output=True,
        text=True,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = torch.load(tmp_path / "killed" / "last_state.pt", weights_only=True)
    assert state["epoch"] == 1  # epochs 0 and 1 were saved; it died inside epoch 2
    resumed = subprocess.run(
        _train_command(ucm_root, ucm_subset, tmp_path / "killed"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    straight = subprocess.run(
        _train_command(ucm_root, ucm_subset, tmp_path / "straight"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert straight.returncode == 0, straight.stderr

    a = load_file(str(tmp_path / "killed" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    last_a = torch.load(tmp_path / "killed" / "last_state.pt", weights_only=True)
    last_b = torch.load(tmp_path / "straight" / "last_state.pt", weights_only=True)
    assert torch.equal(last_a["bank"], last_b["bank"])
    for key, tensor in last_a["net"].items():
        assert torch.equal(tensor, last_b["net"][key]), key

    def losses(run: str) -> list[float]:
        lines = (tmp_path / run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(line)["loss"] for line in lines]

    assert losses("killed") == losses("straight") and len(losses("straight")) == 4


def test_resume_refuses_other_settings(tiny_config, tmp_path: Path) -> None:
    fit(tiny_config(tmp_path))
    with pytest.raises(ValueError, match=r"other settings.*lr"):
        fit(tiny_config(tmp_path, lr=0.01))


def test_mode_defaults_are_the_papers_recipe_for_full() -> None:
    config = config_for_mode("full", "a", "b")
    assert (config.epochs, config.lr, config.lr_step, config.lr_gamma) == (130, 0.1, 30, 0.5)
    assert (config.batch_size, config.input_size, config.temperature) == (256, 256, 0.05)
    assert (config.momentum, config.nesterov, config.weight_decay) == (0.9, True, 1e-4)
    assert (config.jitter, config.grayscale, config.hflip) == (0.4, 0.2, True)
    assert MODE_DEFAULTS["head"]["feature_views"] == 8
    with pytest.raises(ValueError, match="mode must be"):
        config_for_mode("partial", "a", "b")
