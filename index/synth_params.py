"""A generative model of a real archive's vectors, fitted once and kept as a small file, from
which `grn synth` draws archives of any size (docs/scaling.md, "Synthetic archives").

What it models, for one served model (its version is recorded; vectors of another model
would mean nothing to it):

- the vectors the index ranks by (the model's embedding, joined with the label
  probabilities for a model with a label blend) as a mixture: spherical k-means clusters of
  the real vectors, each scene its cluster's centre plus a within-cluster deviation drawn
  from the real deviations' principal directions and scales (and isotropic noise for the
  rest), times a `spread` fitted so that IVF's recall curve matches the real one;
- the backbone descriptors (re-ranking, `model.rerank`) in the same draw: their principal
  components are modelled jointly with the vectors' deviations, so scenes near in one are
  near in the other, as real ones are;
- labels, folder, split and image of each scene: those of a real member of the cluster it is
  drawn from (so label co-occurrence, and what a label filter keeps, are the real archive's,
  and the thumbnail shows a scene with those labels); label probabilities follow the drawn
  vector's probability part, scaled as the member's were.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = 1
CHUNK = 1 << 15
DEFAULT_PARAMS = Path(__file__).resolve().parents[1] / "model/defaults/ucm-head.synth.npz"
"""Fitted to UCM's 2100 scenes with make run's model (`bench.synth_fit`)."""


class SynthParamsError(ValueError):
    """A parameter file that cannot serve this model or cannot be read."""


@dataclass
class SynthParams:
    model_version: str
    label_blend: float
    label_names: list[str]
    centres: np.ndarray
    """(K, V) float32: the clusters' mean ranking vectors."""
    descriptor_centres: np.ndarray
    """(K, R) float32: the clusters' mean descriptors in the descriptor basis."""
    member_cluster: np.ndarray
    """(M,) int32: the cluster of each real scene."""
    member_labels: np.ndarray
    """(M, L) uint8: each real scene's labels."""
    member_probabilities: np.ndarray
    """(M, L) float32: the model's label probabilities of each real scene."""
    member_folders: np.ndarray
    member_splits: np.ndarray
    member_images: np.ndarray
    """Each real scene's image file, relative to its archive's root."""
    descriptor_mean: np.ndarray
    """(F,) float32."""
    descriptor_basis: np.ndarray
    """(F, R) float32, orthonormal columns."""
    deviation_basis: np.ndarray
    """(V + R, Q) float32: principal directions of the within-cluster deviations (vector
    part, then descriptor coordinates)."""
    deviation_scales: np.ndarray
    """(Q,) float32: their standard deviations."""
    vector_noise: float
    """Per-coordinate standard deviation of the vectors' deviation off those directions."""
    coordinate_noise: float
    """The same for the descriptor coordinates."""
    descriptor_noise: float
    """Per-coordinate standard deviation of the descriptors off their basis (the real one,
    then fitted with `descriptor_spread`)."""
    spread: float = 1.0
    """Deviations are drawn at this multiple of the real ones (fitted to IVF's recall)."""
    descriptor_spread: float = 1.0
    """The same multiple for the descriptors' part (fitted to their neighbours' profile)."""
    fitted_on: str = ""
    """What the parameters were fitted on, in words."""

    @property
    def vector_dim(self) -> int:
        return int(self.centres.shape[1])

    @property
    def descriptor_dim(self) -> int:
        return int(self.descriptor_mean.shape[0])

    def check_model(self, version: str, vector_dim: int) -> None:
        """Refuse to draw vectors for another model than the one the fit was made with."""
        if version != self.model_version or vector_dim != self.vector_dim:
            raise SynthParamsError(
                f"the synthetic parameters were fitted to model {self.model_version} "
                f"({self.vector_dim}-d vectors), not to {version} ({vector_dim}-d); fit them "
                "to this model with `python -m bench.synth_fit --model RUN --out FILE` and "
                "pass --params FILE"
            )

    def save(self, path: str | Path) -> None:
        meta: dict[str, Any] = {"format": FORMAT}
        arrays: dict[str, np.ndarray] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                small = value.dtype == np.float32 and f.name == "descriptor_basis"
                arrays[f.name] = value.astype(np.float16) if small else value
            else:
                meta[f.name] = value
        arrays["meta"] = np.asarray(json.dumps(meta))
        with Path(path).open("wb") as handle:
            np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> SynthParams:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (OSError, ValueError) as exc:
            raise SynthParamsError(f"cannot read synthetic parameters {path}: {exc}") from exc
        meta = json.loads(str(arrays.pop("meta")))
        if meta.pop("format", None) != FORMAT:
            raise SynthParamsError(f"{path} is not a synthetic parameter file of format {FORMAT}")
        arrays["descriptor_basis"] = arrays["descriptor_basis"].astype(np.float32)
        return cls(**meta, **arrays)


