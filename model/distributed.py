"""Training on several processes (torchrun): the process group and the collectives the
trainer needs. Without torchrun's environment (WORLD_SIZE unset or 1) nothing is set up and
the trainer runs as one process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> tuple[DistInfo, str]:
    """Join the process group torchrun describes (NCCL on GPUs, gloo on CPUs); returns the
    ranks and the device this process should use."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), device_name
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and device_name in ("auto", "cuda")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
    elif device_name == "auto":
        device_name = "cpu"
    return DistInfo(rank, world_size, local_rank), device_name


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The tensors of every rank, concatenated in rank order along the first dimension
    (all ranks must pass the same shape)."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_rows(tensor: torch.Tensor, info: DistInfo) -> tuple[torch.Tensor, slice]:
    """The rows of every rank, concatenated in rank order, and the slice holding this rank's:
    ranks may pass different numbers of rows. Gradients flow back to each rank's own rows
    (every rank's loss on them is summed), so a loss over the whole batch computed on each
    rank trains as it would on one process."""
    if not info.enabled:
        return tensor, slice(0, len(tensor))
    from torch.distributed.nn.functional import all_gather as differentiable_all_gather

    counts = all_gather_cat(torch.tensor([len(tensor)], device=tensor.device), info).tolist()
    largest = max(counts)
    padded = torch.cat([tensor, tensor.new_zeros(largest - len(tensor), *tensor.shape[1:])])
    parts = differentiable_all_gather(padded.contiguous())
    start = sum(counts[: info.rank])
    rows = torch.cat([part[:count] for part, count in zip(parts, counts, strict=True)])
    return rows, slice(start, start + len(tensor))


class RowGather:
    """`all_gather_rows` over the process group, as the losses take it."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info
        self.processes = info.world_size

    def __call__(self, tensor: torch.Tensor) -> tuple[torch.Tensor, slice]:
        return all_gather_rows(tensor, self.info)


def wrap_module(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """The module as one process trains it: under torchrun wrapped in DDP (gradients
    averaged over the ranks), else itself."""
    if not info.enabled:
        return module
    return torch.nn.parallel.DistributedDataParallel(
        module, device_ids=[device.index] if device.type == "cuda" else None
    )


def all_reduce_sum(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether the flag is set on any rank: a decision every rank then takes together (a
    rank that stopped alone would leave the others waiting in a collective forever)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(all_reduce_sum(value, info).item() > 0)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
