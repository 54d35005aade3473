"""Checkpoints: the network's weights plus the model card that describes them.

A model file is one safetensors file. Its metadata holds the model card as JSON under
`grn_model_card`: backbone, weights origin, input size, mean/std, embedding size, label
names, per-label thresholds, training config, metrics and a version id. Whoever loads a model
takes preprocessing and label names from the card. Loading never unpickles anything.

Beside the weights, the file carries the network exported to ONNX (preprocessing included,
model/engine.py) as a uint8 tensor under `GRAPH_KEY`, with the graph's SHA-256 and the model
version it was exported from in the metadata. It is exported and checked against torch when
the model is saved; loading refuses a graph whose digest or version does not match, and one
whose outputs on the probe batch differ from torch's by more than 1e-4. A file without a graph
(written before graphs were stored, or by a training run stopped before its end) still loads:
its graph is exported in memory at load time (a few seconds) and checked the same way.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import safe_open

if TYPE_CHECKING:  # torch is imported where weights are touched: reading a card needs none
    import torch

    from model.network import GRNNet

CARD_KEY = "grn_model_card"
GRAPH_KEY = "__grn_onnx_graph__"
"""The tensor holding the ONNX graph's bytes (not a weight)."""
GRAPH_DIGEST_KEY = "grn_onnx_sha256"
GRAPH_VERSION_KEY = "grn_onnx_model_version"
CARD_FORMAT = 1
MODEL_FILENAME = "model.safetensors"

log = logging.getLogger("grn.model")


class ModelFileError(ValueError):
    """A model file is missing, unreadable or not a GRN model."""


@dataclass
class ModelCard:
    backbone: str
    weights: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_features: int
    embedding_dim: int
    hidden_dim: int
    label_names: list[str]
    thresholds: list[float]
    loss: str
    label_blend: float = 0.0
    """b: what the index ranks by joins the unit embedding and the label probabilities (scaled
    to unit length) as [sqrt(1 - b) e, sqrt(b) p], so that a similarity is (1 - b) x the
    embeddings' cosine + b x the probabilities' (`model.inference.ranking_vectors`); 0: the
    embedding alone."""
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""
    created: str = ""
    format: int = CARD_FORMAT

    @property
    def vector_dim(self) -> int:
        """Width of the vectors the index holds and searches with."""
        return self.embedding_dim + (len(self.label_names) if self.label_blend > 0 else 0)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelCard:
        data = json.loads(text)
        if data.get("format") != CARD_FORMAT:
            raise ModelFileError(f"model card format {data.get('format')} is not {CARD_FORMAT}")
        data["mean"] = tuple(data["mean"])
        data["std"] = tuple(data["std"])
        return cls(**data)


def build_network(card: ModelCard, pretrained: bool = False) -> GRNNet:
    """The network a card describes (random weights unless `pretrained`)."""
    from model.backbones import backbone_spec, create_backbone
    from model.network import GRNHead, GRNNet

    backbone, _ = create_backbone(card.backbone, pretrained=pretrained)
    head = GRNHead(
        backbone_spec(card.backbone).num_features,
        card.embedding_dim,
        len(card.label_names),
        card.hidden_dim,
    )
    return GRNNet(backbone, head)


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A content hash of a state dict: the same weights give the same version id."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_version(state: dict[str, torch.Tensor], label_blend: float = 0.0) -> str:
    """A model's version id: its weights' digest, and the label blend when there is one (the
    index's vectors change with it, so an index built for one blend is stale for another)."""
    digest = weights_digest(state)
    if label_blend > 0:
        digest = hashlib.sha256(f"{digest} label_blend {label_blend!r}".encode()).hexdigest()
    return "grn-" + digest[:16]