def fit_params(
    vectors: np.ndarray,
    probabilities: np.ndarray,
    descriptors: np.ndarray,
    labels: np.ndarray,
    *,
    folders: np.ndarray,
    splits: np.ndarray,
    images: np.ndarray,
    model_version: str,
    label_blend: float,
    label_names: list[str],
    clusters: int,
    descriptor_rank: int = 48,
    deviation_rank: int = 32,
    seed: int = 0,
    fitted_on: str = "",
) -> SynthParams:
    """Fit the model above to real scenes (one row each: unit ranking vectors, label
    probabilities, unit descriptors, 0/1 labels, folder, split, image); `spread` is left at
    1 (`bench.synth_fit` fits it to IVF's recall curve)."""
    import faiss

    vectors = np.asarray(vectors, np.float32)
    descriptors = np.asarray(descriptors, np.float32)
    mean = descriptors.mean(axis=0)
    centred = descriptors - mean
    _, _, rows = np.linalg.svd(centred, full_matrices=False)
    basis = rows[:descriptor_rank].T.astype(np.float32)
    coordinates = centred @ basis
    descriptor_noise = float(np.sqrt(np.mean(np.square(centred - coordinates @ basis.T))))

    kmeans = faiss.Kmeans(vectors.shape[1], clusters, niter=30, seed=seed, spherical=True)
    kmeans.train(vectors)
    _, assigned = kmeans.index.search(vectors, 1)
    used, member_cluster = np.unique(assigned[:, 0], return_inverse=True)
    centres = np.stack([vectors[member_cluster == k].mean(axis=0) for k in range(len(used))])
    descriptor_centres = np.stack(
        [coordinates[member_cluster == k].mean(axis=0) for k in range(len(used))]
    )
    deviations = np.hstack(
        [vectors - centres[member_cluster], coordinates - descriptor_centres[member_cluster]]
    )
    _, singular, directions = np.linalg.svd(deviations, full_matrices=False)
    deviation_basis = directions[:deviation_rank].T.astype(np.float32)
    rest = deviations - (deviations @ deviation_basis) @ deviation_basis.T
    dim = vectors.shape[1]
    return SynthParams(
        model_version=model_version,
        label_blend=float(label_blend),
        label_names=list(label_names),
        centres=centres.astype(np.float32),
        descriptor_centres=descriptor_centres.astype(np.float32),
        member_cluster=member_cluster.astype(np.int32),
        member_labels=np.asarray(labels, np.uint8),
        member_probabilities=np.asarray(probabilities, np.float32),
        member_folders=np.asarray(folders, str),
        member_splits=np.asarray(splits, str),
        member_images=np.asarray(images, str),
        descriptor_mean=mean.astype(np.float32),
        descriptor_basis=basis,
        deviation_basis=deviation_basis,
        deviation_scales=(singular[:deviation_rank] / np.sqrt(len(vectors) - 1)).astype(
            np.float32
        ),
        vector_noise=float(np.sqrt(np.mean(np.square(rest[:, :dim])))),
        coordinate_noise=float(np.sqrt(np.mean(np.square(rest[:, dim:])))),
        descriptor_noise=descriptor_noise,
        fitted_on=fitted_on,
    )


@dataclass
class Drawn:
    members: np.ndarray
    """(n,) the real scene each synthetic one takes its labels, folder and image from."""
    vectors: np.ndarray
    """(n, V) float32 unit ranking vectors."""
    probabilities: np.ndarray
    """(n, L) float32."""
    descriptors: np.ndarray | None
    """(n, F) float16 unit descriptors (None when not asked for)."""


def _unit(rows: np.ndarray) -> np.ndarray:
    return rows / np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)


def draw(
    params: SynthParams, count: int, rng: np.random.Generator, *, descriptors: bool = True
) -> Drawn:
    """`count` synthetic scenes (draw large archives in chunks: memory grows with count)."""
    members = rng.integers(0, len(params.member_cluster), count)
    cluster = params.member_cluster[members]
    dim, rank = params.vector_dim, params.descriptor_centres.shape[1]
    spread = params.spread
    weights = rng.standard_normal((count, len(params.deviation_scales)), dtype=np.float32)
    deviation = (weights * params.deviation_scales) @ params.deviation_basis.T
    noise = rng.standard_normal((count, dim), dtype=np.float32)
    vectors = _unit(
        params.centres[cluster]
        + (deviation[:, :dim] + noise * params.vector_noise) * spread
    ).astype(np.float32)
    probabilities = params.member_probabilities[members].copy()
    labels = len(params.label_names)
    if params.label_blend > 0:  # the vector's probability part, at the member's length
        part = np.clip(vectors[:, dim - labels :], 0.0, None)
        length = np.linalg.norm(params.member_probabilities[members], axis=1, keepdims=True)
        probabilities = np.clip(_unit(part) * length, 0.0, 1.0).astype(np.float32)
    described = None
    if descriptors:
        noise = rng.standard_normal((count, rank), dtype=np.float32)
        coordinates = params.descriptor_centres[cluster] + (
            deviation[:, dim:] + noise * params.coordinate_noise
        ) * params.descriptor_spread
        full = params.descriptor_mean + coordinates @ params.descriptor_basis.T
        full += rng.standard_normal(full.shape, dtype=np.float32) * params.descriptor_noise
        described = _unit(full).astype(np.float16)
    return Drawn(members, vectors, probabilities, described)


def draw_chunks(
    params: SynthParams, count: int, seed: int, *, descriptors: bool = True, chunk: int = CHUNK
) -> Any:
    """`draw` over `count` scenes, `chunk` at a time, from one seeded stream: yields
    (first row, Drawn)."""
    rng = np.random.default_rng(seed)
    for first in range(0, count, chunk):
        yield first, draw(params, min(chunk, count - first), rng, descriptors=descriptors)
