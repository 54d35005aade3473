"""`grn reindex` end to end on real UCM scenes with a small trained model."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from index.stores.base import IndexNotReadyError
from index.stores.faiss_build import ReindexSettings, reindex
from index.stores.faiss_versions import PROBABILITIES_FILE, IndexModelMismatchError, IndexStore
from index.vectors import search, stored_ids
from model.archive import load_archive, scene_id
from model.card import load_model
from model.embedding import embed_scenes
from model.faults import FAULT_ENV
from model.train import fit

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def models(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny models (different seeds, so different versions)."""
    out = []
    for seed in (0, 1):
        run = tmp_path_factory.mktemp(f"model{seed}")
        fit(tiny_config(run, seed=seed))
        out.append(run)
    return out


def _grn_reindex(
    model: Path, ucm_root: Path, labels: Path, root: Path, fault: str | None, *extra: str
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli",
            "reindex",
            "--model",
            str(model),
            "--archive",
            str(ucm_root),
            "--labels",
            str(labels),
            "--index-root",
            str(root),
            "--quiet",
            *extra,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )


def test_full_reindex_indexes_every_scene(models, ucm_root, ucm_subset, tmp_path) -> None:
    report = reindex(models[0], ucm_root, tmp_path, labels_csv=ucm_subset, progress=False)
    m = report.manifest
    archive = load_archive(ucm_root, ucm_subset)
    expected = {scene_id(s.name) for s in archive.scenes}
    assert m.count == 126 and m.factory == "Flat" and m.stats["recall_at_10"] == 1.0
    loaded = IndexStore(tmp_path).load(expected_model=m.model_version)
    assert set(stored_ids(loaded.index).tolist()) == expected
    assert report.embedded == 126 and report.size_bytes > 126 * 128 * 4
    # a scene's own embedding finds the scene first
    emb = loaded.index.reconstruct(scene_id(archive.scenes[5].name))
    assert search(loaded.index, emb[None], 1).ids[0, 0] == scene_id(archive.scenes[5].name)


def test_incremental_adds_and_removes(models, ucm_root, ucm_subset, tmp_path) -> None:
    rows = list(csv.reader(ucm_subset.open()))
    first = tmp_path / "first.csv"
    csv.writer(first.open("w", newline="")).writerows(rows[:101])  # 100 scenes
    base = reindex(models[0], ucm_root, tmp_path / "idx", labels_csv=first, progress=False)
    second = tmp_path / "second.csv"
    csv.writer(second.open("w", newline="")).writerows([rows[0], *rows[11:]])  # -10, +26
    report = reindex(
        models[0], ucm_root, tmp_path / "idx", labels_csv=second, incremental=True, progress=False
    )
    assert (report.added, report.removed, report.embedded) == (26, 10, 26)
    assert report.manifest.parent == base.manifest.version and report.manifest.count == 116
    assert report.manifest.stats["recall_at_10"] == 1.0
    ids = stored_ids(IndexStore(tmp_path / "idx").load().index)
    assert set(ids.tolist()) == {scene_id(r[0]) for r in rows[11:]}
    with pytest.raises(IndexModelMismatchError, match="full `grn reindex`"):
        reindex(
            models[1],
            ucm_root,
            tmp_path / "idx",
            labels_csv=second,
            incremental=True,
            progress=False,
        )


def test_each_version_keeps_the_classifiers_probabilities(
    models, ucm_root, ucm_subset, tmp_path
) -> None:
    """probabilities.npy holds the model's label probabilities of every scene in the order
    of ids.npy, after a full and after an incremental build; a damaged one is refused."""
    rows = list(csv.reader(ucm_subset.open()))
    first = tmp_path / "first.csv"
    csv.writer(first.open("w", newline="")).writerows(rows[:101])
    reindex(models[0], ucm_root, tmp_path / "idx", labels_csv=first, progress=False)
    second = tmp_path / "second.csv"
    csv.writer(second.open("w", newline="")).writerows([rows[0], *rows[11:]])
    report = reindex(
        models[0], ucm_root, tmp_path / "idx", labels_csv=second, incremental=True, progress=False
    )
    store = IndexStore(tmp_path / "idx")
    loaded = store.load()
    kept = loaded.probabilities
    assert kept is not None and report.manifest.probabilities_checksum is not None
    np.testing.assert_array_equal(kept.ids, np.sort(stored_ids(loaded.index)))
    net, card = load_model(models[0])
    archive = load_archive(ucm_root, second)
    # one scene kept from the first build, one added by the incremental one
    for name in (rows[20][0], rows[-1][0]):
        position = archive.index_of(name)
        own = embed_scenes(
            net, card, archive, [position], device=torch.device("cpu"), progress=False
        )
        got = kept.vectors[kept.rows(np.asarray([scene_id(name)]))]
        assert got.shape == (1, len(card.label_names))
        np.testing.assert_allclose(got, own.probabilities, atol=1e-5)
    folder = store.versions / report.manifest.version
    (folder / PROBABILITIES_FILE).write_bytes(b"damaged")
    with pytest.raises(IndexNotReadyError, match=r"probabilities\.npy is damaged"):
        store.load()


