from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model.losses import (
    GRNCriterion,
    MemoryBank,
    agreement_weights,
    momentum_at,
    neighbourhood_kl,
    sndl_loss,
)
from model.network import GRNOutput


def reference_sndl(
    embeddings: torch.Tensor,
    indices: list[int],
    labels: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    temperature: float,
) -> float:
    """The paper's definition, one pair at a time, in plain Python floats."""
    c = labels.shape[1]
    total = 0.0
    for row, i in enumerate(indices):
        f = embeddings[row].tolist()
        sims = [sum(a * b for a, b in zip(f, v.tolist(), strict=True)) / temperature for v in bank]
        denominator = sum(math.exp(s) for j, s in enumerate(sims) if j != i)
        score = 0.0
        for j, s in enumerate(sims):
            if j == i:
                continue
            agree = sum(
                (2 * a - 1) * (2 * b - 1)
                for a, b in zip(labels[row].tolist(), bank_labels[j].tolist(), strict=True)
            )
            weight = (agree + c) / (2 * c)
            score += weight * math.exp(s) / denominator
        total += -math.log(score)
    return total / len(indices)


def _random_case(seed: int, n: int = 9, b: int = 4, d: int = 5, c: int = 6):
    g = torch.Generator().manual_seed(seed)
    bank = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    bank_labels = (torch.rand(n, c, generator=g) < 0.4).double()
    indices = torch.randperm(n, generator=g)[:b]
    embeddings = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    return embeddings, indices, bank_labels[indices], bank, bank_labels


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_sndl_matches_the_reference_loop(seed: int, temperature: float) -> None:
    embeddings, indices, labels, bank, bank_labels = _random_case(seed)
    got = sndl_loss(embeddings, indices, labels, bank, bank_labels, temperature)
    want = reference_sndl(embeddings, indices.tolist(), labels, bank, bank_labels, temperature)
    assert got.item() == pytest.approx(want, rel=1e-9)


def test_sndl_gradient_check() -> None:
    embeddings, indices, labels, bank, bank_labels = _random_case(7)
    embeddings.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda e: sndl_loss(e, indices, labels, bank, bank_labels, 0.1), (embeddings,)
    )


def test_agreement_weights() -> None:
    a = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    assert agreement_weights(a, b).tolist() == [[1.0, 0.0, 0.75]]


def test_sndl_prefers_neighbours_that_share_labels() -> None:
    # Scene 0's label twin (scene 1) and its opposite (scene 2): pointing at the twin
    # must cost less than pointing at the opposite.
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, -1.0]])
    bank_labels = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    towards_twin = sndl_loss(
        torch.tensor([[0.0, 1.0]]), torch.tensor([0]), bank_labels[:1], bank, bank_labels, 0.05
    )
    towards_other = sndl_loss(
        torch.tensor([[0.0, -1.0]]), torch.tensor([0]), bank_labels[:1], bank, bank_labels, 0.05
    )
    assert towards_twin < 0.01 < towards_other


def test_memory_bank_update_is_normalised_momentum() -> None:
    bank = MemoryBank(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.zeros(2, 3))
    bank.update(torch.tensor([0]), torch.tensor([[0.0, 1.0]]), momentum=0.5)
    expected = F.normalize(torch.tensor([0.5, 0.5]), dim=0)
    assert torch.allclose(bank.memory[0], expected)
    assert torch.equal(bank.memory[1], torch.tensor([0.0, 1.0]))


def test_momentum_schedule_follows_the_paper() -> None:
    assert momentum_at(0 / 130) == 0.5
    assert momentum_at(79 / 130) == 0.5
    assert momentum_at(80 / 130) == 0.8
    assert momentum_at(119 / 130) == 0.8
    assert momentum_at(120 / 130) == 0.9
    assert momentum_at(129 / 130) == 0.9


def test_criterion_combines_sndl_and_bce() -> None:
    embeddings, indices, labels, bank, bank_labels = _random_case(3)
    logits = torch.randn(len(indices), labels.shape[1], dtype=torch.float64)
    output = GRNOutput(embedding=embeddings, logits=logits)
    memory = MemoryBank(bank, bank_labels)
    parts = GRNCriterion("sndl_bce", temperature=0.1, bce_weight=2.0)(
        output, labels.float(), indices, memory
    )
    assert parts.sndl is not None and parts.bce is not None
    assert parts.total.item() == pytest.approx(parts.sndl.item() + 2.0 * parts.bce.item())
    bce_only = GRNCriterion("bce")(output, labels.float(), indices, None)
    assert bce_only.sndl is None and bce_only.total.item() == pytest.approx(parts.bce.item())
    with pytest.raises(ValueError, match="choose one of"):
        GRNCriterion("triplet")


