"""Moving FAISS indexes onto GPUs when faiss-gpu and a GPU are present.

`faiss-cpu` is the default install; the `gpu` extra (and the CUDA image) installs
`faiss-gpu-cu12` instead. With it, `to_gpus` clones an index onto every visible GPU, sharded
across them (each card holds a slice of the vectors) when one card cannot hold it all, else
replicated. Search results match the CPU index's.

Known FAISS limits that callers must respect: GPU indexes ignore id selectors, so a filtered
search must run on the CPU index (or through `index.torch_exact`); HNSW has no GPU version.
"""

from __future__ import annotations

import faiss

from index.vectors import find_hnsw


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
