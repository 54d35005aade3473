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

Distillation (ours, not the paper's): SNDL pulls together the scenes that share labels, which
on content the labels do not describe loses the backbone's sense of similarity (docs/results.md,
"Content the model never saw"). A weight on KL(teacher || student) between two neighbour
distributions over the batch, the frozen backbone's features' cosines / T_t against the
embeddings' cosines / T_s (self excluded), keeps the backbone's neighbourhoods in the embedding.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model.distributed import RowGather
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


BANK_CHUNK = 16_384
"""Bank rows scored at a time once the bank is larger than this."""


def _log_weights(weights: torch.Tensor) -> torch.Tensor:
    """log w, with -inf where w is 0: a neighbour that disagrees on every bit (or the scene
    itself) drops out of the sum."""
    log_w = torch.log(weights.clamp_min(torch.finfo(weights.dtype).tiny))
    return log_w.masked_fill(weights <= 0, float("-inf"))


def sndl_loss(
    embeddings: torch.Tensor,
    indices: torch.Tensor,
    labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    temperature: float,
    chunk_size: int = BANK_CHUNK,
) -> torch.Tensor:
    """Mean SNDL loss of a batch.

    embeddings: (B, D) L2-normalised batch embeddings; indices: (B,) their rows in the bank;
    labels: (B, C) 0/1; bank: (N, D); bank_labels: (N, C) 0/1. A bank of more than
    `chunk_size` rows is scored `chunk_size` rows at a time, forward and backward, so the
    (B, N) matrix never exists whole (`_ChunkedSNDL`).
    """
    if bank.shape[0] > chunk_size:
        dtype = embeddings.dtype
        scored = _BankScores(
            indices, labels.to(dtype), bank.detach().to(dtype), bank_labels.to(dtype), temperature
        )
        chunked: torch.Tensor = _ChunkedSNDL.apply(embeddings, scored, chunk_size)
        return chunked
    logits = embeddings @ bank.detach().T / temperature  # (B, N)
    rows = torch.arange(len(indices), device=embeddings.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, indices] = True
    log_p = torch.log_softmax(logits.masked_fill(self_mask, float("-inf")), dim=1)
    log_w = _log_weights(agreement_weights(labels, bank_labels).masked_fill(self_mask, 0.0))
    # log sum_j w_ij p_ij, in the log domain
    log_score = torch.logsumexp(log_p.masked_fill(self_mask, float("-inf")) + log_w, dim=1)
    return -log_score.mean()


@dataclass(frozen=True)
class _BankScores:
    """What scoring a batch against the memory bank needs besides the batch's embeddings:
    their rows in the bank, their labels, the bank and its labels, the temperature."""

    indices: torch.Tensor
    labels: torch.Tensor
    bank: torch.Tensor
    bank_labels: torch.Tensor
    temperature: float

    def columns(
        self, embeddings: torch.Tensor, start: int, stop: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits (self masked), log weights and the bank rows of columns start..stop."""
        rows = self.bank[start:stop]
        logits = embeddings @ rows.T / self.temperature
        columns = torch.arange(start, stop, device=embeddings.device)
        self_mask = self.indices[:, None] == columns[None, :]
        logits = logits.masked_fill(self_mask, float("-inf"))
        weights = agreement_weights(self.labels, self.bank_labels[start:stop])
        return logits, _log_weights(weights.masked_fill(self_mask, 0.0)), rows

    def chunks(
        self, embeddings: torch.Tensor, chunk_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """`columns` of the whole bank, `chunk_size` bank rows at a time."""
        for start in range(0, self.bank.shape[0], chunk_size):
            yield self.columns(embeddings, start, min(start + chunk_size, self.bank.shape[0]))


class _ChunkedSNDL(torch.autograd.Function):
    """SNDL with the batch-to-bank scores computed a chunk of bank rows at a time.

    Per row i, loss_i = log sum_j exp(l_ij) - log sum_j w_ij exp(l_ij) over j != i, with
    l_ij = f_i . v_j / T. Forward keeps two running log-sum-exps; backward recomputes each
    chunk's scores and adds its share of dloss_i/df_i = sum_j (p_ij - q_ij) v_j / T, where p
    is the softmax and q the weight-tilted softmax. Memory: B x chunk, not B x N.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        embeddings: torch.Tensor,
        scored: _BankScores,
        chunk_size: int,
    ) -> torch.Tensor:
        batch = embeddings.shape[0]
        lse_all = embeddings.new_full((batch,), float("-inf"))
        lse_weighted = embeddings.new_full((batch,), float("-inf"))
        for logits, log_w, _ in scored.chunks(embeddings, chunk_size):
            lse_all = torch.logaddexp(lse_all, torch.logsumexp(logits, dim=1))
            lse_weighted = torch.logaddexp(lse_weighted, torch.logsumexp(logits + log_w, dim=1))
        ctx.save_for_backward(embeddings, lse_all, lse_weighted)
        ctx.scored = scored  # type: ignore[attr-defined]
        ctx.chunk_size = chunk_size  # type: ignore[attr-defined]
        return (lse_all - lse_weighted).mean()

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, ...]:
        embeddings, lse_all, lse_weighted = ctx.saved_tensors  # type: ignore[attr-defined]
        scored: _BankScores = ctx.scored  # type: ignore[attr-defined]
        chunk_size: int = ctx.chunk_size  # type: ignore[attr-defined]
        grad = torch.zeros_like(embeddings)
        for logits, log_w, rows in scored.chunks(embeddings, chunk_size):
            p = torch.exp(logits - lse_all[:, None])
            q = torch.exp(logits + log_w - lse_weighted[:, None])
            grad += (p - q) @ rows
        grad *= grad_output / (scored.temperature * embeddings.shape[0])
        return grad, None, None


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


