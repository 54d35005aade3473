"""Turning images into network inputs, and running a network over many images fast.

Preprocessing is the card's: resize to `input_size` x `input_size` (bilinear, antialiased),
scale to [0, 1], normalise with the card's mean and std. On a CPU the network runs in
channels-last layout under `torch.inference_mode`, in small batches, while a background thread
decodes the next images: the fastest settings measured on a 2-core machine.

`predict` is the one forward pass of a trained GRN network (decoded images in, unit
embeddings and label probabilities out): the server's batcher, the indexing jobs, the Ray
pipeline and evaluation all call it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

if TYPE_CHECKING:
    from model.card import ModelCard
    from model.network import GRNNet

T = TypeVar("T")


def to_uint8_tensor(image: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 array -> (3, size, size) uint8 tensor."""
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")  # decoders may hand out read-only buffers
    tensor = torch.from_numpy(image).permute(2, 0, 1)
    if tensor.shape[1:] != (size, size):
        tensor = TF.resize(tensor, [size, size], antialias=True)
    return tensor.contiguous()


def prepare_batch(images: Sequence[np.ndarray], size: int) -> torch.Tensor:
    """Decoded (H, W, 3) uint8 images -> one (B, 3, size, size) uint8 batch."""
    return torch.stack([to_uint8_tensor(image, size) for image in images])


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0, 1] float (B, 3, H, W) -> normalised float in channels-last layout."""
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


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when there is a GPU, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def default_batch_size(device: torch.device) -> int:
    # On a CPU, small batches stay in cache and beat large ones (measured on 2 cores).
    return 128 if device.type == "cuda" else 8


def decode_workers(device: torch.device) -> int:
    """Threads that decode images ahead of the network: one on a CPU (the cores are busy with
    the network), most of the cores when a GPU does the network's work."""
    return min(8, max(1, (os.cpu_count() or 1) - 1)) if device.type == "cuda" else 1


def configure_cpu_threads() -> None:
    """Use every core for intra-op parallelism unless the user chose otherwise."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)


@dataclass
class BatchOutput:
    positions: list[Any]
    """The keys that came with the images, in order."""
    outputs: torch.Tensor


@dataclass
class Prediction:
    embeddings: np.ndarray
    """(B, D) float32, unit norm."""
    probabilities: np.ndarray
    """(B, labels) float32: the sigmoid of the classifier's logits."""


def predict(
    net: GRNNet,
    card: ModelCard,
    images: Sequence[np.ndarray] | torch.Tensor,
    device: torch.device,
) -> Prediction:
    """The forward pass of a trained network: decoded (H, W, 3) uint8 images (or a batch
    from `prepare_batch`) -> resized to the card's input size, normalised with its mean and
    std -> network -> unit embeddings and label probabilities, as numpy arrays."""
    batch = images if isinstance(images, torch.Tensor) else prepare_batch(images, card.input_size)
    with torch.inference_mode():
        out = net(normalize(batch.to(device, non_blocking=True), card.mean, card.std))
        return Prediction(
            out.embedding.float().cpu().numpy(),
            torch.sigmoid(out.logits).float().cpu().numpy(),
        )


def prepared_batches(
    images: Iterable[tuple[Any, np.ndarray]], *, input_size: int, batch_size: int
) -> Iterator[tuple[list[Any], torch.Tensor]]:
    """(key, image) pairs -> (keys, uint8 batch), resized in a background thread ahead of
    the network (`prefetch`)."""

    def prepared() -> Iterator[tuple[list[Any], torch.Tensor]]:
        for chunk in batched(images, batch_size):
            yield (
                [key for key, _ in chunk],
                prepare_batch([image for _, image in chunk], input_size),
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
    with torch.inference_mode():
        for positions, batch in prepared_batches(
            images, input_size=input_size, batch_size=batch_size
        ):
            inputs = normalize(batch.to(device, non_blocking=True), mean, std)
            yield BatchOutput(positions, module(inputs).float().cpu())