def resolve_model_path(path: str | Path) -> Path:
    """A model is named by its file or by the training folder that holds `model.safetensors`."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILENAME
    if not path.is_file():
        raise ModelFileError(f"no model file at {path}; train one with `grn train`")
    return path


def export_graph(net: GRNNet, card: ModelCard) -> bytes:
    """The network's ONNX graph, checked against torch on the probe batch (ONNX Runtime)."""
    from model.engine import OrtEngine, check_engine, probe_batch
    from model.graph_export import TorchEngine, export_onnx

    graph = export_onnx(net, card.mean, card.std, card.input_size)
    reference = TorchEngine(_cpu_copy(net), card.mean, card.std)
    check_engine(OrtEngine(graph), reference, probe_batch(card.input_size), "the exported graph")
    return graph


def _cpu_copy(net: GRNNet) -> GRNNet:
    import copy

    engine = getattr(net, "engine", None)
    return copy.deepcopy(net, memo={id(engine): None}).float().cpu().eval()


def _write(
    path: Path, state: dict[str, torch.Tensor], card: ModelCard, graph: bytes | None
) -> None:
    import torch
    from safetensors.torch import save_file

    metadata = {CARD_KEY: card.to_json()}
    tensors = dict(state)
    if graph is not None:
        tensors[GRAPH_KEY] = torch.frombuffer(bytearray(graph), dtype=torch.uint8)
        metadata[GRAPH_DIGEST_KEY] = hashlib.sha256(graph).hexdigest()
        metadata[GRAPH_VERSION_KEY] = card.version
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def save_model(
    path: str | Path, net: GRNNet, card: ModelCard, *, with_graph: bool = True
) -> ModelCard:
    """Write weights, card and (with `with_graph`) the checked ONNX graph atomically; the
    card's version is the weights' digest, with its label blend (`model_version`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    card.version = model_version(state, card.label_blend)
    card.created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    graph = export_graph(net, card) if with_graph else None
    _write(Path(path), state, card, graph)
    return card


def add_graph(path: str | Path) -> ModelCard:
    """Export and store the graph of a model file saved without one (training saves each
    best epoch without it, then adds it to the final file), or of one whose graph came from
    an earlier release. A file with a current graph is left."""
    from model.engine import GRN_OUTPUTS, graph_outputs

    path = resolve_model_path(path)
    graph = stored_graph(path)
    if graph is not None and graph_outputs(graph) == GRN_OUTPUTS:
        return read_card(path)
    net, card = load_model(path, "cpu", engine="torch")
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    _write(path, state, card, export_graph(net, card))
    return card


def has_graph(path: str | Path) -> bool:
    with safe_open(str(resolve_model_path(path)), framework="numpy") as handle:
        return GRAPH_KEY in handle.keys()  # noqa: SIM118 - safe_open is not a mapping


def stored_graph(path: str | Path) -> bytes | None:
    """The ONNX graph a model file carries, or None."""
    with safe_open(str(resolve_model_path(path)), framework="numpy") as handle:
        if GRAPH_KEY not in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            return None
        return bytes(handle.get_tensor(GRAPH_KEY).tobytes())


def read_card(path: str | Path) -> ModelCard:
    path = resolve_model_path(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for broken files
        raise ModelFileError(f"{path}: not a safetensors model file ({exc})") from exc
    if CARD_KEY not in metadata:
        raise ModelFileError(f"{path}: has no GRN model card; it was not written by `grn train`")
    return ModelCard.from_json(metadata[CARD_KEY])


def load_model(
    path: str | Path, device: str | torch.device = "cpu", *, engine: str | None = None
) -> tuple[GRNNet, ModelCard]:
    """Load a trained model for inference (eval mode). On a CPU, the engine chosen by
    `engine` (default: GRN_ENGINE, else auto; model/engine.py) is attached to the network as
    `net.engine` once its outputs matched torch's on the probe batch; `model.inference.predict`
    runs it. Raises ModelFileError for a graph that was altered or does not match.

    Where torch is not installed (the serving image), the network is the graph the file
    stores, on the engine (`load_graph`)."""
    path = resolve_model_path(path)
    card = read_card(path)
    try:
        import torch
    except ImportError:
        return load_graph(path, card, device, engine), card
    net = build_network(card, pretrained=False)
    state: dict[str, torch.Tensor] = {}
    graph: bytes | None = None
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        metadata = handle.metadata() or {}
        for key in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            if key == GRAPH_KEY:
                graph = handle.get_tensor(key).numpy().tobytes()
            else:
                state[key] = handle.get_tensor(key)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not match its model card ({exc})") from exc
    if graph is not None:
        _check_graph_record(path, graph, metadata, card)
    net = net.to(device).eval()
    if torch.device(device).type == "cpu":
        net.engine = _cpu_engine(path, net, card, graph, engine)
    return net, card


def load_graph(path: Path, card: ModelCard, device: Any, engine: str | None) -> Any:
    """The `GraphNet` of a model file, without torch: its stored graph, trusted by the
    SHA-256 and model version recorded when training exported and checked it (there is no
    torch to check it against here), on the chosen graph engine."""
    from model.engine import (
        GRN_OUTPUTS,
        CpuEngine,
        GraphNet,
        engine_name,
        graph_engine,
        graph_outputs,
    )

    chosen = engine_name(engine)
    if getattr(device, "type", str(device)) != "cpu" or chosen == "torch":
        raise ModelFileError(
            f"{path}: running the network on {device} with the {chosen} engine needs torch, "
            "which is not installed here (pip install 'grn-retrieval[train]', or the trainer "
            "image); without it the CPU runs the model's ONNX graph"
        )
    with safe_open(str(path), framework="numpy") as handle:
        metadata = handle.metadata() or {}
        if GRAPH_KEY not in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
            raise ModelFileError(
                f"{path}: carries no ONNX graph, and torch, which would export one, is not "
                f"installed here; run `grn model add-graph --model {path}` where torch is "
                "(the trainer image)"
            )
        graph = bytes(handle.get_tensor(GRAPH_KEY).tobytes())
    _check_graph_record(path, graph, metadata, card)
    outputs = graph_outputs(graph)
    if outputs != GRN_OUTPUTS:
        raise ModelFileError(
            f"{path}: its ONNX graph is from an earlier release (outputs {', '.join(outputs)}); "
            f"run `grn model add-graph --model {path}` where torch is installed (the trainer "
            "image)"
        )
    runner = graph_engine(chosen, graph)
    log.info("%s runs its stored graph on %s (no torch)", path, chosen)
    return GraphNet(CpuEngine(runner, card.version, 0.0))


def _check_graph_record(
    path: Path, graph: bytes, metadata: dict[str, str], card: ModelCard
) -> None:
    digest = hashlib.sha256(graph).hexdigest()
    if metadata.get(GRAPH_DIGEST_KEY) != digest:
        raise ModelFileError(
            f"{path}: its ONNX graph does not match the SHA-256 recorded at training time "
            "(the file was altered or damaged); refusing to load it"
        )
    if metadata.get(GRAPH_VERSION_KEY) != card.version:
        raise ModelFileError(
            f"{path}: its ONNX graph was exported from model "
            f"{metadata.get(GRAPH_VERSION_KEY)}, not from these weights ({card.version}); "
            "refusing to load it"
        )


def _cpu_engine(
    path: Path, net: GRNNet, card: ModelCard, graph: bytes | None, engine: str | None
) -> Any:
    from model.engine import GRN_OUTPUTS, EngineMismatchError, engine_name, graph_outputs
    from model.graph_export import build_cpu_engine

    if engine_name(engine) == "torch":
        return None
    if graph is None:
        log.warning("%s carries no ONNX graph; exporting one in memory", path)
    elif graph_outputs(graph) != GRN_OUTPUTS:
        # written before the graph gave the backbone's descriptors: the weights are the same
        log.warning(
            "%s carries an ONNX graph from an earlier release (outputs %s); exporting the "
            "current one in memory (a few seconds at each load)",
            path,
            ", ".join(graph_outputs(graph)),
        )
        graph = None
    try:
        return build_cpu_engine(
            net,
            card.mean,
            card.std,
            card.input_size,
            version=card.version,
            name=engine,
            graph=graph,
            what=str(path),
        )
    except EngineMismatchError as exc:
        raise ModelFileError(f"{exc}; refusing to load it") from exc
