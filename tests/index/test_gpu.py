"""FAISS on GPUs: runs where faiss-gpu and a GPU exist, and checks the CPU-only behaviour
everywhere else."""

from __future__ import annotations

import numpy as np
import pytest

from index.gpu import gpu_count, to_gpus
from index.synthetic import clustered_unit_vectors
from index.vectors import SearchSettings, build_index, exact_search, recall_at_k, search


def test_without_a_gpu_the_error_says_what_to_do() -> None:
    if gpu_count() > 0:
        pytest.skip("this machine has a GPU for FAISS")
    index = build_index("Flat", np.arange(10), clustered_unit_vectors(10, 16, centres=2))
    with pytest.raises(RuntimeError, match="faiss-gpu"):
        to_gpus(index)


@pytest.mark.skipif(gpu_count() == 0, reason="needs faiss-gpu and an NVIDIA GPU")
@pytest.mark.parametrize("factory", ["Flat", "IVF64,Flat"])
def test_gpu_index_gives_the_cpu_results(factory: str) -> None:
    data = clustered_unit_vectors(10_100, 64, centres=100, seed=3)
    vectors, queries = data[:10_000], data[10_000:]
    ids = np.arange(10_000, dtype=np.int64) * 3
    cpu = build_index(factory, ids, vectors)
    gpu = to_gpus(cpu)
    settings = SearchSettings(nprobe=64)
    a = search(cpu, queries, 10, settings=settings)
    b = search(gpu, queries, 10, settings=settings)
    truth = exact_search(vectors, ids, queries, 10)
    assert recall_at_k(b.ids, a.ids, 10) >= 0.99
    assert recall_at_k(b.ids, truth.ids, 10) >= 0.95
