"""Embedding an archive's scenes with a trained model.

`embed_scenes` is the one place images go through a trained network in batch; `grn embed`
(`embed_archive`), `grn evaluate` and the indexing job all call it. On a CPU the network runs
through the engine `load_model` attached (model/engine.py), decoding overlapped in a
background thread.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from model import rerank
from model.archive import Archive, BrokenFile, iter_images, load_archive
from model.card import ModelCard, load_model
from model.engine import describe
from model.inference import (
    configure_cpu_threads,
    decode_workers,
    default_batch_size,
    predict,
    prepared_batches,
    resolve_device,
)
from model.rerank import DTYPE as DESCRIPTOR_DTYPE

if TYPE_CHECKING:
    import torch

    from model.network import GRNNet


@dataclass
class Embedded:
    positions: list[int]
    """Archive positions that were embedded (broken files left out when skipped)."""
    embeddings: np.ndarray
    probabilities: np.ndarray
    seconds: float
    engine: str = "torch"
    """What ran the network: torch, or the CPU engine (model/engine.py)."""
    descriptors: np.ndarray | None = None
    """(n, F) float16 unit backbone descriptors (`model.rerank`), when asked for."""

    @property
    def images_per_s(self) -> float:
        return len(self.positions) / self.seconds if self.seconds > 0 else 0.0


def embed_scenes(
    net: GRNNet,
    card: ModelCard,
    archive: Archive,
    positions: Sequence[int],
    *,
    device: torch.device,
    batch_size: int | None = None,
    skip_broken: bool = False,
    broken: list[BrokenFile] | None = None,
    progress: bool = True,
    descriptors: bool = False,
) -> Embedded:
    """Unit embeddings and label probabilities of archive scenes, in order; with
    `descriptors`, their backbone descriptors too."""
    net = net.to(device).eval()
    if describe(net) == "torch" or device.type != "cpu":  # torch runs the network
        import torch

        net = net.to(memory_format=torch.channels_last)
    kept: list[int] = []
    embeddings = [np.zeros((0, card.vector_dim), np.float32)]
    probabilities = [np.zeros((0, len(card.label_names)), np.float32)]
    described: list[np.ndarray] = []
    start = time.perf_counter()
    bar = tqdm(total=len(positions), desc="embed", unit="img", disable=not progress)
    stream = prepared_batches(
        iter_images(
            archive,
            positions,
            skip_broken=skip_broken,
            broken=broken,
            workers=decode_workers(device),
        ),
        input_size=card.input_size,
        batch_size=batch_size or default_batch_size(device),
    )
    for keys, batch in stream:
        out = predict(net, card, batch, device)
        kept.extend(keys)
        embeddings.append(out.embeddings)
        probabilities.append(out.probabilities)
        if descriptors:
            described.append(out.descriptors.astype(DESCRIPTOR_DTYPE))
        bar.update(len(keys))
    bar.close()
    seconds = time.perf_counter() - start
    return Embedded(
        kept,
        np.concatenate(embeddings),
        np.concatenate(probabilities),
        seconds,
        engine=describe(net) if device.type == "cpu" else "torch",
        descriptors=(
            np.concatenate([rerank.no_descriptors(card), *described]) if descriptors else None
        ),
    )


def save_embeddings(
    path: str | Path, archive: Archive, embedded: Embedded, card: ModelCard
) -> None:
    """An .npz anyone can read: names, embeddings (n x d, unit norm), probabilities."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(
        tmp,
        names=np.asarray(archive.names_of(embedded.positions)),
        embeddings=embedded.embeddings,
        probabilities=embedded.probabilities,
        label_names=np.asarray(card.label_names),
        model_version=np.asarray(card.version),
    )
    os.replace(tmp, path)


def embed_archive(
    model_path: str | Path,
    archive_dir: str | Path,
    out_file: str | Path,
    *,
    split: str = "all",
    labels_csv: str | Path | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    skip_broken: bool = False,
    progress: bool = True,
) -> tuple[Embedded, list[BrokenFile]]:
    """`grn embed`: embeddings and probabilities of one split into an .npz file."""
    torch_device = resolve_device(device)
    configure_cpu_threads(torch_network=torch_device.type == "cuda" or None)
    net, card = load_model(model_path, torch_device)
    archive = load_archive(archive_dir, labels_csv)
    broken: list[BrokenFile] = []
    embedded = embed_scenes(
        net,
        card,
        archive,
        archive.indices(split),
        device=torch_device,
        batch_size=batch_size,
        skip_broken=skip_broken,
        broken=broken,
        progress=progress,
    )
    save_embeddings(out_file, archive, embedded, card)
    return embedded, broken
