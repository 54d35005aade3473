"""Turning images into network inputs, and running a network over many images fast.

Preprocessing is the card's: resize to `input_size` x `input_size` (bilinear, antialiased),
scale to [0, 1], normalise with the card's mean and std. On a CPU the network runs through the
engine `load_model` attached to it (ONNX Runtime by default, model/engine.py; the scaling and
normalisation are inside its graph), in batches, while a background thread decodes the next
images; on a GPU, or with GRN_ENGINE=torch, it runs in torch, channels-last under
`torch.inference_mode`.

Without torch (the serving image) the same runs on numpy: images are resized by
`model.resize` (byte for byte torchvision's resize), `resolve_device` gives the CPU and
`load_model` a `GraphNet` (model/engine.py) whose engine `predict` runs; torch is imported
only where a torch network, a GPU or a torch batch needs it.

`predict` is the one forward pass of a trained GRN network (decoded images in, unit
embeddings and label probabilities out): the server's batcher, the indexing jobs, the Ray
pipeline and evaluation all call it.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar, cast

import numpy as np

from model.engine import attached_engine, engine_name
from model.resize import uint8_batch

if TYPE_CHECKING:
    import torch

    from model.card import ModelCard
    from model.engine import CpuEngine
    from model.network import GRNNet

T = TypeVar("T")


def to_uint8_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, size, size) uint8 tensor (torchvision's resize, which
    `model.resize` repeats without torch)."""
    import torch
    import torchvision.transforms.v2.functional as TF

    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")  # decoders may hand out read-only buffers
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    if tensor.shape[1:] != (size, size):
        tensor = TF.resize(tensor, [size, size], antialias=True)
    return tensor.contiguous()


