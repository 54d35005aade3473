"""`grn reindex --milvus`: an archive into a Milvus Lite collection, full and incremental."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from index.filters import SceneFilter
from index.stores.milvus_collection import MilvusCollection
from model.archive import load_archive, scene_id
from model.card import load_model, read_card
from model.embedding import embed_scenes

REPO = Path(__file__).resolve().parents[2]
pytest.importorskip("pymilvus")


@pytest.fixture(scope="module")
def served_model(tiny_config, tmp_path_factory: pytest.TempPathFactory) -> Path:  # type: ignore[no-untyped-def]
    from model.train import fit

    return fit(tiny_config(tmp_path_factory.mktemp("milvus-run")), resume=False).model_path


def grn(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
    )  # fmt: skip


def aliased(uri: str) -> tuple[str, list[str]]:
    """The collection behind the alias `scenes`, and every version on the file."""
    from milvus_lite.server_manager import server_manager_instance
    from pymilvus import MilvusClient

    from index.stores.milvus_client import resolve_collection, versions_of

    client = MilvusClient(uri=uri)
    try:
        return str(resolve_collection(client, "scenes")), versions_of(client, "scenes")
    finally:
        client.close()
        server_manager_instance.release_server(uri)  # Milvus Lite: one process at a time


def test_reindex_into_milvus(
    served_model: Path, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    uri = str(tmp_path / "milvus.db")
    base = ["reindex", "--model", str(served_model), "--archive", str(ucm_root),
            "--index-root", str(tmp_path / "index"), "--milvus", uri, "--quiet",
            "--device", "cpu"]  # fmt: skip
    full = grn(*base, "--labels", str(ucm_subset))
    assert full.returncode == 0, full.stderr
    assert "126 scenes; added 126, removed 0" in full.stdout
    again = grn(*base, "--labels", str(ucm_subset))
    assert again.returncode == 1 and "--incremental" in again.stderr
    fewer = tmp_path / "fewer.csv"
    fewer.write_text("\n".join(ucm_subset.read_text().splitlines()[:101]) + "\n")
    incremental = grn(*base, "--labels", str(fewer), "--incremental")
    assert incremental.returncode == 0, incremental.stderr
    assert "100 scenes; added 0, removed 26" in incremental.stdout

    first, versions = aliased(uri)
    assert versions == [first]  # the incremental update worked in place

    # a rebuild fills a new version and switches the alias; the previous version stays
    replaced = grn(*base, "--labels", str(fewer), "--replace")
    assert replaced.returncode == 0 and "100 scenes; added 100" in replaced.stdout
    second, versions = aliased(uri)
    assert versions == [first, second]

    # a rebuild killed after filling its collection, before the switch: the alias still
    # names the previous version, and the next rebuild drops the orphan and the oldest
    killed = grn(*base, "--replace", GRN_FAULT_KILL_AT="milvus-filled")
    assert killed.returncode == -9
    live, versions = aliased(uri)
    assert live == second and len(versions) == 3
    again = grn(*base, "--labels", str(fewer), "--replace")
    assert again.returncode == 0, again.stderr
    third, versions = aliased(uri)
    assert versions == [second, third]

    # (a file of Milvus Lite is opened by one process at a time: check from here after this)
    archive = load_archive(ucm_root, fewer)
    store = MilvusCollection(uri, "scenes", 128, read_card(served_model).version)
    np.testing.assert_array_equal(store.ids(), np.sort([scene_id(s.name) for s in archive.scenes]))
    query = store.search(np.ones((1, 128), dtype=np.float32) / np.sqrt(128), 5,
                         SceneFilter(labels_all=["water"]))  # fmt: skip
    with_water = {
        scene_id(s.name) for s in archive.scenes if s.labels[archive.label_names.index("water")]
    }
    assert set(query.ids[0][query.ids[0] >= 0].tolist()) <= with_water
    assert (query.ids[0] >= 0).sum() == min(5, len(with_water))
    # each row keeps the classifier's label probabilities (label queries rank by them)
    positions = [0, 50, 99]
    kept = store.probabilities([scene_id(archive.scenes[p].name) for p in positions])
    net, card = load_model(served_model)
    own = embed_scenes(net, card, archive, positions, device=torch.device("cpu"), progress=False)
    assert kept is not None
    np.testing.assert_allclose(kept, own.probabilities, atol=1e-5)
    store.close()
