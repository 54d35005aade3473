"""Which engine runs the served network fastest on this CPU, and what `grn embed` makes of it.

    .venv/bin/python -m bench.engines --model runs/ucm-head \
        --archive ../shared/datasets/ucm-multilabel

1. The bare network (uint8 batch in, embeddings and probabilities out, preprocessing inside)
   on torch eager (channels-last, inference_mode: the code before engines), ONNX Runtime and
   OpenVINO, at batch 1, 4 and 16 on real UCM images. Engines and batch sizes are
   interleaved, round after round, and each figure is the median over the rounds, so that a
   load that comes and goes on a shared machine hits all of them alike. Max abs differences
   from torch are taken on the same images.
2. `grn embed` end to end (decoding included) as a child process, under each setting given
   by --embed (engine, allocator tuning), interleaved and repeated: images/s as the command
   reports it, the kernel's share of the child's CPU time and its page faults per second
   (getrusage of the child).

Prints a Markdown report; --json writes the raw figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench._common import REPO, UCM, child_env, grn
from model.archive import iter_images, load_archive
from model.card import GRAPH_KEY, export_graph, load_model
from model.engine import Engine, OpenVinoEngine, OrtEngine
from model.graph_export import TorchEngine
from model.inference import prepare_batch, tune_allocator

BATCHES = (1, 4, 16)


def stored_graph(path: Path) -> bytes | None:
    from safetensors import safe_open

    from model.card import resolve_model_path

    with safe_open(str(resolve_model_path(path)), framework="numpy") as handle:
        if GRAPH_KEY in handle.keys():  # noqa: SIM118
            return bytes(handle.get_tensor(GRAPH_KEY).tobytes())
    return None


def rate(engine: Engine, batch: np.ndarray, seconds: float) -> float:
    engine.run(batch)  # warm
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        engine.run(batch)
        count += len(batch)
    return count / elapsed


def bare_round(args: argparse.Namespace) -> dict[str, Any]:
    """One round in this process: every engine at every batch size, interleaved."""
    if args.alloc:
        tune_allocator()
    torch.set_num_threads(os.cpu_count() or 1)
    net, card = load_model(args.model, "cpu", engine="torch")
    graph = stored_graph(args.model) or export_graph(net, card)
    archive = load_archive(args.archive)
    images = [image for _, image in iter_images(archive, list(range(0, 2100, 131))[:16])]
    batch = prepare_batch(images, card.input_size).numpy()
    engines: dict[str, Engine] = {"torch": TorchEngine(net, card.mean, card.std)}
    if args.alloc:  # the allocator setting changes nothing for these (their own arenas)
        engines["onnxruntime"] = OrtEngine(graph)
        engines["onnxruntime, spinning threads"] = OrtEngine(graph, spinning=True)
        try:
            engines["openvino"] = OpenVinoEngine(graph)
            engines["openvino, bf16 (its default here)"] = OpenVinoEngine(graph, precision="bf16")
        except ImportError:
            print("openvino is not installed (pip install -e '.[bench]')", file=sys.stderr)
    reference = engines["torch"].run(batch)
    differences = {}
    for name, engine in engines.items():
        outputs = engine.run(batch)
        differences[name] = max(
            float(np.abs(a - b).max()) for a, b in zip(outputs, reference, strict=True)
        )
    rates: dict[str, dict[int, float]] = {name: {} for name in engines}
    for size in BATCHES:
        for name, engine in engines.items():
            rates[name][size] = rate(engine, batch[:size], args.seconds)
    return {"model": card.version, "rates": rates, "differences": differences}


def bare_network(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds in child processes, alternating the glibc allocator setting (process-wide)."""
    rounds: dict[str, dict[int, list[float]]] = {}
    differences: dict[str, float] = {}
    model = ""
    for _ in range(args.rounds):
        for alloc in (False, True):
            done = subprocess.run(
                [sys.executable, "-m", "bench.engines", "--bare-round", "--model",
                 str(args.model), "--archive", str(args.archive), "--seconds", str(args.seconds)]
                + (["--alloc"] if alloc else []),
                env=child_env(), capture_output=True, text=True, check=True,
            )  # fmt: skip
            result = json.loads(done.stdout)
            model = result["model"]
            for name, rates in result["rates"].items():
                label = name if alloc or name != "torch" else "torch, allocator untuned (before)"
                if name == "torch" and alloc:
                    label = "torch, allocator tuned"
                for size, value in rates.items():
                    rounds.setdefault(label, {}).setdefault(int(size), []).append(value)
                differences[label] = result["differences"][name]
    return {
        "model": model,
        "graph_stored": stored_graph(args.model) is not None,
        "rounds": rounds,
        "median": {n: {b: statistics.median(v) for b, v in r.items()} for n, r in rounds.items()},
        "differences": differences,
    }


