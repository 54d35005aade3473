"""Embedding a huge archive with Ray Data: read and decode on CPU workers, embed in actors
(one GPU each where there are GPUs), write Parquet shards; resumable.

`ray.init()` starts Ray on this machine by default; given a cluster's address (`address`,
`grn ... --ray-address`, GRN_RAY_ADDRESS) or with `RAY_ADDRESS` set, the same call joins that
cluster, so the same command runs on one machine or many (`index.ray_cluster` starts a
cluster of several nodes on one host). Each output shard is a
Parquet file of (id, embedding, probabilities); a run that was stopped leaves the shards it
finished, and the next run embeds only the scenes not in them (Ray writes each file whole,
under a unique name, when its block is done).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from index.embedded import EmbeddingResult, scene_list_digest
from index.ray_cluster import is_loopback, keep_loopback
from model.archive import Archive, load_archive, scene_id
from model.card import ModelCard, load_model, read_card
from model.imageio import read_image
from model.inference import predict
from model.rerank import DTYPE as DESCRIPTOR_DTYPE
from model.rerank import no_descriptors

ROWS_PER_FILE = 1024
"""Scenes per Parquet file at least: what a killed run may lose, as the plain job's shards."""


@dataclass
class RayEmbedReport:
    embedded: int
    skipped: int
    """Already in the output folder (resumed)."""
    seconds: float
    workers: int

    @property
    def images_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0


class RayAddressError(ValueError):
    """Nothing answers at the Ray cluster address given."""


def check_address(address: str | None) -> None:
    """A one-line error within seconds when nothing answers at a Ray cluster address
    (`host:port` of its head, or `ray://host:port` through Ray Client); Ray itself would
    retry for a minute. None and `auto` are left to Ray."""
    if address is None or address == "auto":
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not port.isdigit():
        raise RayAddressError(
            f"{address!r} is not a Ray cluster address: give the head's host:port, as "
            "`ray start --head` prints it, in --ray-address or GRN_RAY_ADDRESS"
        )
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=5).close()
    except OSError as exc:
        raise RayAddressError(f"no Ray cluster answers at {address} ({exc})") from exc


def join(address: str | None) -> None:
    """Join the Ray cluster at `address` (see `check_address`); None: start Ray on this
    machine. A loopback address is kept as given (`index.ray_cluster.keep_loopback`)."""
    import ray

    if ray.is_initialized():
        return
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False)
        return
    check_address(address)
    if is_loopback(address):
        keep_loopback()
    ray.init(address=address, log_to_driver=False)


def finished_ids(out: Path) -> set[int]:
    """Scene ids already in the folder's Parquet shards."""
    import pyarrow.parquet as pq

    done: set[int] = set()
    for path in sorted(out.glob("*.parquet")):
        done.update(pq.read_table(path, columns=["id"]).column("id").to_pylist())
    return done


class _Embedder:
    """A Ray actor: the model loaded once, batches of decoded images in, vectors out."""

    def __init__(self, model_path: str, device: str) -> None:
        import torch

        self.torch = torch
        self.net, self.card = load_model(model_path, device)
        self.net = self.net.to(memory_format=torch.channels_last)
        self.device = device

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        images = [
            np.asarray(pixels, dtype=np.uint8).reshape(shape)
            for pixels, shape in zip(batch["pixels"], batch["shape"], strict=True)
        ]
        out = predict(self.net, self.card, images, self.torch.device(self.device))
        return {
            "id": np.asarray(batch["id"], dtype=np.int64),
            "embedding": list(out.embeddings),
            "probabilities": list(out.probabilities),
            "descriptors": list(out.descriptors.astype(DESCRIPTOR_DTYPE)),
        }


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    pixels = read_image(row["path"])
    return {"id": row["id"], "pixels": pixels.reshape(-1), "shape": np.asarray(pixels.shape)}


def ray_embed(
    model_path: str | Path,
    archive_dir: str | Path,
    out: str | Path,
    *,
    labels_csv: str | Path | None = None,
    workers: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
    address: str | None = None,
    rows_per_file: int = ROWS_PER_FILE,
) -> RayEmbedReport:
    """Embed every scene of the archive not yet in `out` (Parquet files of `rows_per_file`
    scenes or more), with `workers` embedding actors (one GPU each when `device` is cuda),
    on the cluster at `address`."""
    check_address(address)  # clear errors before Ray starts
    read_card(model_path)
    archive = load_archive(archive_dir, labels_csv)
    items = [(scene_id(s.name), str(s.path)) for s in archive.scenes]
    return embed_items(
        model_path, items, out, workers=workers, batch_size=batch_size, device=device,
        address=address, rows_per_file=rows_per_file,
    )  # fmt: skip


