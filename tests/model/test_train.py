"""Training on real UCM scenes (a 126-scene subset), with the tiny backbone for speed and
with frozen EfficientNet-Lite0 features for the head mode."""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import grn, tiny_training
from safetensors.torch import load_file

from model.archive import load_archive
from model.card import load_model
from model.faults import FAULT_ENV
from model.features import file_digest
from model.metrics import knn_label_scores, sample_f1
from model.train import Trainer, fit
from model.train_config import MODE_DEFAULTS, TrainConfig, config_for_mode
from model.train_data import MissingLabelsError

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
    assert all(row["distill"] > 0 for row in result.history)  # head mode distils by default
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


def test_head_mode_trains_on_a_joined_backbone_and_serves_it(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """Two backbones side by side: the head sees both features, the saved model carries
    both, and the CPU engine exported at the end of training gives torch's outputs."""
    from model.imageio import read_image
    from model.inference import predict

    config = config_for_mode(
        "head", str(ucm_root), str(tmp_path / "run"), labels_csv=str(ucm_subset),
        backbone="tiny+efficientnet_lite0", pretrained=False, input_size=64, epochs=2,
        batch_size=32, feature_views=1, cache_dir=str(tmp_path / "cache"), progress=False,
    )  # fmt: skip
    result = fit(config)
    net, card = load_model(result.model_path)
    assert card.backbone == "tiny+efficientnet_lite0"
    assert net.head.hidden[1].in_features == 64 + 1280
    assert net.engine is not None and net.engine.name == "onnxruntime"
    archive = load_archive(ucm_root, ucm_subset)
    images = [read_image(archive.scenes[i].path) for i in archive.indices("test")[:3]]
    on_engine = predict(net, card, images, torch.device("cpu"))
    torch_net, _ = load_model(result.model_path, engine="torch")
    on_torch = predict(torch_net, card, images, torch.device("cpu"))
    assert np.abs(on_engine.embeddings - on_torch.embeddings).max() <= 1e-4


def _neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's k nearest neighbours (cosine, self excluded) that `a` and
    `b` have in common."""

    def neighbours(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        return np.argsort(-sims, axis=1)[:, :k]

    na, nb = neighbours(a), neighbours(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)]))


def test_distillation_keeps_the_backbones_neighbourhoods(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    overlaps = {}
    for weight in (0.0, 1.0):
        trainer = Trainer(
            config_for_mode(
                "head",
                str(ucm_root),
                str(tmp_path / f"run-{weight}"),
                labels_csv=str(ucm_subset),
                epochs=15,
                batch_size=32,
                feature_views=1,
                distill_weight=weight,
                cache_dir=str(tmp_path / "cache"),
                progress=False,
            )
        )
        result = trainer.fit()
        assert all((row["distill"] > 0) == (weight > 0) for row in result.history)
        embeddings, _ = trainer.embed_split(trainer.train)
        overlaps[weight] = _neighbour_overlap(
            embeddings.numpy(), trainer.train.inputs[0].float().numpy()
        )
    # the embedding trained to keep them shares more of the backbone's 10 nearest neighbours
    assert overlaps[1.0] > overlaps[0.0] + 0.1, overlaps


def test_unlabelled_train_scenes_join_the_distillation_term(
    ucm_root: Path, ucm_partly_labelled: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """21 of the 84 train scenes are unlabelled: distilling, head mode feeds them to the
    distillation term (and nothing else); without them the run differs."""
    heads = {}
    for use in (True, False):
        config = config_for_mode(
            "head", str(ucm_root), str(tmp_path / f"run-{use}"),
            labels_csv=str(ucm_partly_labelled), epochs=3, batch_size=32, feature_views=2,
            use_unlabelled=use, cache_dir=str(tmp_path / "cache"), progress=False,
        )  # fmt: skip
        with caplog.at_level(logging.INFO, logger="grn.train"):
            trainer = Trainer(config)
            result = trainer.fit()
        if use:
            assert trainer.unlabelled is not None
            assert len(trainer.unlabelled.positions) == 21
            assert trainer.unlabelled.inputs.shape[:2] == (2, 21)  # both views, like train
            assert result.scenes["train_unlabelled_distilled"] == 21
            assert "(21 unlabelled in the distillation term only)" in caplog.text
            archive = load_archive(ucm_root, ucm_partly_labelled)
            assert not any(archive.scenes[i].labelled for i in trainer.unlabelled.positions)
            assert trainer.bank is not None and len(trainer.bank.memory) == 63  # labelled only
        else:
            assert trainer.unlabelled is None and "train_unlabelled_distilled" not in result.scenes
        heads[use] = trainer.net.head.state_dict()
    assert any(not torch.equal(heads[True][k], heads[False][k]) for k in heads[True])


def test_full_mode_distils_from_a_frozen_copy_of_the_starting_backbone(
    tiny_config, tmp_path: Path
) -> None:
    trainer = Trainer(tiny_config(tmp_path / "run", epochs=2, distill_weight=0.5))
    assert trainer.teacher is not None
    start = {k: v.clone() for k, v in trainer.net.backbone.state_dict().items()}
    result = trainer.fit()
    assert all(row["distill"] > 0 for row in result.history)
    teacher = trainer.teacher.state_dict()
    assert all(torch.equal(teacher[k], v) for k, v in start.items())  # never trained
    trained = trainer.net.backbone.state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in start.items())
    assert Trainer(tiny_config(tmp_path / "plain")).teacher is None  # full mode's default


def _train(
    ucm_root: Path, labels: Path, out: Path, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    """`grn train` of the tiny network for 4 epochs with a stepped learning rate, on one
    thread; `fault`: where it kills itself (`model.faults`)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    if fault is not None:
        env[FAULT_ENV] = fault
    schedule = ["--lr", "0.05", "--lr-step", "2", "--dihedral"]
    return grn(*tiny_training(ucm_root, labels, out, 4, *schedule), env=env)


def test_a_run_killed_mid_epoch_resumes_exactly(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    steps_per_epoch = 3  # 84 train scenes, batches of 32
    fault = f"train-step:{2 * steps_per_epoch + 1}"
    killed = _train(ucm_root, ucm_subset, tmp_path / "killed", fault)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = torch.load(tmp_path / "killed" / "last_state.pt", weights_only=True)
    assert state["epoch"] == 1  # epochs 0 and 1 were saved; it died inside epoch 2
    resumed = _train(ucm_root, ucm_subset, tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr
    straight = _train(ucm_root, ucm_subset, tmp_path / "straight")
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


def test_only_labelled_scenes_train_and_validate(
    tiny_config,
    ucm_root: Path,
    ucm_partly_labelled: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """21 of the 84 train scenes and 7 of the 21 val scenes have empty label cells."""
    used: list[tuple[list[int], list[int]]] = []

    def record(trainer: Trainer) -> None:
        used.append((trainer.train.positions, trainer.val.positions))

    labels = tmp_path / "labels.csv"
    shutil.copy(ucm_partly_labelled, labels)
    config = tiny_config(tmp_path / "run", labels_csv=str(labels), epochs=2)
    with caplog.at_level(logging.INFO, logger="grn.train"):
        result = fit(config, on_ready=record)
    counts = {"train_labelled": 63, "train_unlabelled": 21, "val_labelled": 14, "val_unlabelled": 7}
    assert result.scenes == counts
    assert (
        "training on 63 labelled train scenes (21 unlabelled left out), validating on 14 "
        "labelled val scenes (7 unlabelled left out)"
    ) in caplog.text
    archive = load_archive(ucm_root, labels)
    assert used == [
        (archive.indices("train", labelled_only=True), archive.indices("val", labelled_only=True))
    ]
    assert all(archive.scenes[i].labelled for i in used[0][0] + used[0][1])
    # the memory bank has one row per training scene
    state = torch.load(tmp_path / "run" / "last_state.pt", weights_only=True)
    assert state["bank"].shape[0] == 63 and len(result.history) == 2
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["scenes"] == counts
    assert (summary["timings"]["train_input_images"], summary["timings"]["val_input_images"]) == (
        63,
        14,
    )
    # labelling one more train scene changes the bank's rows: resuming is refused
    with labels.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    first = next(row for row in rows if row[2] == "train" and not row[3])
    first[3:] = ["0"] * (len(first) - 4) + ["1"]
    with labels.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with pytest.raises(ValueError, match=r"other training scenes.*64 labelled train scenes now"):
        fit(tiny_config(tmp_path / "run", labels_csv=str(labels), epochs=2))


def _blank_split(source: Path, target: Path, split: str) -> Path:
    """A copy of a labels file in which no scene of `split` is labelled."""
    with source.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    for row in rows:
        if row[2] == split:
            row[3:] = [""] * (len(row) - 3)
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    return target


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no label columns", "has no label columns"),
        ("train", "none of the 84 train scenes is labelled"),
        ("val", "none of the 21 val scenes is labelled"),
    ],
)
def test_training_without_labelled_scenes_stops_before_any_work(
    tiny_config, ucm_subset: Path, ucm_unlabelled: Path, tmp_path: Path, case: str, message: str
) -> None:
    labels = (
        ucm_unlabelled
        if case == "no label columns"
        else _blank_split(ucm_subset, tmp_path / "labels.csv", case)
    )
    with pytest.raises(MissingLabelsError) as caught:
        Trainer(tiny_config(tmp_path / "run", labels_csv=str(labels)))
    text = str(caught.value)
    assert message in text and "labelled scenes in the train split and in the val split" in text
    assert "`grn import" in text and "`grn reindex --model MODEL" in text
    assert not (tmp_path / "run").exists()  # nothing was written, no backbone built


def test_mode_defaults_are_the_papers_recipe_for_full() -> None:
    config = config_for_mode("full", "a", "b")
    assert (config.epochs, config.lr, config.lr_step, config.lr_gamma) == (130, 0.1, 30, 0.5)
    assert (config.batch_size, config.input_size, config.temperature) == (256, 256, 0.05)
    assert (config.momentum, config.nesterov, config.weight_decay) == (0.9, True, 1e-4)
    assert (config.jitter, config.grayscale, config.hflip) == (0.4, 0.2, True)
    assert MODE_DEFAULTS["head"]["feature_views"] == 8
    with pytest.raises(ValueError, match="mode must be"):
        config_for_mode("partial", "a", "b")
