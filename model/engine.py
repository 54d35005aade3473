"""Inference engines: what runs a trained network forward on a CPU.

Training stays in torch and a GPU keeps torch. On a CPU the network runs through the engine
chosen by `GRN_ENGINE` (`auto`, `torch`, `onnxruntime` or `openvino`); `auto` is the engine
measured fastest on this project's 2-core CPU with outputs within `TOLERANCE` of torch's
(`bench/engines.py`, figures in docs/performance.md): ONNX Runtime.

The graph an engine runs is the network exported to ONNX with its preprocessing inside: a
uint8 (B, 3, S, S) batch in, scaled and normalised with the card's mean and std, and out
come the unit embeddings, the label probabilities (the sigmoid of the logits) and the
backbone's pooled features on the unit sphere (the descriptors a search re-ranks with,
`model.rerank`), or for a bare backbone its pooled features. A model file carries the graph
of its network beside the weights (model/card.py); an engine is only used after its outputs
on a fixed probe batch matched torch's to within `TOLERANCE`.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger("grn.engine")

ENGINE_ENV = "GRN_ENGINE"
ENGINE_NAMES = ("auto", "torch", "onnxruntime", "openvino")
AUTO_ENGINE = "onnxruntime"
"""The measured winner on CPU (docs/performance.md)."""
TOLERANCE = 1e-4
"""Largest absolute difference from torch's outputs an engine may show on the probe batch."""
OPSET = 17


class EngineMismatchError(ValueError):
    """An engine's outputs differ from torch's by more than `TOLERANCE`."""


def engine_name(name: str | None = None) -> str:
    """The engine to use on a CPU: `name`, else `GRN_ENGINE`, else `auto`; `auto` is
    `AUTO_ENGINE` when its package is installed, else torch."""
    name = (name or os.environ.get(ENGINE_ENV) or "auto").strip().lower()
    if name not in ENGINE_NAMES:
        raise ValueError(f"{ENGINE_ENV}={name!r}: the engine must be one of {ENGINE_NAMES}")
    if name == "auto":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        return AUTO_ENGINE
    return name


def cpu_threads() -> int:
    """Threads an engine uses: OMP_NUM_THREADS when set, else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return os.cpu_count() or 1


# -- the exported graph ---------------------------------------------------------------------


class Preprocessed(nn.Module):
    """uint8 (B, 3, S, S) -> [0, 1] -> normalised -> `module`; a GRN network's outputs become
    (embedding, probabilities, descriptors), a backbone's stay (features,). The ops are those
    of `model.inference.normalize`, so torch and the graph see the same inputs."""

    def __init__(self, module: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.module = module
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = (images.float() / 255 - self.mean) / self.std
        out = self.module(x.contiguous(memory_format=torch.channels_last))
        if isinstance(out, torch.Tensor):
            return (out,)
        assert out.features is not None
        return out.embedding, torch.sigmoid(out.logits), F.normalize(out.features.float(), dim=1)


GRN_OUTPUTS = ["embedding", "probabilities", "descriptors"]


def output_names(module: nn.Module) -> list[str]:
    from model.network import GRNNet

    return list(GRN_OUTPUTS) if isinstance(module, GRNNet) else ["features"]


def graph_outputs(graph: bytes) -> list[str]:
    """The names of an exported graph's outputs."""
    import onnx

    return [output.name for output in onnx.load_from_string(graph).graph.output]


def export_onnx(
    module: nn.Module, mean: Sequence[float], std: Sequence[float], input_size: int
) -> bytes:
    """The ONNX graph of `module` (a GRN network or a backbone) with its preprocessing, for
    any batch size. Exports a CPU float32 copy in eval mode; `module` is left as it was."""
    import copy

    attached = getattr(module, "engine", None)  # an engine is no part of the copy
    copied = copy.deepcopy(module, memo={id(attached): None}) if attached else copy.deepcopy(module)
    wrapped = Preprocessed(copied.float().cpu().eval(), mean, std).eval()
    names = output_names(module)
    example = torch.zeros(2, 3, input_size, input_size, dtype=torch.uint8)
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            wrapped,
            (example,),
            buffer,  # type: ignore[arg-type]  # the TorchScript exporter writes to file objects
            dynamo=False,
            input_names=["images"],
            output_names=names,
            dynamic_axes={name: {0: "batch"} for name in ["images", *names]},
            opset_version=OPSET,
            do_constant_folding=True,
        )
    return buffer.getvalue()


def graph_digest(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


# -- engines --------------------------------------------------------------------------------


class Engine(Protocol):
    name: str

    def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        """uint8 (B, 3, S, S) -> float32 outputs (embedding, probabilities, descriptors) or
        (features,)."""
        ...


class TorchEngine:
    """torch eager, channels-last, under inference_mode: the reference."""

    name = "torch"

    def __init__(self, module: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        self.module = Preprocessed(module, mean, std).eval().to(memory_format=torch.channels_last)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(images)))
            return tuple(out.float().numpy() for out in outputs)


