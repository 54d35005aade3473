"""A linear probe for few-shot concept search: a handful of scenes that show a concept (and
optionally some that do not) teach a direction in descriptor space, which then scores any
scene. Closed-form weighted ridge regression in its dual form (numpy only): with a few dozen
examples and a few hundred background scenes the solve is one small linear system, fast
enough for every round of an analyst's feedback.

The descriptor a scene is scored on is `probe_features`: the unit GRN embedding and the unit
backbone descriptor side by side, weighted so that their dot product is the re-rank's
blended cosine (`model.rerank`); the embedding alone where no descriptors are kept.

Background: scenes drawn from the archive stand for "anything else" (targets 0 with a small
total weight), so one positive and no negatives still give a direction (towards the
positive, away from the archive's centre) rather than an undetermined system.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

RIDGE = 1.0
"""The ridge penalty on the probe's weights, relative to the examples' weights."""
BACKGROUND_SHARE = 0.5
"""The background scenes' total weight, relative to the positives' total weight."""


@dataclass(frozen=True)
class Probe:
    """A fitted linear probe: score(x) = x @ weights + bias (about 1 for the concept, about
    0 for the rest)."""

    weights: np.ndarray
    bias: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """The probe's score of each row of `features`."""
        return np.asarray(features @ self.weights + self.bias, dtype=np.float32)

    @property
    def direction(self) -> np.ndarray:
        """The probe's weights on the unit sphere: a query vector for an index search."""
        norm = float(np.linalg.norm(self.weights))
        return np.asarray(self.weights / max(norm, 1e-12), dtype=np.float32)


def probe_features(
    embeddings: np.ndarray, descriptors: np.ndarray | None, weight: float
) -> np.ndarray:
    """The rows the probe scores: unit `embeddings` times sqrt(weight) beside unit
    `descriptors` times sqrt(1 - weight) (their dot product is the blended cosine), or the
    embeddings alone when `descriptors` is None."""
    if descriptors is None:
        return np.asarray(embeddings, dtype=np.float32)
    return np.hstack([np.sqrt(weight) * embeddings, np.sqrt(1 - weight) * descriptors]).astype(
        np.float32
    )


def fit_probe(positives: np.ndarray, negatives: np.ndarray, background: np.ndarray) -> Probe:
    """A probe fitted to `positives` (target 1), `negatives` (target 0) and `background`
    (target 0, together BACKGROUND_SHARE of the positives' weight): weighted ridge
    regression (penalty RIDGE), solved in the dual (examples x examples), bias unpenalised."""
    if not len(positives):
        raise ValueError("a probe needs at least one positive")
    rows = np.vstack([positives, negatives, background]).astype(np.float64)
    targets = np.concatenate(
        [np.ones(len(positives)), np.zeros(len(negatives)), np.zeros(len(background))]
    )
    per_background = BACKGROUND_SHARE * len(positives) / max(len(background), 1)
    weights = np.concatenate(
        [np.ones(len(positives)), np.ones(len(negatives)),
         np.full(len(background), per_background)]
    )  # fmt: skip
    mean = weights @ rows / weights.sum()
    target_mean = float(weights @ targets / weights.sum())
    centred, centred_targets = rows - mean, targets - target_mean
    gram = centred @ centred.T
    # (ridge I + S K) alpha = S y, w = X^T alpha: the weighted ridge normal equations
    system = RIDGE * np.eye(len(rows)) + weights[:, None] * gram
    alpha = np.linalg.solve(system, weights * centred_targets)
    direction = centred.T @ alpha
    return Probe(direction.astype(np.float32), float(target_mean - mean @ direction))
