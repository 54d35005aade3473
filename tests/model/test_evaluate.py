"""`grn evaluate` on content the model saw and content it never saw, against the frozen
backbone, on real UCM scenes (the 126-scene subset, head mode on EfficientNet-Lite0)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from model.archive import load_archive
from model.evaluate import evaluate
from model.train import fit
from model.train_config import config_for_mode

HELD_OUT = ("airplane", "beach", "forest")


def rewrite(source: Path, target: Path, *, drop_folders=(), drop_label=None, unlabel=()) -> Path:
    """A copy of labels.csv without the rows of some folders, without one label column, or
    with the label cells of some scenes (by name) emptied."""
    with source.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    keep = [i for i, name in enumerate(header) if name != drop_label]
    out = [[header[i] for i in keep]]
    for row in rows:
        if row[1] in drop_folders:
            continue
        if row[0] in unlabel:
            row = [*row[:3], *[""] * (len(row) - 3)]
        out.append([row[i] for i in keep])
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w", newline="") as handle:
        csv.writer(handle).writerows(out)
    return target


@pytest.fixture(scope="module")
def held_out_model(
    ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path]:
    """A head-mode model trained without the HELD_OUT folders, and the $GRN_CACHE_DIR whose
    feature cache it filled (the one `evaluate` reads the backbone's features from)."""
    root = tmp_path_factory.mktemp("evaluate")
    labels = rewrite(ucm_subset, root / "without.csv", drop_folders=HELD_OUT)
    config = config_for_mode(
        "head", str(ucm_root), str(root / "run"), labels_csv=str(labels), epochs=8,
        batch_size=32, feature_views=1, cache_dir=str(root / "features"), progress=False,
    )  # fmt: skip
    return fit(config).model_path, root


@pytest.fixture
def cache_env(held_out_model: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GRN_CACHE_DIR", str(held_out_model[1]))


def test_left_out_folders_are_unseen_content_scored_against_the_backbone(
    held_out_model: tuple[Path, Path], ucm_root: Path, ucm_subset: Path, tmp_path: Path, cache_env
) -> None:
    metrics = evaluate(
        held_out_model[0], ucm_root, tmp_path, labels_csv=ucm_subset, device="cpu",
        progress=False, examples=False,
    )  # fmt: skip
    archive = load_archive(ucm_root, ucm_subset)
    test = archive.indices("test")
    unseen = sum(archive.scenes[i].folder in HELD_OUT for i in test)
    assert unseen == len(HELD_OUT)
    content = metrics["content"]
    assert content["seen"]["queries"] == len(test) - unseen
    assert content["unseen"]["queries"] == unseen
    assert metrics["labels_match_model"] and "classifier_sample_f1" in metrics
    for group in content.values():
        for who in ("model", "reranked", "backbone"):
            assert set(group[who]) == {"p_at_10", "map", "ndcg_at_10", "knn_sample_f1"}
            assert all(0.0 <= v <= 1.0 for v in group[who].values())
    # the two embeddings are scored separately: they do not rank the archive the same way
    assert content["seen"]["model"] != content["seen"]["backbone"]
    report = (tmp_path / "report.md").read_text()
    assert f"| unseen | {unseen} | backbone |" in report
    assert f"| unseen | {unseen} | reranked |" in report  # as a search re-ranks it
    assert f"| seen | {len(test) - unseen} | model |" in report


def test_an_archive_with_other_labels_is_all_unseen_and_has_no_classifier_figures(
    held_out_model: tuple[Path, Path], ucm_root: Path, ucm_subset: Path, tmp_path: Path, cache_env
) -> None:
    other = rewrite(ucm_subset, tmp_path / "other.csv", drop_label="water")
    metrics = evaluate(
        held_out_model[0], ucm_root, tmp_path / "out", labels_csv=other, device="cpu",
        progress=False, examples=False,
    )  # fmt: skip
    assert not metrics["labels_match_model"]
    assert "classifier_sample_f1" not in metrics and metrics["knn_sample_f1"] >= 0
    assert metrics["content"]["seen"]["queries"] == 0
    assert metrics["content"]["unseen"]["queries"] == metrics["query_count"] == 21
    assert "no classifier figures" in (tmp_path / "out" / "report.md").read_text()


def test_unlabelled_scenes_are_left_out_and_counted(
    held_out_model: tuple[Path, Path], ucm_root: Path, ucm_subset: Path, tmp_path: Path, cache_env
) -> None:
    archive = load_archive(ucm_root, ucm_subset)
    names = {archive.scenes[i].name for i in archive.indices("test")[:5]}
    names |= {archive.scenes[i].name for i in archive.indices("train")[:7]}
    partly = rewrite(ucm_subset, tmp_path / "partly.csv", unlabel=names)
    metrics = evaluate(
        held_out_model[0], ucm_root, tmp_path / "out", labels_csv=partly, device="cpu",
        progress=False, examples=False, backbone=False,
    )  # fmt: skip
    assert (metrics["query_count"], metrics["archive_size"]) == (16, 77)
    assert metrics["unlabelled_left_out"] == 12
    assert "backbone" not in metrics["content"]["seen"]
    assert "not asked for" in metrics["backbone_unavailable"]
    assert np.isfinite(metrics["map"])


def test_seen_content_does_not_depend_on_the_order_of_the_label_columns(
    held_out_model: tuple[Path, Path], ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """The catalog lists an archive's labels sorted; an index built from it must still know
    the folders the model trained on (re-ranking decides by it, model/rerank.py)."""
    from model.card import read_card
    from model.rerank import seen_content

    card = read_card(held_out_model[0])
    with ucm_subset.open(newline="") as handle:
        header, *rows = list(csv.reader(handle))
    order = [0, 1, 2, *reversed(range(3, len(header)))]
    shuffled = tmp_path / "reversed.csv"
    with shuffled.open("w", newline="") as handle:
        csv.writer(handle).writerows([[row[i] for i in order] for row in [header, *rows]])
    plain, reordered = load_archive(ucm_root, ucm_subset), load_archive(ucm_root, shuffled)
    assert plain.label_names != reordered.label_names
    positions = list(range(len(plain)))
    seen = seen_content(card, plain, positions)
    assert seen.any() and not seen.all()  # the held-out folders are unseen
    np.testing.assert_array_equal(seen_content(card, reordered, positions), seen)
    expected = [plain.scenes[i].folder not in HELD_OUT for i in positions]
    np.testing.assert_array_equal(seen, expected)
