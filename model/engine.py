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

This module needs no torch: exporting a graph and torch as the reference engine live in
model/graph_export.py. Where torch is not installed (the serving image), `load_model` gives a
`GraphNet`: the graph stored in the model file on its engine, trusted by the SHA-256 and the
model version recorded beside it when it was exported and checked at training time.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:  # nothing here needs torch: a serving image has none (model/graph_export.py)
    import torch

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


GRN_OUTPUTS = ["embedding", "probabilities", "descriptors"]


def graph_outputs(graph: bytes) -> list[str]:
    """The names of an exported graph's outputs."""
    import onnx

    return [output.name for output in onnx.load_from_string(graph).graph.output]


def graph_digest(graph: bytes) -> str:
    return hashlib.sha256(graph).hexdigest()


# -- engines --------------------------------------------------------------------------------


class Engine(Protocol):
    name: str

    def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        """uint8 (B, 3, S, S) -> float32 outputs (embedding, probabilities, descriptors) or
        (features,)."""
        ...


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
        if not isinstance(images, np.ndarray):
            images = images.numpy()  # a torch batch (on the CPU)
        return self.engine.run(images)


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


class GraphNet:
    """A trained network without torch: the graph its model file stores, on a CPU engine.
    `model.inference.predict` runs it as it runs a torch network's attached engine; the
    methods a torch module is called with on the way (`to`, `eval`) leave it as it is."""

    def __init__(self, engine: CpuEngine) -> None:
        self.engine = engine

    def to(self, *args: Any, **kwargs: Any) -> GraphNet:
        return self

    def eval(self) -> GraphNet:
        return self
