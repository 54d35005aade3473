"""The network's ONNX graph made from torch, and torch as the reference engine.

Needs torch (the `train` extra): training exports a model's graph once and stores it in the
model file (model/card.py); a serving image without torch runs the stored graph
(`model.engine`). `build_cpu_engine` exports a module's graph (or takes the stored one),
runs it on the chosen engine and checks its outputs against torch's on the probe batch.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.engine import (
    GRN_OUTPUTS,
    OPSET,
    CpuEngine,
    check_engine,
    engine_name,
    graph_engine,
    probe_batch,
)

log = logging.getLogger("grn.engine")


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


def output_names(module: nn.Module) -> list[str]:
    from model.network import GRNNet

    return list(GRN_OUTPUTS) if isinstance(module, GRNNet) else ["features"]


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


class TorchEngine:
    """torch eager, channels-last, under inference_mode: the reference."""

    name = "torch"

    def __init__(self, module: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        self.module = Preprocessed(module, mean, std).eval().to(memory_format=torch.channels_last)

    def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode():
            outputs = self.module(torch.from_numpy(np.ascontiguousarray(images)))
            return tuple(out.float().numpy() for out in outputs)


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
