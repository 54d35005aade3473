"""The Ray Data embedding pipeline gives the embeddings of the plain path, and resumes."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from model.archive import load_archive, scene_id
from model.card import load_model
from model.embedding import embed_scenes
from model.train import fit

ray = pytest.importorskip("ray")
REPO = Path(__file__).resolve().parents[2]


def test_ray_pipeline_matches_the_plain_path(
    tiny_config: Callable[..., object], ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    from index.ray_embed import finished_ids, ray_embed, read_embeddings

    model = fit(tiny_config(tmp_path / "run"), resume=False).model_path  # type: ignore[attr-defined]
    out = tmp_path / "shards"
    try:
        report = ray_embed(model, ucm_root, out, labels_csv=ucm_subset, workers=2, batch_size=8)
        assert (report.embedded, report.skipped) == (126, 0)
        again = ray_embed(model, ucm_root, out, labels_csv=ucm_subset, workers=2)
        assert (again.embedded, again.skipped) == (0, 126)  # resumed: nothing to do
    finally:
        ray.shutdown()
    ids, embeddings, probabilities = read_embeddings(out)
    archive = load_archive(ucm_root, ucm_subset)
    net, card = load_model(model, "cpu")
    plain = embed_scenes(
        net, card, archive, archive.indices(), device=torch.device("cpu"), progress=False
    )
    plain_ids = np.asarray([scene_id(s.name) for s in archive.scenes], dtype=np.int64)
    order = np.argsort(plain_ids)
    np.testing.assert_array_equal(ids, plain_ids[order])
    np.testing.assert_allclose(embeddings, plain.embeddings[order], atol=1e-5)
    np.testing.assert_allclose(probabilities, plain.probabilities[order], atol=1e-5)
    assert finished_ids(out) == set(plain_ids.tolist())


def test_reindex_on_ray_builds_the_index_of_the_plain_job(
    tiny_config: Callable[..., object], ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    from index.stores.faiss import Searcher
    from index.stores.faiss_build import ReindexSettings, reindex
    from index.stores.faiss_versions import IndexStore

    model = fit(tiny_config(tmp_path / "run"), resume=False).model_path  # type: ignore[attr-defined]
    common = ["--model", str(model), "--archive", str(ucm_root), "--labels", str(ucm_subset),
              "--factory", "Flat", "--device", "cpu", "--quiet"]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "reindex", *common,
         "--index-root", str(tmp_path / "ray"), "--ray", "--workers", "2"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "126 scenes" in done.stdout
    reindex(model, ucm_root, tmp_path / "plain", labels_csv=ucm_subset, progress=False,
            settings=ReindexSettings(factory="Flat"), device="cpu")  # fmt: skip
    searchers = [Searcher(IndexStore(tmp_path / name).load()) for name in ("ray", "plain")]
    np.testing.assert_array_equal(searchers[0].ids, searchers[1].ids)
    assert len(searchers[0].ids) == 126
    np.testing.assert_allclose(
        searchers[0].vectors(searchers[0].ids), searchers[1].vectors(searchers[1].ids), atol=1e-5
    )
    # the Ray shards were cleared with the rest of the job's work once the version was in
    assert not any((tmp_path / "ray" / "work").rglob("*.parquet"))


def test_a_killed_reindex_on_ray_resumes_without_recomputing(
    tiny_config: Callable[..., object], ucm_root: Path, tmp_path: Path
) -> None:
    """`grn reindex --ray` SIGKILLed once its first Parquet file is written: the next run
    embeds only the scenes the files finished before the kill did not hold."""
    from index.ray_embed import finished_ids
    from index.stores.faiss_versions import IndexStore

    labels = tmp_path / "labels.csv"
    labels.write_text("".join((ucm_root / "labels.csv").open().readlines()[:401]))
    model = fit(tiny_config(tmp_path / "run"), resume=False).model_path  # type: ignore[attr-defined]
    command = [sys.executable, "-m", "service.cli", "reindex", "--model", str(model),
               "--archive", str(ucm_root), "--labels", str(labels), "--factory", "Flat",
               "--device", "cpu", "--index-root", str(tmp_path / "index"), "--quiet",
               "--ray", "--workers", "1", "--shard-size", "16"]  # fmt: skip
    killed = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    work = tmp_path / "index" / "work"
    while killed.poll() is None and not any(work.rglob("*.parquet")):
        time.sleep(0.02)  # polls for the event (a finished file), does not wait a time
    killed.kill()
    assert killed.wait() == -signal.SIGKILL, killed.communicate()[1]
    done = sum(len(finished_ids(folder)) for folder in work.glob("*/ray-*"))
    assert 16 <= done <= 400
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    store = IndexStore(tmp_path / "index")
    manifest = store.manifest(store.current_version() or "")
    assert manifest.count == 400
    assert manifest.stats["embedded"] == 400 - done