def reference_kl(teacher: torch.Tensor, student: torch.Tensor, t_t: float, t_s: float) -> float:
    """KL(teacher || student) of each row's neighbour distribution, pair by pair."""

    def neighbours(x: list[list[float]], i: int, t: float) -> list[float]:
        norm = [math.sqrt(sum(a * a for a in row)) for row in x]
        cos = [sum(a * b for a, b in zip(x[i], row, strict=True)) / (norm[i] * norm[j])
               for j, row in enumerate(x)]  # fmt: skip
        weights = [math.exp(c / t) if j != i else 0.0 for j, c in enumerate(cos)]
        return [w / sum(weights) for w in weights]

    rows, total = len(teacher), 0.0
    for i in range(rows):
        p = neighbours(teacher.tolist(), i, t_t)
        q = neighbours(student.tolist(), i, t_s)
        total += sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)
    return total / rows


def test_neighbourhood_kl_matches_the_definition_and_vanishes_on_the_same_neighbourhoods() -> None:
    g = torch.Generator().manual_seed(0)
    teacher = torch.randn(7, 12, generator=g, dtype=torch.float64) * 3  # not normalised
    student = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    value = neighbourhood_kl(teacher, student, 0.05, 0.1).item()
    assert value == pytest.approx(reference_kl(teacher, student, 0.05, 0.1), rel=1e-5)  # float32
    assert value > 0.1
    same = neighbourhood_kl(teacher, F.normalize(teacher, dim=1), 0.1, 0.1).item()
    assert same == pytest.approx(0.0, abs=1e-5)
    # its gradient moves the student towards the teacher's neighbourhoods
    moving = student.clone().requires_grad_(True)
    for _ in range(50):
        loss = neighbourhood_kl(teacher, F.normalize(moving, dim=1), 0.05, 0.1)
        (grad,) = torch.autograd.grad(loss, moving)
        moving = (moving - 0.5 * grad).detach().requires_grad_(True)
    assert neighbourhood_kl(teacher, F.normalize(moving, dim=1), 0.05, 0.1).item() < value / 2


def test_criterion_adds_the_distillation_term() -> None:
    embeddings, indices, labels, bank, bank_labels = _random_case(4)
    logits = torch.randn(len(indices), labels.shape[1], dtype=torch.float64)
    output = GRNOutput(embedding=embeddings, logits=logits)
    teacher = torch.randn(len(indices), 8, dtype=torch.float64)
    memory = MemoryBank(bank, bank_labels)
    criterion = GRNCriterion("sndl_bce", 0.1, 3.0, distill_weight=0.5, distill_temperature=0.05)
    parts = criterion(output, labels.float(), indices, memory, teacher)
    assert parts.sndl is not None and parts.bce is not None and parts.distill is not None
    assert parts.distill.item() == pytest.approx(
        neighbourhood_kl(teacher, embeddings, 0.05, 0.1).item()
    )
    assert parts.total.item() == pytest.approx(
        parts.sndl.item() + 3.0 * parts.bce.item() + 0.5 * parts.distill.item()
    )
    with pytest.raises(ValueError, match="needs the backbone's features"):
        criterion(output, labels.float(), indices, memory)
    assert GRNCriterion("sndl_bce")(output, labels.float(), indices, memory).distill is None
    with pytest.raises(ValueError, match="distillation weight must be >= 0"):
        GRNCriterion("sndl", distill_weight=-1)


@pytest.mark.parametrize("chunk", [1, 7, 16, 64])
def test_chunked_sndl_matches_the_whole_matrix(chunk: int) -> None:
    generator = torch.Generator().manual_seed(3)
    batch, size, dim, classes = 6, 50, 8, 5
    bank = F.normalize(torch.randn(size, dim, generator=generator, dtype=torch.float64), dim=1)
    bank_labels = (torch.rand(size, classes, generator=generator) > 0.5).double()
    indices = torch.tensor([0, 4, 9, 49, 23, 17])
    labels = bank_labels[indices]
    raw = torch.randn(batch, dim, generator=generator, dtype=torch.float64)

    def both(loss_fn):  # type: ignore[no-untyped-def]
        emb = raw.clone().requires_grad_(True)
        value = loss_fn(F.normalize(emb, dim=1))
        value.backward()
        return value.detach(), emb.grad

    whole, whole_grad = both(
        lambda e: sndl_loss(e, indices, labels, bank, bank_labels, 0.1, chunk_size=10**9)
    )
    parts, parts_grad = both(
        lambda e: sndl_loss(e, indices, labels, bank, bank_labels, 0.1, chunk_size=chunk)
    )
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts_grad, whole_grad, rtol=1e-10, atol=1e-12)


def test_chunked_sndl_gradient_check() -> None:
    generator = torch.Generator().manual_seed(4)
    bank = F.normalize(torch.randn(30, 6, generator=generator, dtype=torch.float64), dim=1)
    bank_labels = (torch.rand(30, 4, generator=generator) > 0.5).double()
    indices = torch.tensor([1, 2, 29])
    emb = torch.randn(3, 6, generator=generator, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda e: sndl_loss(e, indices, bank_labels[indices], bank, bank_labels, 0.2, 7),
        (emb,),
    )
