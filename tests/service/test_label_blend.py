"""The label blend: a model whose card joins the label probabilities to the embedding has
its index rank by (1 - b) x the embeddings' cosine + b x the probabilities' cosine, for
uploads and scenes alike, through the real server."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from head_model import random_heads_model
from servers import LiveServer, Served, head_model_served, server_env

from index.stores.faiss import Searcher
from index.stores.faiss_versions import IndexStore
from model.archive import load_archive, scene_id
from model.card import load_model, read_card
from model.imageio import read_image
from model.inference import normalize, prepare_batch, ranking_vectors

BLEND = 0.3
REPO = Path(__file__).resolve().parents[2]


def test_ranking_vectors_blend_the_two_cosines() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(6, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    p = rng.uniform(size=(6, 5)).astype(np.float32)
    joined = ranking_vectors(e, p, BLEND)
    assert joined.shape == (6, 13) and joined.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), 1, atol=1e-6)
    unit = p / np.linalg.norm(p, axis=1, keepdims=True)
    want = (1 - BLEND) * e @ e.T + BLEND * unit @ unit.T
    np.testing.assert_allclose(joined @ joined.T, want, atol=1e-6)
    assert ranking_vectors(e, p, 0.0) is e


def test_the_blend_is_part_of_the_model_version(tmp_path: Path) -> None:
    plain = random_heads_model(tmp_path / "plain.safetensors")
    blended = random_heads_model(tmp_path / "blended.safetensors", label_blend=BLEND)
    assert plain.version != blended.version  # same weights, another index
    assert (plain.vector_dim, blended.vector_dim) == (16, 16 + 3)
    assert read_card(tmp_path / "blended.safetensors").label_blend == BLEND


@pytest.fixture(scope="module")
def blended_served(
    ucm_root: Path, ucm_subset: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Served, str, Path]:
    base = tmp_path_factory.mktemp("blend")
    return head_model_served(base, ucm_root, ucm_subset, label_blend=BLEND)


def test_the_index_ranks_by_the_blend_through_the_server(
    blended_served: tuple[Served, str, Path], ucm_root: Path, ucm_subset: Path
) -> None:
    """The expected order is worked out here from the network's raw outputs in torch: the
    unit embeddings and the label probabilities of every archive scene and of the upload."""
    served, url, base = blended_served
    archive = load_archive(ucm_root, ucm_subset)
    net, card = load_model(served.model, engine="torch")
    index = Searcher(IndexStore(served.index_root).load())
    assert index.vectors(index.ids[:1]).shape == (1, card.embedding_dim + len(card.label_names))
    paths = {scene_id(s.name): s.path for s in archive.scenes}
    ids = [int(i) for i in index.ids]
    upload = archive.scenes[5].path
    images = [read_image(paths[i]) for i in ids] + [read_image(upload)]
    with torch.inference_mode():
        out = net(normalize(prepare_batch(images, card.input_size), card.mean, card.std))
    e = out.embedding.numpy()
    p = torch.sigmoid(out.logits).numpy()
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    scores = (1 - BLEND) * e[:-1] @ e[-1] + BLEND * p[:-1] @ p[-1]
    order = np.argsort(-scores, kind="stable")[:10]
    env = server_env(served, url, base, GRN_BACKBONE_RERANK="off")
    with LiveServer(env, base / "server.log") as server:
        response = httpx.post(
            f"{server.url}/search", data={"k": "10"}, timeout=60,
            files={"file": (upload.name, io.BytesIO(upload.read_bytes()))},
        )  # fmt: skip
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert [hit["id"] for hit in hits] == [str(ids[i]) for i in order]
    np.testing.assert_allclose([hit["score"] for hit in hits], scores[order], atol=1e-4)
    # the scores are the blend's, not the embedding's cosines
    plain = (e[:-1] @ e[-1])[order]
    assert np.abs(np.array([hit["score"] for hit in hits]) - plain).max() > 0.01


def test_grn_train_writes_the_blend_on_the_card(
    ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    """`grn train --label-blend` as typed: the card carries it; an impossible blend is refused
    before any work, with a message."""
    command = [
        sys.executable, "-m", "service.cli", "train", "--archive", str(ucm_root),
        "--labels", str(ucm_subset), "--mode", "full", "--backbone", "tiny", "--no-pretrained",
        "--epochs", "1", "--batch-size", "32", "--input-size", "32", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "run"), "--label-blend", "0.2"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    card = read_card(tmp_path / "run")
    assert card.label_blend == 0.2 and card.vector_dim == card.embedding_dim + 17
    refused = subprocess.run(
        [*command, "--out", str(tmp_path / "bad"), "--label-blend", "1.5"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode != 0 and "label blend" in refused.stderr
    assert not (tmp_path / "bad" / "model.safetensors").exists()
