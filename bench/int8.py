"""int8 quantisation of the served network: its speed, and what it does to the UCM figures.

    .venv/bin/python -m bench.int8 --model runs/ucm-head \
        --archive ../shared/datasets/ucm-multilabel

The network's stored ONNX graph (model/engine.py: uint8 in, preprocessing inside) runs on ONNX
Runtime's CPU provider as it is served (f32), and quantised three ways with ONNX Runtime's
own tools (the graph first pre-processed by `quant_pre_process`):
  - static QDQ, per-tensor, u8 activations and s8 weights, calibrated (MinMax) on
    `--calibration` training scenes;
  - the same with per-channel weights;
  - dynamic (weights s8 ahead of time, activations quantised per batch).
Every variant embeds all of the archive's scenes (decoded once); the figures are the UCM
protocol's (train split = archive, test split = queries): mAP, P@10, NDCG@10, 10-NN sample-F1,
the classifier's sample-F1 at 0.5, the largest difference from f32 in the embeddings and
probabilities, and how many of each query's 10 nearest scenes are f32's. Speed: images/s at
batch 1 and 16, variants interleaved over `--rounds` rounds, medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from bench._common import REPO, UCM
from bench.engines import rate, stored_graph
from model.archive import iter_images, load_archive
from model.card import export_graph, load_model
from model.embedding import Embedded
from model.engine import OrtEngine
from model.evaluate import evaluation_metrics
from model.inference import batched, prepare_batch


def quantised(graph: bytes, calibration: np.ndarray, work: Path) -> dict[str, bytes]:
    """The graph quantised each way (see the module docstring)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    source, prepared = work / "f32.onnx", work / "prepared.onnx"
    source.write_bytes(graph)
    quant_pre_process(str(source), str(prepared))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[np.ndarray] = iter(np.array_split(calibration, 8))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"images": batch}

    out: dict[str, bytes] = {}
    for name, per_channel in (("int8 static", False), ("int8 static per-channel", True)):
        target = work / f"{name.replace(' ', '-')}.onnx"
        quantize_static(
            str(prepared), str(target), Reader(),
            quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        )  # fmt: skip
        out[name] = target.read_bytes()
    target = work / "int8-dynamic.onnx"
    quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8)
    out["int8 dynamic"] = target.read_bytes()
    return out


def embed_all(engine: OrtEngine, images: np.ndarray, batch: int = 16) -> tuple[np.ndarray, ...]:
    outputs = [engine.run(images[i : i + batch]) for i in range(0, len(images), batch)]
    return tuple(np.concatenate(parts) for parts in zip(*outputs, strict=True))


def top10(query: np.ndarray, base: np.ndarray) -> np.ndarray:
    return np.argsort(-(query @ base.T), axis=1)[:, :10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs/ucm-head")
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--calibration", type=int, default=256, help="training scenes")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per variant, batch, round")
    args = parser.parse_args()

    net, card = load_model(args.model, "cpu", engine="torch")
    graph = stored_graph(args.model) or export_graph(net, card)
    archive = load_archive(args.archive)
    train, test = archive.indices("train"), archive.indices("test")
    order = train + test
    started = time.perf_counter()
    images = np.concatenate(
        [
            prepare_batch([image for _, image in chunk], card.input_size).numpy()
            for chunk in batched(iter_images(archive, order, workers=2), 64)
        ]
    )
    print(f"decoded {len(images)} scenes in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rng = np.random.default_rng(0)
    calibration = images[rng.choice(len(train), args.calibration, replace=False)]

    with tempfile.TemporaryDirectory() as tmp:
        graphs = {"f32 (served)": graph, **quantised(graph, calibration, Path(tmp))}
    engines = {name: OrtEngine(g) for name, g in graphs.items()}

    train_labels, test_labels = archive.label_matrix(train), archive.label_matrix(test)
    results: dict[str, dict[str, Any]] = {}
    reference: tuple[np.ndarray, ...] | None = None
    for name, engine in engines.items():
        embeddings, probabilities = embed_all(engine, images)
        base = Embedded(train, embeddings[: len(train)], probabilities[: len(train)], 0.0)
        query = Embedded(test, embeddings[len(train) :], probabilities[len(train) :], 0.0)
        metrics = evaluation_metrics(query, test_labels, base, train_labels, card.thresholds)
        if reference is None:
            reference = (embeddings, probabilities, top10(query.embeddings, base.embeddings))
        overlap = np.mean(
            [
                len(set(a) & set(b)) / 10
                for a, b in zip(top10(query.embeddings, base.embeddings), reference[2], strict=True)
            ]
        )
        results[name] = {
            "metrics": metrics,
            "embedding_diff": float(np.abs(embeddings - reference[0]).max()),
            "probability_diff": float(np.abs(probabilities - reference[1]).max()),
            "top10_overlap": float(overlap),
            "size_mb": len(graphs[name]) / 1e6,
        }
        print(f"  {name}: mAP {metrics['map']:.4f}", file=sys.stderr)

    rates: dict[str, dict[int, list[float]]] = {n: {1: [], 16: []} for n in engines}
    for _ in range(args.rounds):
        for size in (1, 16):
            for name, engine in engines.items():
                rates[name][size].append(rate(engine, images[:size], args.seconds))

    f32 = {size: statistics.median(rates["f32 (served)"][size]) for size in (1, 16)}
    print(
        f"model {card.version}; {len(test)} queries against {len(train)} scenes; "
        f"{args.calibration} calibration scenes; speed: median of {args.rounds} rounds\n"
    )
    print(
        "| variant | graph MB | mAP | P@10 | NDCG@10 | 10-NN F1 | classifier F1 @0.5 | "
        "max diff emb / prob | top-10 shared with f32 | img/s batch 1 | batch 16 | x f32 (1 / 16) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for name, result in results.items():
        m = result["metrics"]
        speed = {size: statistics.median(rates[name][size]) for size in (1, 16)}
        print(
            f"| {name} | {result['size_mb']:.1f} | {m['map']:.4f} | {m['p_at_k']['10']:.4f} | "
            f"{m['ndcg_at_k']['10']:.4f} | {m['knn_sample_f1']:.4f} | "
            f"{m['classifier_sample_f1']:.4f} | {result['embedding_diff']:.3f} / "
            f"{result['probability_diff']:.3f} | {result['top10_overlap']:.3f} | "
            f"{speed[1]:.1f} | {speed[16]:.1f} | "
            f"{speed[1] / f32[1]:.2f} / {speed[16] / f32[16]:.2f} |"
        )


if __name__ == "__main__":
    main()