def neighbourhood_kl(
    teacher: torch.Tensor,
    student: torch.Tensor,
    teacher_temperature: float,
    student_temperature: float,
) -> torch.Tensor:
    """Mean over the batch of KL(teacher || student), where each row's distribution is the
    softmax over the other batch rows of its cosines divided by the temperature.

    teacher: (B, F) features, normalised here; student: (B, D) L2-normalised embeddings. The
    teacher is a constant for the gradient."""
    return neighbourhood_kl_rows(teacher, student, teacher_temperature, student_temperature).mean()


def neighbourhood_kl_rows(
    teacher: torch.Tensor,
    student: torch.Tensor,
    teacher_temperature: float,
    student_temperature: float,
) -> torch.Tensor:
    """(B,) each row's KL(teacher || student) of `neighbourhood_kl`."""
    teacher = F.normalize(teacher.detach().float(), dim=1)
    student = student.float()
    self_pair = torch.eye(len(teacher), dtype=torch.bool, device=teacher.device)

    def log_neighbours(x: torch.Tensor, temperature: float) -> torch.Tensor:
        logits = (x @ x.T / temperature).masked_fill(self_pair, float("-inf"))
        return torch.log_softmax(logits, dim=1).masked_fill(self_pair, 0.0)

    log_t = log_neighbours(teacher, teacher_temperature)
    log_s = log_neighbours(student, student_temperature)
    return (log_t.exp() * (log_t - log_s)).sum(dim=1)


@dataclass
class LossParts:
    total: torch.Tensor
    sndl: torch.Tensor | None
    bce: torch.Tensor | None
    distill: torch.Tensor | None = None

    def scaled(self, size: int) -> list[float]:
        """total, sndl, bce and distill (0 for a part not computed), each times `size`: a
        batch's share of an epoch's sums."""
        return [
            float(part.detach()) * size if part is not None else 0.0
            for part in (self.total, self.sndl, self.bce, self.distill)
        ]


class GRNCriterion:
    """The training loss chosen by name: `sndl`, `sndl_bce` or `bce`, plus `distill_weight`
    x `neighbourhood_kl` of the backbone's features (teacher, at `distill_temperature`)
    and the embeddings (at the SNDL temperature) when the weight is above 0."""

    def __init__(
        self,
        name: str,
        temperature: float = 0.05,
        bce_weight: float = 1.0,
        distill_weight: float = 0.0,
        distill_temperature: float = 0.05,
    ) -> None:
        if name not in LOSSES:
            raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
        if distill_weight < 0 or distill_temperature <= 0:
            raise ValueError("the distillation weight must be >= 0 and its temperature > 0")
        self.name = name
        self.temperature = temperature
        self.bce_weight = bce_weight
        self.distill_weight = distill_weight
        self.distill_temperature = distill_temperature

    @property
    def distills(self) -> bool:
        return self.distill_weight > 0

    @property
    def uses_bank(self) -> bool:
        return self.name != "bce"

    def __call__(
        self,
        output: GRNOutput,
        labels: torch.Tensor,
        indices: torch.Tensor,
        bank: MemoryBank | None,
        teacher: torch.Tensor | None = None,
        gather: RowGather | None = None,
    ) -> LossParts:
        """`teacher`: the frozen backbone's features of the batch, needed when distilling.
        Rows of `output` (and `teacher`) beyond those of `labels` are unlabelled scenes: they
        take part in the distillation term only. `gather` (training on several processes,
        `model.distributed.RowGather`): the distillation term's neighbourhoods span
        every process's rows, each process scoring its own rows' share of the mean, so that
        averaging the processes' gradients gives one process's."""
        sndl = bce = distill = None
        whole = output
        if len(labels) < len(output.embedding):
            output = GRNOutput(output.embedding[: len(labels)], output.logits[: len(labels)])
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
        if self.distills:
            if teacher is None:
                raise ValueError("distillation needs the backbone's features of the batch")
            if gather is None:
                distill = neighbourhood_kl(
                    teacher, whole.embedding, self.distill_temperature, self.temperature
                )
            else:
                teachers, _ = gather(teacher.detach().float())
                students, mine = gather(whole.embedding.float())
                per_row = neighbourhood_kl_rows(
                    teachers, students, self.distill_temperature, self.temperature
                )
                # the processes' gradients are averaged: scale this one's sum to its share
                distill = per_row[mine].sum() * gather.processes / len(students)
            total = total + self.distill_weight * distill
        return LossParts(total=total, sndl=sndl, bce=bce, distill=distill)
