"""The GPU measurements the issues still ask for, in one run on the device machine (which has
torch but no FAISS and no Ray):

1. `index.torch_exact` at 1M 128-d clustered unit vectors: recall@10 against exact search on
   the CPU (numpy, the same answers as FAISS Flat) and its speed-up over it, for single
   queries and batches of 64, measured in the same run (issue 3).
2. What one GPU embeds per second: the archive decoded and embedded by the production
   network (EfficientNet-Lite0 and the GRN heads, random weights: the speed does not depend
   on them) through `model.embedding.embed_scenes`, the path of `grn embed` and the indexing
   job; and the network alone on batches already on the GPU (issue 7's cost model).

    python -m bench.device_checks --archive .device/ucm --out "$OUT/device-checks.json"

Runs anywhere (`--device cpu --n 20000 --limit 64` for a quick check of the script itself).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index.results import exact_search, recall_at_k
from index.synthetic import clustered_unit_vectors
from index.torch_exact import TorchExactIndex
from model.archive import load_archive
from model.backbones import backbone_spec, create_backbone
from model.card import ModelCard
from model.embedding import embed_scenes
from model.inference import normalize
from model.network import GRNHead, GRNNet

DIM = 128


def timed(function: Callable[[], Any], repeats: int, sync: bool) -> dict[str, float]:
    """p50 and p99 of `repeats` calls, in milliseconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        if sync:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1000)
    ordered = sorted(times)
    return {"p50_ms": statistics.median(ordered), "p99_ms": ordered[int(0.99 * (len(ordered) - 1))]}


def exact_search_check(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    data = clustered_unit_vectors(args.n + args.queries, DIM, min(20_000, args.n // 100), 0.039)
    vectors, queries = data[: args.n], data[args.n :]
    ids = np.arange(args.n, dtype=np.int64)
    start = time.perf_counter()
    truth = exact_search(vectors, ids, queries, 10)
    cpu_all = time.perf_counter() - start
    index = TorchExactIndex(ids, vectors, device=device)
    index.search(queries[:64], 10)  # warm-up: kernels and the allocator
    start = time.perf_counter()
    found = index.search(queries, 10)
    gpu_all = time.perf_counter() - start
    sync = device.type == "cuda"
    rng = np.random.default_rng(0)
    picks = rng.integers(0, args.queries, size=(args.singles,))
    batches = [queries[rng.integers(0, args.queries, size=64)] for _ in range(args.batches)]
    singles = iter(picks.tolist() * 2)
    batch_iter = iter(batches * 2)
    cpu_single = timed(
        lambda: exact_search(vectors, ids, queries[next(singles)], 10), args.cpu_singles, False
    )
    singles = iter(picks.tolist() * 2)
    gpu_single = timed(lambda: index.search(queries[next(singles)], 10), args.singles, sync)
    cpu_batch = timed(lambda: exact_search(vectors, ids, next(batch_iter), 10), 5, False)
    batch_iter = iter(batches * 2)
    gpu_batch = timed(lambda: index.search(next(batch_iter), 10), args.batches, sync)
    return {
        "n": args.n,
        "queries": args.queries,
        "recall_at_10": recall_at_k(found.ids, truth.ids, 10, found.scores, truth.scores),
        "ids_equal_fraction": float((found.ids == truth.ids).mean()),
        "max_score_difference": float(np.abs(found.scores - truth.scores).max()),
        "all_queries_s": {"cpu_numpy": cpu_all, "torch": gpu_all, "speedup": cpu_all / gpu_all},
        "single": {
            "cpu_numpy": cpu_single,
            "torch": gpu_single,
            "speedup_p50": cpu_single["p50_ms"] / gpu_single["p50_ms"],
        },
        "batch64": {
            "cpu_numpy": cpu_batch,
            "torch": gpu_batch,
            "speedup_p50": cpu_batch["p50_ms"] / gpu_batch["p50_ms"],
        },
    }


def production_network(labels: list[str]) -> tuple[GRNNet, ModelCard]:
    spec = backbone_spec("efficientnet_lite0")
    backbone, weights = create_backbone("efficientnet_lite0", pretrained=False)
    net = GRNNet(backbone, GRNHead(spec.num_features, DIM, len(labels)))
    card = ModelCard(
        backbone="efficientnet_lite0",
        weights=weights,
        input_size=256,
        mean=spec.mean,
        std=spec.std,
        num_features=spec.num_features,
        embedding_dim=DIM,
        hidden_dim=0,
        label_names=labels,
        thresholds=[0.5] * len(labels),
        loss="sndl_bce",
    )
    return net.eval(), card


def embedding_check(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    archive = load_archive(args.archive)
    net, card = production_network(list(archive.label_names))
    positions = archive.indices()[: args.limit] if args.limit else archive.indices()
    rounds = []
    for _ in range(args.rounds):  # the first round warms up the decoders' caches and CUDA
        embedded = embed_scenes(net, card, archive, positions, device=device, progress=False)
        rounds.append(embedded.images_per_s)
    network = {}
    net = net.to(device).to(memory_format=torch.channels_last)
    for batch in (64, 256):
        images = torch.randint(0, 256, (batch, 3, 256, 256), dtype=torch.uint8, device=device)
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast(
                device.type, dtype=torch.bfloat16, enabled=precision == "bf16"
            )

            def step(images: torch.Tensor = images, autocast: Any = autocast) -> None:
                with torch.inference_mode(), autocast:
                    net(normalize(images, card.mean, card.std))

            step()
            times = timed(step, args.network_repeats, device.type == "cuda")
            network[f"batch{batch}_{precision}_images_per_s"] = batch / times["p50_ms"] * 1000
    return {
        "scenes": len(positions),
        "decode_and_embed_images_per_s": rounds,
        "decode_and_embed_best": max(rounds[1:] or rounds),
        "cpu_cores": os.cpu_count(),
        "network_alone": network,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, default=Path(".device/ucm"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=300)
    parser.add_argument("--cpu-singles", type=int, default=30)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--limit", type=int, default=0, help="scenes to embed (0: all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--network-repeats", type=int, default=20)
    parser.add_argument("--skip", nargs="*", default=[], choices=["exact", "embed"])
    args = parser.parse_args()
    device = torch.device(args.device)
    report: dict[str, Any] = {
        "machine": platform.machine(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
    }
    print(json.dumps(report), flush=True)
    if "exact" not in args.skip:
        report["torch_exact"] = exact_search_check(args, device)
        print(json.dumps(report["torch_exact"]), flush=True)
    if "embed" not in args.skip:
        report["embedding"] = embedding_check(args, device)
        print(json.dumps(report["embedding"]), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
