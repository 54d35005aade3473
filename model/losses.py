"""The GRN losses: SNDL, SNDL-BCE and a BCE-only baseline.

SNDL (Kang et al., IEEE TGRS 2020, built on Wu et al.'s scalable neighbourhood component
analysis). A memory bank V holds one L2-normalised embedding per training scene. For a batch
scene i with embedding f_i, its leave-one-out neighbour probabilities over the bank are

    p_ij = exp(v_j . f_i / T) / sum_{k != i} exp(v_k . f_i / T),   j != i,

each neighbour is weighted by the fraction of the C label bits on which the two scenes agree,

    w_ij = (<y_i, y_j> + C) / 2C,   labels as +-1,

and the loss is -log sum_{j != i} w_ij p_ij, averaged over the batch. The bank is a constant
for the gradient and is updated after each step: v_i <- normalise(m v_i + (1 - m) f_i).
SNDL-BCE adds binary cross-entropy of the classifier logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.network import GRNOutput

LOSSES = ("sndl", "sndl_bce", "bce")
PAPER_MOMENTUM = ((0.0, 0.5), (80 / 130, 0.8), (120 / 130, 0.9))
"""The paper's momentum schedule (0.5, 0.8 from epoch 80, 0.9 from 120 of 130) as fractions
of the run, so shorter runs keep its shape."""


def agreement_weights(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """w_ij = (<y_i, y_j> + C) / 2C for 0/1 label matrices (A, C) and (B, C): the fraction of
    label bits on which scene i of A and scene j of B agree."""
    signed_a = labels_a * 2 - 1
    signed_b = labels_b * 2 - 1
    c = labels_a.shape[1]
    return (signed_a @ signed_b.T + c) / (2 * c)


def sndl_loss(
    embeddings: torch.Tensor,
    indices: torch.Tensor,
    labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Mean SNDL loss of a batch.

    embeddings: (B, D) L2-normalised batch embeddings; indices: (B,) their rows in the bank;
    labels: (B, C) 0/1; bank: (N, D); bank_labels: (N, C) 0/1.
    """
    logits = embeddings @ bank.detach().T / temperature  # (B, N)
    rows = torch.arange(len(indices), device=embeddings.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, indices] = True
    log_p = torch.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=1)
    weights = agreement_weights(labels, bank_labels).masked_fill(self_mask, 0.0)
    # log sum_j w_ij p_ij, in the log domain; a neighbour that disagrees on every bit has
    # weight 0 and drops out.
    log_w = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
    log_w = log_w.masked_fill(weights <= 0, float("-inf"))
    log_score = torch.logsumexp(log_p.masked_fill(self_mask, float("-inf")) + log_w, dim=1)
    return -log_score.mean()


class MemoryBank:
    """One normalised embedding per training scene, updated with momentum."""

    def __init__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> None:
        self.memory = F.normalize(embeddings.detach().float(), dim=1).clone()
        self.labels = labels.detach().float().clone()

    @classmethod
    def random(
        cls, size: int, dim: int, labels: torch.Tensor, generator: torch.Generator
    ) -> MemoryBank:
        """Uniform random initialisation, as in the reference implementations."""
        stdv = 1.0 / dim**0.5
        memory = torch.rand(size, dim, generator=generator) * 2 * stdv - stdv
        return cls(memory, labels)

    @classmethod
    def restore(cls, memory: torch.Tensor, labels: torch.Tensor) -> MemoryBank:
        """A bank from a saved state, bit for bit (no renormalisation)."""
        bank = cls.__new__(cls)
        bank.memory = memory.detach().float().clone()
        bank.labels = labels.detach().float().clone()
        return bank

    def to(self, device: torch.device | str) -> MemoryBank:
        self.memory = self.memory.to(device)
        self.labels = self.labels.to(device)
        return self

    @torch.no_grad()
    def update(self, indices: torch.Tensor, embeddings: torch.Tensor, momentum: float) -> None:
        mixed = self.memory[indices] * momentum + embeddings.detach().float() * (1 - momentum)
        self.memory[indices] = F.normalize(mixed, dim=1)


def momentum_at(progress: float, schedule: Sequence[tuple[float, float]] = PAPER_MOMENTUM) -> float:
    """The bank momentum at a point of the run (progress = epoch / epochs)."""
    value = schedule[0][1]
    for start, momentum in schedule:
        if progress >= start - 1e-9:
            value = momentum
    return value


@dataclass
class LossParts:
    total: torch.Tensor
    sndl: torch.Tensor | None
    bce: torch.Tensor | None


class GRNCriterion:
    """The training loss chosen by name: `sndl`, `sndl_bce` or `bce`."""

    def __init__(self, name: str, temperature: float = 0.05, bce_weight: float = 1.0) -> None:
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
        self.name = name
        self.temperature = temperature
        self.bce_weight = bce_weight

    @property
    def uses_bank(self) -> bool:
        return self.name != "bce"

    def __call__(
        self,
        output: GRNOutput,
        labels: torch.Tensor,
        indices: torch.Tensor,
        bank: MemoryBank | None,
    ) -> LossParts:
        sndl = bce = None
        total = output.logits.new_zeros(())
        if self.uses_bank:
            if bank is None:
                raise ValueError(f"loss {self.name} needs a memory bank")
            sndl = sndl_loss(
                output.embedding.float(),
                indices,
                labels,
                bank.memory,
                bank.labels,
                self.temperature,
            )
            total = total + sndl
        if self.name != "sndl":
            bce = F.binary_cross_entropy_with_logits(output.logits.float(), labels)
            total = total + (self.bce_weight if self.name == "sndl_bce" else 1.0) * bce
        return LossParts(total=total, sndl=sndl, bce=bce)
