"""The `grn` command line, run as a user runs it: in a subprocess, on real UCM scenes."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from commands import grn, tiny_training

from model.archive import load_archive


@pytest.fixture(scope="module")
def trained(ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "run"
    result = grn(*tiny_training(ucm_root, ucm_subset, out, epochs=3))
    assert result.returncode == 0, result.stderr
    assert "best epoch" in result.stdout
    assert "training on 84 labelled train scenes (0 unlabelled left out)" in result.stderr
    return out


def model_and_archive(model: Path, archive: Path, labels: Path | None = None) -> list[str]:
    """The arguments that name a command's model, archive and (when given) labels."""
    named = ["--model", str(model), "--archive", str(archive)]
    return named if labels is None else [*named, "--labels", str(labels)]


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "grn"
    assert script.is_file() or shutil.which("grn"), "pip install -e . installs the grn command"


def test_evaluate_writes_the_report(trained: Path, ucm_root: Path, ucm_subset: Path) -> None:
    report = trained.parent / "eval"
    result = grn(
        "evaluate",
        *model_and_archive(trained, ucm_root, ucm_subset),
        "--out",
        str(report),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((report / "metrics.json").read_text())
    for key in (
        "map",
        "knn_sample_f1",
        "classifier_sample_f1",
        "classifier_micro_f1",
        "classifier_macro_f1",
        "hamming_loss",
    ):
        assert 0.0 <= metrics[key] <= 1.0, key
    for family in ("p_at_k", "map_at_k", "ndcg_at_k", "acg_at_k"):
        assert sorted(metrics[family], key=int) == ["5", "10", "20", "50", "100"]
    assert metrics["archive_size"] == 84 and metrics["query_count"] == 21
    # the archive it trained on: all seen; a random-weights model has no backbone to beat
    assert metrics["content"]["seen"]["queries"] == 21
    assert metrics["content"]["unseen"]["queries"] == 0
    assert "random weights" in metrics["backbone_unavailable"]
    assert "| mAP (full ranking) |" in (report / "report.md").read_text()
    assert "No backbone figures: the model was trained from random weights" in result.stdout
    assert (report / "examples.png").stat().st_size > 10_000


def test_embed_writes_unit_vectors_and_probabilities(
    trained: Path, ucm_root: Path, ucm_subset: Path
) -> None:
    out = trained.parent / "test.npz"
    result = grn(
        "embed",
        *model_and_archive(trained, ucm_root, ucm_subset),
        "--split",
        "test",
        "--out",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    data = np.load(out)
    archive = load_archive(ucm_root, ucm_subset)
    assert data["names"].tolist() == [archive.scenes[i].name for i in archive.indices("test")]
    assert data["embeddings"].shape == (21, 128) and data["embeddings"].dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(data["embeddings"], axis=1), 1.0, rtol=1e-5)
    assert data["probabilities"].shape == (21, 17)
    assert ((data["probabilities"] >= 0) & (data["probabilities"] <= 1)).all()


def test_broken_files_fail_clearly_or_are_skipped(
    trained: Path, ucm_root: Path, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    (archive / "images").mkdir(parents=True)
    names = ["beach00", "forest00", "harbor00"]
    for name in names:
        scene = name.rstrip("0123456789")
        shutil.copy(ucm_root / "images" / scene / f"{name}.jpg", archive / "images" / f"{name}.jpg")
    (archive / "images" / "forest00.jpg").write_bytes(b"\xff\xd8\xff broken jpeg")
    header = (ucm_root / "labels.csv").read_text().splitlines()[0]
    rows = [f"{n},{n.rstrip('0123456789')},test," + ",".join(["0"] * 16 + ["1"]) for n in names]
    (archive / "labels.csv").write_text("\n".join([header, *rows]) + "\n")

    embed = ["embed", *model_and_archive(trained, archive), "--out", str(tmp_path / "e.npz")]
    failed = grn(*embed, "--quiet")
    assert failed.returncode == 1
    assert "forest00.jpg" in failed.stderr and "--skip-broken" in failed.stderr
    assert not (tmp_path / "e.npz").exists()

    skipped = grn(*embed, "--skip-broken", "--quiet")
    assert skipped.returncode == 0, skipped.stderr
    assert np.load(tmp_path / "e.npz")["names"].tolist() == ["beach00", "harbor00"]
    report = json.loads((tmp_path / "e.broken.json").read_text())
    assert [entry["name"] for entry in report] == ["forest00"]


def test_train_on_an_archive_without_labels_says_what_it_needs(
    ucm_root: Path, ucm_unlabelled: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = grn(
        "train", "--archive", str(ucm_root), "--labels", str(ucm_unlabelled), "--out", str(out),
        "--backbone", "tiny", "--no-pretrained", "--quiet",
    )  # fmt: skip
    assert result.returncode == 1
    line = result.stderr.strip()
    assert line.startswith(f"error: {ucm_unlabelled} has no label columns: training needs")
    assert "labelled scenes in the train split and in the val split" in line
    labels = f"--labels {ucm_unlabelled}"
    assert (
        f"`grn import {ucm_root} {labels}` then "
        f"`grn reindex --model MODEL --archive {ucm_root} {labels}`"
    ) in line
    assert "\n" not in line and not out.exists()


def test_user_errors_are_one_clear_line(tmp_path: Path) -> None:
    result = grn("train", "--archive", str(tmp_path / "missing"), "--out", str(tmp_path / "o"))
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: archive folder {tmp_path / 'missing'} does not exist"
    bad_model = grn("embed", "--model", str(tmp_path), "--archive", str(tmp_path), "--out", "x.npz")
    assert bad_model.returncode == 1 and "no model file" in bad_model.stderr
    bad_backbone = grn(
        "train", "--archive", str(tmp_path), "--out", str(tmp_path / "o"), "--backbone", "vgg"
    )
    assert bad_backbone.returncode == 1 and "unknown backbone 'vgg'" in bad_backbone.stderr
