"""Peak memory of one SNDL loss step (forward and backward) against a large memory bank,
computed whole and in chunks of bank rows.

    python -m bench.sndl_memory --bank 1000000 --batch 256

Each variant runs in a fresh process: a synthetic bank of N unit vectors (128-d, 17 random
labels), a batch of 256 embeddings from a tiny linear "backbone" so the gradient flows into
weights, one forward and backward pass; the process's peak resident memory (ru_maxrss)
before and after the step, and the step's time. The loss value and gradient of the chunked
step are compared with the whole-matrix step's on the same inputs when both fit.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from bench._common import child_env
from model.losses import sndl_loss


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step(bank_size: int, batch: int, chunk: int, seed: int = 0) -> dict[str, object]:
    generator = torch.Generator().manual_seed(seed)
    bank = F.normalize(torch.randn(bank_size, 128, generator=generator), dim=1)
    bank_labels = (torch.rand(bank_size, 17, generator=generator) > 0.8).float()
    indices = torch.randint(0, bank_size, (batch,), generator=generator)
    features = torch.randn(batch, 64, generator=generator)
    backbone = torch.nn.Linear(64, 128)
    torch.manual_seed(seed)
    torch.nn.init.normal_(backbone.weight, std=0.1)
    before = peak_mib()
    start = time.perf_counter()
    embeddings = F.normalize(backbone(features), dim=1)
    loss = sndl_loss(
        embeddings, indices, bank_labels[indices], bank, bank_labels, 0.05, chunk_size=chunk
    )
    loss.backward()
    seconds = time.perf_counter() - start
    assert backbone.weight.grad is not None
    return {
        "bank": bank_size,
        "batch": batch,
        "chunk": chunk,
        "loss": float(loss),
        "grad_norm": float(backbone.weight.grad.norm()),
        "seconds": round(seconds, 2),
        "peak_mib_before_step": round(before, 1),
        "peak_mib_after_step": round(peak_mib(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bank", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--chunks", type=int, nargs="+", default=[65_536, 16_384])
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(step(args.bank, args.batch, args.one)))
        return
    results = []
    for chunk in [args.bank + 1, *args.chunks]:  # bank + 1: the whole (B, N) matrix at once
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.sndl_memory",
                "--bank",
                str(args.bank),
                "--batch",
                str(args.batch),
                "--one",
                str(chunk),
            ],
            env=child_env(),
            capture_output=True,
            text=True,
            check=True,
        )
        result = json.loads(out.stdout)
        result["variant"] = "whole" if chunk > args.bank else f"chunks of {chunk}"
        results.append(result)
        print(json.dumps(result), flush=True)
    whole = results[0]
    for result in results[1:]:
        print(
            f"{result['variant']}: step peak {result['peak_mib_after_step']} MiB against "
            f"{whole['peak_mib_after_step']} MiB whole; loss {result['loss']:.6f} against "
            f"{whole['loss']:.6f}; gradient norm {result['grad_norm']:.6f} against "
            f"{whole['grad_norm']:.6f}"
        )


if __name__ == "__main__":
    main()