def test_a_compressed_index_is_reranked_and_kept_up_to_date(
    models, ucm_root, ucm_subset, tmp_path
) -> None:
    rows = list(csv.reader(ucm_subset.open()))
    first = tmp_path / "first.csv"
    csv.writer(first.open("w", newline="")).writerows(rows[:101])
    settings = ReindexSettings(factory="IVF4,PQ16x4")
    base = reindex(
        models[0], ucm_root, tmp_path / "idx", labels_csv=first, settings=settings, progress=False
    )
    assert base.manifest.vectors_checksum is not None
    assert base.manifest.stats["recall_at_10"] >= 0.95  # measured with re-ranking
    second = tmp_path / "second.csv"
    csv.writer(second.open("w", newline="")).writerows([rows[0], *rows[11:]])
    report = reindex(
        models[0],
        ucm_root,
        tmp_path / "idx",
        labels_csv=second,
        settings=settings,
        incremental=True,
        progress=False,
    )
    loaded = IndexStore(tmp_path / "idx").load()
    assert loaded.full_vectors is not None
    np.testing.assert_array_equal(loaded.full_vectors.ids, np.sort(stored_ids(loaded.index)))
    assert report.manifest.count == 116 and report.manifest.stats["recall_at_10"] >= 0.95


@pytest.mark.parametrize("fault", ["embed-shard:0", "index-written", "manifest-written"])
def test_a_killed_build_leaves_the_previous_index_in_service(
    models, ucm_root, ucm_subset, tmp_path, fault: str
) -> None:
    store = IndexStore(tmp_path)
    before = reindex(models[0], ucm_root, tmp_path, labels_csv=ucm_subset, progress=False).manifest
    killed = _grn_reindex(models[1], ucm_root, ucm_subset, tmp_path, fault, "--shard-size", "64")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    served = store.load()
    assert served.manifest == before and served.index.ntotal == 126
    assert store.prune(keep=3, stale_after=0) is not None
    after = _grn_reindex(models[1], ucm_root, ucm_subset, tmp_path, None, "--shard-size", "64")
    assert after.returncode == 0, after.stderr
    assert store.load().manifest.model_version != before.model_version


def test_a_killed_embedding_job_resumes_without_recomputing(
    models, ucm_root, ucm_subset, tmp_path
) -> None:
    killed = _grn_reindex(
        models[0], ucm_root, ucm_subset, tmp_path, "embed-shard:1", "--shard-size", "32"
    )
    assert killed.returncode == -signal.SIGKILL
    shards = sorted((tmp_path / "work").rglob("shard-*.npz"))
    assert [p.name for p in shards] == ["shard-00000.npz", "shard-00001.npz"]
    before = {p: p.stat().st_mtime_ns for p in shards}
    report = reindex(
        models[0],
        ucm_root,
        tmp_path,
        labels_csv=ucm_subset,
        progress=False,
        settings=ReindexSettings(shard_size=32),
    )
    assert report.embedded == 126 - 64 and report.manifest.count == 126
    assert all(p.stat().st_mtime_ns == t for p, t in before.items() if p.exists())
    # resumed shards give the same vectors as embedding everything afresh
    fresh = reindex(models[0], ucm_root, tmp_path / "fresh", labels_csv=ucm_subset, progress=False)
    a = IndexStore(tmp_path).load().index
    b = IndexStore(tmp_path / "fresh").load().index
    ids = np.sort(stored_ids(a))
    np.testing.assert_allclose(a.reconstruct_batch(ids), b.reconstruct_batch(ids), atol=1e-6)
    assert fresh.embedded == 126
