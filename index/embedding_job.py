"""The embedding job: an archive streamed through a model into resumable shards.

Shards live under `WORK/<model version>/<scene list digest>-<shard size>[-d]/`, so embeddings
of two model versions (or two scene lists) can never mix; `-d`: the shards also hold the
scenes' backbone descriptors (`model.rerank`). Each shard (`shard-00000.npz`: ids,
embeddings, probabilities[, descriptors]) is written to a temporary name and renamed when
complete; a job that is killed resumes at the first missing shard and never recomputes a
finished one.
`job.json` records what the shards were made from. Once every shard is written, their rows
are gathered into one file per matrix (`rows-embeddings.npy`, ...), which the result reads
on demand (`index.row_files`): the job's memory does not grow with the number of scenes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from index.embedded import EmbeddingResult, scene_list_digest
from index.row_files import RowsWriter
from index.vectors import VectorFile
from model.archive import Archive, BrokenFile
from model.card import ModelCard
from model.embedding import embed_scenes
from model.faults import kill_point
from model.rerank import DTYPE as DESCRIPTOR_DTYPE

if TYPE_CHECKING:
    import torch

    from model.network import GRNNet

DEFAULT_SHARD_SIZE = 1024


class EmbeddingJobError(RuntimeError):
    """A shard folder does not belong to the job that asked for it."""


def save_shard(path: Path, ids: np.ndarray, **rows: np.ndarray) -> None:
    """Write a shard whole or not at all: under a temporary name, then renamed."""
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    arrays: dict[str, Any] = {"ids": ids, **rows}
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def job_folder(
    work_dir: str | Path,
    card: ModelCard,
    ids: Sequence[int],
    names: Sequence[str],
    shard_size: int,
    descriptors: bool,
) -> Path:
    """The shard folder of a job (made, with its `job.json`, when new). Raises
    `EmbeddingJobError` when the folder holds another job's shards."""
    scenes = scene_list_digest(ids, names)
    job = {
        "model_version": card.version,
        "embedding_dim": card.vector_dim,
        "shard_size": shard_size,
        "count": len(ids),
        "scenes": scenes,
    }
    if descriptors:
        job["descriptors"] = True
    suffix = "-d" if descriptors else ""
    folder = Path(work_dir) / card.version / f"{scenes[:16]}-{shard_size}{suffix}"
    folder.mkdir(parents=True, exist_ok=True)
    job_file = folder / "job.json"
    if job_file.is_file():
        previous = json.loads(job_file.read_text())
        if previous != job:
            raise EmbeddingJobError(
                f"{folder} holds shards of another scene list or shard size; remove it or "
                "use another work folder"
            )
    else:
        tmp = job_file.with_name(".job.json.tmp")
        tmp.write_text(json.dumps(job, indent=2))
        os.replace(tmp, job_file)
    return folder


def run_embedding_job(
    net: GRNNet,
    card: ModelCard,
    archive: Archive,
    positions: Sequence[int],
    ids: Sequence[int],
    work_dir: str | Path,
    *,
    device: torch.device,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int | None = None,
    skip_broken: bool = False,
    progress: bool = True,
    ray_workers: int | None = None,
    ray_address: str | None = None,
    model_path: str | Path | None = None,
    descriptors: bool = False,
) -> EmbeddingResult:
    """Embed the scenes at `positions` (scene ids `ids`) into shards, resuming finished ones:
    in this process, or with `ray_workers` as a Ray Data pipeline of that many embedding
    actors that load the model file `model_path` (`index.ray_embed`: the cluster at
    `ray_address`, else at RAY_ADDRESS, else this machine; its Parquet files hold
    `shard_size` scenes or more).

    Broken files are skipped when `skip_broken` (their ids are left out of the result);
    otherwise the first one stops the job, keeping the shards finished so far. With
    `descriptors`, the scenes' backbone descriptors are kept too.
    """
    if len(positions) != len(ids):
        raise ValueError("positions and ids must have the same length")
    if ray_workers:
        if skip_broken:
            raise ValueError(
                "skipping broken files is not supported on Ray: a broken file stops the "
                "pipeline (run without --ray to find and skip them)"
            )
        if model_path is None:
            raise ValueError("embedding on Ray needs the model file (each actor loads it)")
        from index.ray_embed import ray_embedding_job

        return ray_embedding_job(
            model_path, card, archive, positions, ids, Path(work_dir), workers=ray_workers,
            device="cuda" if device.type == "cuda" else "cpu", descriptors=descriptors,
            rows_per_file=shard_size, address=ray_address,
        )  # fmt: skip
    names = archive.names_of(positions)
    folder = job_folder(work_dir, card, ids, names, shard_size, descriptors)
    broken: list[BrokenFile] = []
    computed = 0
    start = time.perf_counter()
    shards = []
    bar = tqdm(total=len(ids), desc="embed", unit="img", disable=not progress)
    for number, first in enumerate(range(0, len(ids), shard_size)):
        path = folder / f"shard-{number:05d}.npz"
        shards.append(path)
        shard_ids = np.asarray(ids[first : first + shard_size], dtype=np.int64)
        if not path.is_file():
            shard_positions = list(positions[first : first + shard_size])
            embedded = embed_scenes(
                net,
                card,
                archive,
                shard_positions,
                device=device,
                batch_size=batch_size,
                skip_broken=skip_broken,
                broken=broken,
                progress=False,
                descriptors=descriptors,
            )
            keep = {p: k for k, p in enumerate(shard_positions)}
            kept_ids = shard_ids[[keep[p] for p in embedded.positions]]
            extra = {"descriptors": embedded.descriptors} if descriptors else {}
            save_shard(
                path, kept_ids, embeddings=embedded.embeddings,
                probabilities=embedded.probabilities, **extra,  # type: ignore[arg-type]
            )  # fmt: skip
            kill_point(f"embed-shard:{number}")
            computed += len(embedded.positions)
        bar.update(len(shard_ids))
    bar.close()
    widths: dict[str, tuple[int, Any]] = {"embeddings": (card.vector_dim, np.float32),
              "probabilities": (len(card.label_names), np.float32)}  # fmt: skip
    if descriptors:
        widths["descriptors"] = (card.num_features, DESCRIPTOR_DTYPE)
    kept, rows = _rows_files(shards, folder, widths)
    return EmbeddingResult(
        ids=kept,
        embeddings=rows["embeddings"],
        probabilities=rows["probabilities"],
        model_version=card.version,
        computed=computed,
        seconds=time.perf_counter() - start,
        broken=broken,
        descriptors=rows.get("descriptors"),
    )


def _rows_files(
    shards: list[Path], folder: Path, widths: dict[str, tuple[int, Any]]
) -> tuple[np.ndarray, dict[str, VectorFile]]:
    """The shards' ids, and each matrix of theirs gathered into one `.npy` file in the folder,
    read on demand: a shard at a time is in memory, whatever the number of shards (the
    files are rewritten from the shards at each run, so a killed run leaves none half-used)."""
    ids = []
    for path in shards:
        with np.load(path) as shard:
            ids.append(shard["ids"])
    kept = np.concatenate(ids) if ids else np.zeros(0, np.int64)
    writers = {
        name: RowsWriter(folder / f"rows-{name}.npy", len(kept), width, dtype)
        for name, (width, dtype) in widths.items()
    }
    for path in shards:
        with np.load(path) as shard:
            for name, writer in writers.items():
                writer.add(shard[name])
    for writer in writers.values():
        writer.close()
    return kept, {name: VectorFile(writer.path) for name, writer in writers.items()}