def embed_items(
    model_path: str | Path,
    items: Sequence[tuple[int, str]],
    out: str | Path,
    *,
    workers: int = 1,
    batch_size: int = 8,
    device: str = "cpu",
    rows_per_file: int = ROWS_PER_FILE,
    address: str | None = None,
) -> RayEmbedReport:
    """Embed the (scene id, image path) items not yet in `out` on Ray (the cluster at
    `address`, else at RAY_ADDRESS, else this machine), into Parquet files of at least
    `rows_per_file` scenes each (the last may hold fewer)."""
    import ray

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    done = finished_ids(out)
    todo = [{"id": int(i), "path": path} for i, path in items if int(i) not in done]
    start = time.perf_counter()
    if todo:
        join(address or os.environ.get("RAY_ADDRESS"))
        dataset = ray.data.from_items(todo).map(_decode)
        embedded = dataset.map_batches(
            _Embedder,
            fn_constructor_args=(str(Path(model_path).resolve()), device),
            batch_size=batch_size,
            concurrency=workers,
            num_gpus=1 if device.startswith("cuda") else 0,
        )
        # files of `rows_per_file` scenes, not one per batch: 100,000 scenes in batches of 8
        # made 12,500 files to list, open and read back (docs/scaling.md)
        embedded.write_parquet(str(out), min_rows_per_file=rows_per_file)
    return RayEmbedReport(len(todo), len(items) - len(todo), time.perf_counter() - start, workers)


def ray_embedding_job(
    model_path: str | Path,
    card: ModelCard,
    archive: Archive,
    positions: Sequence[int],
    ids: Sequence[int],
    work: Path,
    *,
    workers: int = 1,
    device: str = "cpu",
    batch_size: int = 8,
    descriptors: bool = False,
    rows_per_file: int = ROWS_PER_FILE,
    address: str | None = None,
) -> EmbeddingResult:
    """The indexing job's embedding step on Ray: the scenes at `positions` (with `ids`) into
    Parquet shards under `WORK/<model version>/ray-<scene list digest>/` (resumable; two
    models or scene lists never share a folder), returned in the order given; with
    `descriptors`, the scenes' backbone descriptors too (None when shards from before they
    were written lack them)."""
    digest = scene_list_digest(ids, archive.names_of(positions))
    folder = work / card.version / f"ray-{digest[:16]}"
    items = [(int(i), str(archive.scenes[p].path)) for p, i in zip(positions, ids, strict=True)]
    report = embed_items(
        model_path, items, folder, workers=workers, batch_size=batch_size, device=device,
        rows_per_file=rows_per_file, address=address,
    )  # fmt: skip
    wanted = np.asarray(ids, dtype=np.int64)
    described: np.ndarray | None = no_descriptors(card) if descriptors else None
    if len(wanted):
        tables = _tables(folder)
        found, embeddings, probabilities = _embeddings_of(tables)
        rows = np.clip(np.searchsorted(found, wanted), 0, len(found) - 1)
        missing = wanted[found[rows] != wanted]
        if len(missing):
            raise RuntimeError(
                f"the Ray pipeline left {len(missing)} scenes unembedded in {folder} "
                f"(scene id {int(missing[0])} first); run the job again to resume"
            )
        embeddings, probabilities = embeddings[rows], probabilities[rows]
        if descriptors:
            found_descriptors = _descriptors_of(tables)
            described = None if found_descriptors is None else found_descriptors[rows]
    else:
        embeddings = np.zeros((0, card.vector_dim), dtype=np.float32)
        probabilities = np.zeros((0, len(card.label_names)), dtype=np.float32)
    return EmbeddingResult(
        ids=wanted,
        embeddings=embeddings,
        probabilities=probabilities,
        model_version=card.version,
        computed=report.embedded,
        seconds=report.seconds,
        broken=[],
        descriptors=described,
    )


def _tables(out: str | Path) -> list[Any]:
    import pyarrow.parquet as pq

    return [pq.read_table(path) for path in sorted(Path(out).glob("*.parquet"))]


def read_embeddings(out: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, embeddings, probabilities) from a folder of shards, sorted by id."""
    return _embeddings_of(_tables(out))


def _embeddings_of(tables: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = _ids_of(tables)
    embeddings = _column_matrix(tables, "embedding", np.float32)
    probabilities = _column_matrix(tables, "probabilities", np.float32)
    order = np.argsort(ids)
    return ids[order], embeddings[order], probabilities[order]


def _ids_of(tables: list[Any]) -> np.ndarray:
    return np.concatenate([t.column("id").to_numpy() for t in tables]).astype(np.int64)


def _column_matrix(tables: list[Any], column: str, dtype: Any) -> np.ndarray:
    """A column of fixed-width rows (Ray's tensor extension type, or the list type it is
    stored as) as one (rows, width) array, straight from Arrow's buffers: no Python object
    per value (`to_pylist` made one per float: 1,280 a scene for the descriptors)."""
    import pyarrow as pa

    parts = []
    for table in tables:
        values = table.column(column).combine_chunks()
        if isinstance(values, pa.ExtensionArray):
            values = values.storage
        if len(values):
            flat = values.flatten().to_numpy(zero_copy_only=False)
            parts.append(flat.reshape(len(values), -1))
    return np.concatenate(parts).astype(dtype, copy=False)


def _descriptors_of(tables: list[Any]) -> np.ndarray | None:
    """The shards' backbone descriptors, sorted by id like `read_embeddings`; None when a
    shard lacks them (written before they were)."""
    if any("descriptors" not in t.column_names for t in tables):
        return None
    rows = _column_matrix(tables, "descriptors", DESCRIPTOR_DTYPE)
    return rows[np.argsort(_ids_of(tables))]
