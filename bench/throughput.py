"""CPU throughput of feature extraction and training, with the baseline in the same run.

    python -m bench.throughput --archive ../shared/datasets/ucm-multilabel

Feature extraction is measured end to end (JPEG decoding, resizing and the network) over the
same scenes in two settings:
- baseline: eager NCHW tensors under torch.no_grad, batch 32, decoding inline;
- ours (what `grn` uses): channels-last under torch.inference_mode, batch 8, the next batch
  decoded in a background thread.
Training is measured as images/s of one optimisation step at a time: head mode (cached
features through the heads, batch 256) and full mode (backbone and heads, batch 32).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Iterator

import numpy as np
import torch

from model.archive import iter_images, load_archive
from model.backbones import backbone_spec, create_backbone
from model.inference import configure_cpu_threads, normalize, run_batched, to_uint8_tensor
from model.losses import GRNCriterion, MemoryBank
from model.network import GRNHead, GRNNet


def baseline_extraction(
    backbone: torch.nn.Module,
    images: Iterator[tuple[int, np.ndarray]],
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
) -> int:
    count, batch = 0, []
    backbone = backbone.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    with torch.no_grad():
        for _, image in images:
            batch.append(to_uint8_tensor(image, size))
            if len(batch) == 32:
                inputs = normalize(torch.stack(batch), mean, std).contiguous()
                backbone(inputs)
                count, batch = count + len(batch), []
        if batch:
            backbone(normalize(torch.stack(batch), mean, std).contiguous())
            count += len(batch)
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", required=True)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--backbone", default="efficientnet_lite0")
    args = parser.parse_args()
    configure_cpu_threads()
    archive = load_archive(args.archive)
    positions = archive.indices("test")[: args.images]
    spec = backbone_spec(args.backbone)
    backbone, _ = create_backbone(args.backbone, pretrained=False)
    backbone.eval()
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, {len(positions)} UCM scenes, 256 x 256"
    )

    # warm-up, so neither setting pays for first-call allocations
    list(
        run_batched(
            backbone,
            iter_images(archive, positions[:16]),
            input_size=256,
            mean=spec.mean,
            std=spec.std,
            device=torch.device("cpu"),
            batch_size=8,
        )
    )
    start = time.perf_counter()
    n = baseline_extraction(backbone, iter_images(archive, positions), 256, spec.mean, spec.std)
    baseline = n / (time.perf_counter() - start)
    backbone = backbone.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    start = time.perf_counter()
    n = sum(
        len(out.positions)
        for out in run_batched(
            backbone,
            iter_images(archive, positions),
            input_size=256,
            mean=spec.mean,
            std=spec.std,
            device=torch.device("cpu"),
            batch_size=8,
        )
    )
    ours = n / (time.perf_counter() - start)
    print(
        f"feature extraction, decoding included: baseline {baseline:.1f} images/s, "
        f"ours {ours:.1f} images/s ({ours / baseline:.2f}x)"
    )

    labels = torch.from_numpy(archive.label_matrix(archive.indices("train")))
    head = GRNHead(spec.num_features, 128, labels.shape[1], hidden_dim=512, dropout=0.3)
    criterion = GRNCriterion("sndl_bce", temperature=0.1, bce_weight=3.0)
    features = torch.randn(len(labels), spec.num_features)
    with torch.no_grad():
        bank = MemoryBank(head.eval()(features).embedding, labels)
    optimizer = torch.optim.SGD(head.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    head.train()
    steps, batch = 30, 256
    start = time.perf_counter()
    for step in range(steps):
        generator = torch.Generator().manual_seed(step)
        rows = torch.randperm(len(labels), generator=generator)[:batch]
        out = head(features[rows])
        loss = criterion(out, labels[rows], rows, bank).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        bank.update(rows, out.embedding, 0.5)
    head_rate = steps * batch / (time.perf_counter() - start)
    print(f"head-mode training (batch {batch}): {head_rate:.0f} scenes/s")

    net = GRNNet(
        create_backbone(args.backbone, pretrained=False)[0],
        GRNHead(spec.num_features, 128, labels.shape[1]),
    )
    net = net.to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    images = torch.randint(0, 256, (32, 3, 256, 256), dtype=torch.uint8)
    inputs = normalize(images, spec.mean, spec.std)
    full_bank = MemoryBank(torch.randn(len(labels), 128), labels)
    rows = torch.arange(32)
    timings = []
    for _ in range(4):
        start = time.perf_counter()
        loss = GRNCriterion("sndl_bce")(net(inputs), labels[rows], rows, full_bank).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        timings.append(time.perf_counter() - start)
    full_rate = 32 / float(np.median(timings[1:]))
    print(f"full-mode training step (batch 32, augmentation excluded): {full_rate:.1f} images/s")


if __name__ == "__main__":
    main()