def embed_run(args: argparse.Namespace, env_extra: dict[str, str], out: Path) -> dict[str, Any]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, done = grn(
        "embed", "--model", str(args.model), "--archive", str(args.archive), "--out", str(out),
        "--split", args.split, "--device", "cpu", "--quiet", env=env_extra,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"grn embed with {env_extra} failed: {done.stderr.strip()}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    line = done.stdout.strip().splitlines()[-1]
    reported = float(line.split("(")[1].split(" images/s")[0])
    return {
        "env": env_extra,
        "images_per_s": reported,
        "wall_s": wall,
        "user_s": user,
        "system_s": system,
        "kernel_share": system / (user + system),
        "minor_faults_per_s": (after.ru_minflt - before.ru_minflt) / wall,
        "line": line,
    }


SETTINGS = {
    "before": {"GRN_ENGINE": "torch", "GRN_TUNE_ALLOCATOR": "0"},
    "torch+alloc": {"GRN_ENGINE": "torch"},
    "onnxruntime": {"GRN_ENGINE": "onnxruntime"},
    "onnxruntime-noalloc": {"GRN_ENGINE": "onnxruntime", "GRN_TUNE_ALLOCATOR": "0"},
    "openvino": {"GRN_ENGINE": "openvino"},
}


def end_to_end(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.embed}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.embed_rounds):
            for name in args.embed:
                runs[name].append(embed_run(args, SETTINGS[name], Path(tmp) / f"{name}.npz"))
                print(f"  {name}: {runs[name][-1]['line']}", file=sys.stderr)
    return runs


def report(bare: dict[str, Any], e2e: dict[str, list[dict[str, Any]]]) -> str:
    median = bare["median"]
    before = median["torch, allocator untuned (before)"]
    tuned = median["torch, allocator tuned"]
    rounds = len(next(iter(bare["rounds"].values()))[1])
    lines = [
        f"model {bare['model']} (graph stored in the file: {bare['graph_stored']}); images/s, "
        f"median of {rounds} interleaved rounds",
        "",
        "| engine | batch 1 | batch 4 | batch 16 | x torch before (1 / 4 / 16) | "
        "x torch tuned (1 / 4 / 16) | max abs diff from torch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rates in median.items():
        ratio = " / ".join(f"{rates[b] / before[b]:.2f}" for b in BATCHES)
        ratio_tuned = " / ".join(f"{rates[b] / tuned[b]:.2f}" for b in BATCHES)
        lines.append(
            f"| {name} | "
            + " | ".join(f"{rates[b]:.1f}" for b in BATCHES)
            + f" | {ratio} | {ratio_tuned} | {bare['differences'][name]:.1e} |"
        )
    if e2e:
        lines += [
            "",
            "| grn embed setting | images/s (median) | runs | of its bare network, batch "
            "used | kernel share of CPU time | minor faults/s |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, runs in e2e.items():
            ips = statistics.median(r["images_per_s"] for r in runs)
            share = statistics.median(r["kernel_share"] for r in runs)
            faults = statistics.median(r["minor_faults_per_s"] for r in runs)
            engine = SETTINGS[name]["GRN_ENGINE"]
            if engine == "torch":
                own = (before if SETTINGS[name].get("GRN_TUNE_ALLOCATOR") == "0" else tuned)[4]
                batch = "8 (~4)"
            else:
                own, batch = median[engine][16], "16"
            settings = " ".join(f"{k}={v}" for k, v in SETTINGS[name].items())
            each = ", ".join(f"{r['images_per_s']:.1f}" for r in runs)
            lines.append(
                f"| {name} ({settings}) | {ips:.1f} | {each} | {ips / own:.0%} (batch {batch}) "
                f"| {share:.1%} | {faults:,.0f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "runs/ucm-head")
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0, help="per engine, batch and round")
    parser.add_argument("--split", default="test", help="what grn embed embeds (test: 420)")
    parser.add_argument("--embed", nargs="*", default=["before", "torch+alloc", "onnxruntime"],
                        choices=list(SETTINGS))  # fmt: skip
    parser.add_argument("--embed-rounds", type=int, default=2)
    parser.add_argument("--skip-bare", action="store_true")
    parser.add_argument("--bare-round", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--alloc", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.bare_round:
        print(json.dumps(bare_round(args)))
        return
    bare = bare_network(args) if not args.skip_bare else {}
    e2e = end_to_end(args) if args.embed else {}
    if bare:
        print(report(bare, e2e))
    else:
        print(json.dumps(e2e, indent=2))
    if args.json:
        args.json.write_text(json.dumps({"bare": bare, "embed": e2e}, indent=2))


if __name__ == "__main__":
    main()