class OrtEngine:
    """ONNX Runtime's CPU execution provider."""

    name = "onnxruntime"

    def __init__(self, graph: bytes, threads: int | None = None, spinning: bool = False) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads sleep instead of spinning: the decoding thread needs the core
        # between batches (measured in bench/engines.py).
        options.add_session_config_entry(
            "session.intra_op.allow_spinning", "1" if spinning else "0"
        )
        options.log_severity_level = 3
        self.session = ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(self.session.run(None, {self.input: np.ascontiguousarray(images)}))


class OpenVinoEngine:
    """OpenVINO's CPU plugin (the `bench` extra installs it)."""

    name = "openvino"

    def __init__(self, graph: bytes, threads: int | None = None, precision: str = "f32") -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(io.BytesIO(graph))
        # OpenVINO picks bf16 where the CPU has it: 0.086 from torch's probabilities on the
        # probe batch, far outside the tolerance; f32 stays within 3e-6.
        config = {
            "INFERENCE_NUM_THREADS": threads or cpu_threads(),
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": precision,
        }
        self.compiled = core.compile_model(model, "CPU", config)
        self.request = self.compiled.create_infer_request()

    def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        results = self.request.infer([np.ascontiguousarray(images)])
        return tuple(np.array(results[out], dtype=np.float32) for out in self.compiled.outputs)


def graph_engine(name: str, graph: bytes, threads: int | None = None) -> Engine:
    if name == "onnxruntime":
        return OrtEngine(graph, threads)
    if name == "openvino":
        return OpenVinoEngine(graph, threads)
    raise ValueError(f"{name} does not run an exported graph")


# -- checking an engine against torch --------------------------------------------------------


def probe_batch(input_size: int) -> np.ndarray:
    """A fixed uint8 batch: a smooth scene-like image, noise, and a flat grey image."""
    rng = np.random.default_rng(20260101)
    ramp = np.linspace(0, 255, input_size, dtype=np.float32)
    smooth = np.stack(
        [
            np.add.outer(ramp, ramp) / 2,
            np.add.outer(ramp[::-1], ramp) / 2,
            np.outer(ramp, ramp) / 255,
        ]
    )
    noise = rng.integers(0, 256, (3, input_size, input_size))
    grey = np.full((3, input_size, input_size), 128)
    return np.stack([smooth, noise, grey]).clip(0, 255).astype(np.uint8)


def max_difference(engine: Engine, reference: Engine, images: np.ndarray) -> float:
    ours, theirs = engine.run(images), reference.run(images)
    return max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs, strict=True))


def check_engine(engine: Engine, reference: Engine, images: np.ndarray, what: str) -> float:
    """Raise EngineMismatchError unless `engine` matches `reference` on `images`."""
    difference = max_difference(engine, reference, images)
    if not difference <= TOLERANCE:  # also catches NaN
        raise EngineMismatchError(
            f"{what}: {engine.name}'s outputs differ from torch's by {difference:.3g} on the "
            f"probe batch (at most {TOLERANCE:g} allowed)"
        )
    return difference


@dataclass
class CpuEngine:
    """A checked engine for one network (or backbone), as `model.inference` uses it."""

    engine: Engine
    version: str
    """The model version (or feature key) the engine was built and checked for."""
    difference: float
    """Its largest difference from torch on the probe batch."""

    @property
    def name(self) -> str:
        return self.engine.name

    def run(self, images: np.ndarray | torch.Tensor) -> tuple[np.ndarray, ...]:
        if isinstance(images, torch.Tensor):
            images = images.numpy()
        return self.engine.run(images)


def build_cpu_engine(
    module: nn.Module,
    mean: Sequence[float],
    std: Sequence[float],
    input_size: int,
    *,
    version: str,
    name: str | None = None,
    graph: bytes | None = None,
    what: str = "network",
) -> CpuEngine | None:
    """The chosen engine for `module` on a CPU, checked against torch on the probe batch;
    None when the choice is torch (the callers keep their torch path). `graph` is the
    module's exported graph (exported here when not given)."""
    chosen = engine_name(name)
    if chosen == "torch":
        return None
    if graph is None:
        graph = export_onnx(module, mean, std, input_size)
    engine = graph_engine(chosen, graph)
    reference = TorchEngine(module, mean, std)
    difference = check_engine(engine, reference, probe_batch(input_size), what)
    log.info("%s runs on %s (probe difference %.2g)", what, chosen, difference)
    return CpuEngine(engine, version, difference)


def attached_engine(net: Any, version: str, device: torch.device) -> CpuEngine | None:
    """The engine `load_model` attached to `net`, when it applies to this call."""
    engine = getattr(net, "engine", None)
    if engine is None or device.type != "cpu" or engine.version != version:
        return None
    return engine


def describe(net: Any) -> str:
    """`onnxruntime`, `openvino` or `torch`: what runs `net` on a CPU."""
    engine = getattr(net, "engine", None)
    return engine.name if engine is not None else "torch"
