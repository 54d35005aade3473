"""Exact inner-product search with torch: on any GPU torch sees, without faiss-gpu.

The archive's vectors live on the device; a batch of queries is scored against it in chunks
(a matrix product, then top-k per chunk, then a merge of the chunk winners), so the
queries x archive score matrix never exists whole. Results are the ids and scores of FAISS
`Flat` on the same vectors (up to floating-point rounding and the order of exact ties).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from index.results import IndexSearchError, SearchResult, check_k


class TorchExactIndex:
    def __init__(
        self,
        ids: np.ndarray,
        vectors: np.ndarray,
        device: torch.device | str = "cuda",
        chunk_size: int = 1 << 20,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if len(ids) != len(vectors):
            raise ValueError("ids and vectors must have the same length")
        self.device = torch.device(device)
        self.ids = torch.as_tensor(np.asarray(ids, dtype=np.int64), device=self.device)
        self.vectors = torch.as_tensor(np.asarray(vectors), device=self.device, dtype=dtype)
        self.chunk_size = chunk_size

    @property
    def ntotal(self) -> int:
        return len(self.ids)

    @property
    def d(self) -> int:
        return int(self.vectors.shape[1])

    @torch.inference_mode()
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allow_ids: Sequence[int] | np.ndarray | None = None,
    ) -> SearchResult:
        check_k(k)
        q = torch.as_tensor(np.atleast_2d(queries), device=self.device, dtype=self.vectors.dtype)
        if q.shape[1] != self.d:
            raise IndexSearchError(f"queries have {q.shape[1]} dimensions, the index {self.d}")
        allowed = None
        if allow_ids is not None:
            wanted = torch.as_tensor(np.asarray(allow_ids, dtype=np.int64), device=self.device)
            allowed = torch.isin(self.ids, wanted)
        best_scores = torch.full((len(q), 0), float("-inf"), device=self.device)
        best_rows = torch.zeros((len(q), 0), dtype=torch.int64, device=self.device)
        for start in range(0, self.ntotal, self.chunk_size):
            chunk = self.vectors[start : start + self.chunk_size]
            scores = (q @ chunk.T).float()
            if allowed is not None:
                scores = scores.masked_fill(~allowed[start : start + len(chunk)], float("-inf"))
            top = torch.topk(scores, min(k, len(chunk)), dim=1)
            best_scores = torch.cat([best_scores, top.values], dim=1)
            best_rows = torch.cat([best_rows, top.indices + start], dim=1)
            if best_scores.shape[1] > k:
                merged = torch.topk(best_scores, k, dim=1)
                best_scores = merged.values
                best_rows = torch.gather(best_rows, 1, merged.indices)
        order = torch.argsort(best_scores, dim=1, descending=True, stable=True)
        best_scores = torch.gather(best_scores, 1, order)
        best_rows = torch.gather(best_rows, 1, order)
        ids = torch.where(torch.isinf(best_scores), -1, self.ids[best_rows])
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        width = ids.shape[1]
        out_ids[:, :width] = ids.cpu().numpy()
        out_scores[:, :width] = best_scores.cpu().numpy()
        return SearchResult(out_ids, out_scores)
