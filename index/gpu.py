"""FAISS indexes on GPUs (when faiss-gpu and a GPU are present) and sharded copies.

`faiss-cpu` is the default install; the `gpu` extra (and the CUDA image) installs
`faiss-gpu-cu12` instead. With it, `to_gpus` clones an index onto every visible GPU, sharded
across them (each card holds a slice of the vectors) when one card cannot hold it all, else
replicated. Search results match the CPU index's.

Known FAISS limits that callers must respect: GPU indexes and sharded indexes (IndexShards,
IndexShardsIVF) do not honour id selectors (a selector is ignored, fails, or empties the
result, depending on the index), and HNSW has no GPU version. So such a copy only answers
unfiltered queries: `index.stores.faiss.Searcher` and `FaissCollection` keep the CPU
index beside it for filtered ones. `cpu_shards` makes a sharded copy on CPU threads, which has
the same limit, so that routing is tested on machines without a GPU.
"""

from __future__ import annotations

import faiss
import numpy as np

from index.vectors import SearchSettings, find_hnsw, find_ivf, stored_ids


def gpu_count() -> int:
    """GPUs FAISS can use: 0 with faiss-cpu, or with faiss-gpu on a machine without a GPU."""
    get = getattr(faiss, "get_num_gpus", None)
    return int(get()) if get is not None else 0


def can_use_gpu(index: faiss.Index) -> bool:
    return gpu_count() > 0 and find_hnsw(index) is None


def to_gpus(index: faiss.Index, shard: bool = True) -> faiss.Index:
    """A copy of `index` on all GPUs (sharded by default). Raises when there is none."""
    if gpu_count() == 0:
        raise RuntimeError(
            "no GPU for FAISS: install the gpu extra (faiss-gpu-cu12 in place of faiss-cpu) "
            "on a machine with an NVIDIA GPU, or use index.torch_exact for exact search"
        )
    if find_hnsw(index) is not None:
        raise ValueError("HNSW indexes have no GPU version in FAISS")
    options = faiss.GpuMultipleClonerOptions()
    options.shard = shard
    options.useFloat16 = False
    return faiss.index_cpu_to_all_gpus(index, co=options)


def cpu_shards(index: faiss.Index, shards: int) -> faiss.Index:
    """An exact (Flat) index split into `shards` slices searched on CPU threads: FAISS's
    IndexShards, which merges the slices' top-k."""
    inner = faiss.downcast_index(index)
    flat = faiss.downcast_index(inner.index) if isinstance(inner, faiss.IndexIDMap) else None
    if not isinstance(flat, faiss.IndexFlat):
        raise ValueError("cpu_shards splits Flat indexes (IndexIDMap over IndexFlat) only")
    ids = stored_ids(index)
    vectors = flat.reconstruct_n(0, flat.ntotal)
    sharded = faiss.IndexShards(index.d, True, False)
    parts = []
    for rows in np.array_split(np.arange(len(ids)), shards):
        part = faiss.IndexIDMap(faiss.IndexFlat(index.d, index.metric_type))
        part.add_with_ids(vectors[rows], ids[rows])
        sharded.add_shard(part)
        parts.append(part)
    sharded.referenced_objects = parts  # the shards live as long as the sharded index
    return sharded


def configure_copy(copy: faiss.Index, original: faiss.Index, settings: SearchSettings) -> None:
    """Search settings on a GPU or sharded copy (their IVF is not a CPU `IndexIVF`)."""
    if find_ivf(original) is None:
        return
    space = faiss.GpuParameterSpace() if gpu_count() > 0 else faiss.ParameterSpace()
    space.set_index_parameter(copy, "nprobe", settings.nprobe)