def prepare_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Decoded (H, W, 3) uint8 images -> one (B, 3, size, size) uint8 torch batch
    (`uint8_batch`'s)."""
    import torch

    return torch.from_numpy(uint8_batch(images, size))


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> normalised float in channels-last layout."""
    import torch

    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255)
    mean_t = torch.tensor(mean, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=batch.device, dtype=batch.dtype).view(1, 3, 1, 1)
    return ((batch - mean_t) / std_t).contiguous(memory_format=torch.channels_last)


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate `items` in a background thread, `depth` items ahead (image decoding releases
    the GIL, so it overlaps the network)."""
    iterator = iter(items)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = [pool.submit(next, iterator, None) for _ in range(depth)]
        while True:
            item = pending.pop(0).result()
            if item is None:
                return
            pending.append(pool.submit(next, iterator, None))
            yield item


@dataclass(frozen=True)
class CpuWithoutTorch:
    """The device where torch is not installed: the CPU, where the model's graph runs."""

    type: str = "cpu"

    def __str__(self) -> str:
        return self.type


NO_TORCH_CPU = CpuWithoutTorch()


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when there is a GPU, else the CPU), `cpu`, `cuda` or `cuda:N`. Without
    torch: the CPU (`NO_TORCH_CPU`) for `auto` and `cpu`, ValueError for a GPU."""
    try:
        import torch
    except ImportError:
        if name in ("auto", "cpu"):
            return cast("torch.device", NO_TORCH_CPU)
        raise ValueError(
            f"device {name}: a GPU needs torch, which is not installed here "
            "(pip install 'grn-retrieval[train]', or the trainer image)"
        ) from None
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_batch_size(device: torch.device) -> int:
    # On a CPU, small batches stay in cache (torch: 8, measured on 2 cores); ONNX Runtime
    # runs batches of 16 a little faster than smaller ones (docs/performance.md).
    if device.type == "cuda":
        return 128
    return 16 if engine_name() != "torch" else 8


def decode_workers(device: torch.device) -> int:
    """Threads that decode images ahead of the network: one on a CPU (the cores are busy with
    the network), most of the cores when a GPU does the network's work."""
    return min(8, max(1, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 1


M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def tune_allocator() -> bool:
    """Keep glibc from handing the network's activation buffers back to the kernel after each
    batch. By default every buffer over the mmap threshold is a fresh mapping, so each batch
    re-faults its megabytes of zeroed pages (about 3,500 page faults per image measured on 2
    cores, 22% of the model's time at batch 1; in the batch commands half of the CPU time went
    to the kernel). Returns whether it applied (glibc only); GRN_TUNE_ALLOCATOR=0 skips it."""
    if os.environ.get("GRN_TUNE_ALLOCATOR", "1").strip().lower() in ("0", "false", "no"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(
        libc.mallopt(M_MMAP_THRESHOLD, 256 * 2**20) and libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    )


def configure_cpu_threads(torch_network: bool | None = None) -> None:
    """Allocator and threads for a command that runs a network (train, evaluate, embed,
    reindex). torch gets every core when it runs the network (training, a GPU, or
    GRN_ENGINE=torch); when an engine runs it, torch only resizes images in the decoding
    thread and gets one thread, so that its OpenMP team does not fight the engine's threads
    over the cores. OMP_NUM_THREADS, when set, wins. `torch_network` None: decided by the
    engine setting."""
    tune_allocator()
    if "OMP_NUM_THREADS" in os.environ:
        return
    if torch_network is None:
        torch_network = engine_name() == "torch"
    try:
        import torch
    except ImportError:
        return  # no torch: the engine's threads are its own
    torch.set_num_threads((os.cpu_count() or 1) if torch_network else 1)


@dataclass
class BatchOutput:
    positions: list[Any]
    """The keys that came with the images, in order."""
    outputs: torch.Tensor


@dataclass
class Prediction:
    embeddings: np.ndarray
    """(B, D) float32, unit norm: the vectors the index ranks by (`ranking_vectors`; the
    embedding itself unless the card has a label blend)."""
    probabilities: np.ndarray
    """(B, labels) float32: the sigmoid of the classifier's logits."""
    descriptors: np.ndarray
    """(B, F) float32, unit norm: the backbone's pooled features (`model.rerank`)."""


def predict(
    net: GRNNet,
    card: ModelCard,
    images: Sequence[np.ndarray] | np.ndarray | torch.Tensor,
    device: torch.device,
) -> Prediction:
    """The forward pass of a trained network: decoded (H, W, 3) uint8 images (or a batch
    from `prepare_batch`) -> resized to the card's input size, normalised with its mean and
    std -> network -> unit embeddings, label probabilities and unit backbone descriptors,
    as numpy arrays."""
    batch: np.ndarray | torch.Tensor
    if isinstance(images, np.ndarray) or not isinstance(images, Sequence):
        batch = images  # a batch already (numpy, or torch from `prepare_batch`)
    else:
        batch = uint8_batch(images, card.input_size)
    engine = attached_engine(net, card.version, device)
    if engine is not None:
        embeddings, probabilities, descriptors = engine.run(batch)
    else:
        import torch
        import torch.nn.functional as F

        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        with torch.inference_mode():
            out = net(normalize(batch.to(device, non_blocking=True), card.mean, card.std))
            assert out.features is not None
            embeddings = out.embedding.float().cpu().numpy()
            probabilities = torch.sigmoid(out.logits).float().cpu().numpy()
            descriptors = F.normalize(out.features.float(), dim=1).cpu().numpy()
    vectors = ranking_vectors(embeddings, probabilities, card.label_blend)
    return Prediction(vectors, probabilities, descriptors)


def ranking_vectors(
    embeddings: np.ndarray, probabilities: np.ndarray, label_blend: float
) -> np.ndarray:
    """Unit embeddings joined with the label probabilities scaled to unit length, as
    [sqrt(1 - b) e, sqrt(b) p]: unit vectors whose inner product is (1 - b) x the embeddings'
    cosine + b x the probabilities' (docs/results.md: the full-ranking mAP counts scenes that
    share any label, which the probabilities rank and the embedding does not). b = 0: the
    embeddings as they are."""
    if label_blend <= 0:
        return embeddings
    norms = np.linalg.norm(probabilities, axis=1, keepdims=True)
    unit = probabilities / np.maximum(norms, 1e-12)
    joined = np.hstack([np.sqrt(1 - label_blend) * embeddings, np.sqrt(label_blend) * unit])
    return joined.astype(np.float32)


def prepared_batches(
    images: Iterable[tuple[Any, np.ndarray]], *, input_size: int, batch_size: int
) -> Iterator[tuple[list[Any], np.ndarray]]:
    """(key, image) pairs -> (keys, uint8 (B, 3, S, S) batch), resized in a background
    thread ahead of the network (`prefetch`)."""

    def prepared() -> Iterator[tuple[list[Any], np.ndarray]]:
        for chunk in batched(images, batch_size):
            yield (
                [key for key, _ in chunk],
                uint8_batch([image for _, image in chunk], input_size),
            )

    return prefetch(prepared())


def run_batched(
    module: Callable[[torch.Tensor], torch.Tensor],
    images: Iterable[tuple[Any, np.ndarray]],
    *,
    input_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    device: torch.device,
    batch_size: int,
) -> Iterator[BatchOutput]:
    """Run `module` (a backbone, say) over (key, image) pairs, yielding outputs batch by
    batch (on CPU)."""
    import torch

    with torch.inference_mode():
        for positions, batch in prepared_batches(
            images, input_size=input_size, batch_size=batch_size
        ):
            inputs = normalize(torch.from_numpy(batch).to(device, non_blocking=True), mean, std)
            yield BatchOutput(positions, module(inputs).float().cpu())


def run_engine(
    engine: CpuEngine,
    images: Iterable[tuple[Any, np.ndarray]],
    *,
    input_size: int,
    batch_size: int,
) -> Iterator[BatchOutput]:
    """`run_batched` for a CPU engine (model/engine.py) whose graph normalises its uint8
    input itself: yields its first output batch by batch."""
    import torch

    for positions, batch in prepared_batches(images, input_size=input_size, batch_size=batch_size):
        yield BatchOutput(positions, torch.from_numpy(engine.run(batch)[0]))
