"""Ray Data embedding throughput with 1 and 2 workers, against the plain path in the same run.

    python -m bench.ray_embed_bench --out docs/results/ray-embed.json

Embeds the whole UCM archive (2100 scenes) with the `make run` model: first by the plain path
(`model.embedding.embed_scenes`: one process, decoding in a thread ahead of the network), then
with `index.ray_embed.ray_embed` on a local Ray instance with 1 and then 2 embedding actors,
each into a fresh folder. Ray's start-up is outside the timed part (a warm-up pipeline runs
first). Prints images/s for each, and checks that the Ray embeddings equal the plain ones;
also the median time to decode one UCM JPEG on one core.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import MODEL, REPO, UCM
from index.ray_embed import ray_embed, read_embeddings
from model.archive import load_archive, scene_id
from model.card import load_model
from model.embedding import embed_scenes
from model.imageio import decode_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--archive", type=Path, default=UCM)
    parser.add_argument("--model", type=Path, default=MODEL)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "docs/results/ray-embed.json")
    args = parser.parse_args()
    import ray

    archive = load_archive(args.archive)
    # the CPU cost of decoding, the part of embedding that stays on CPUs next to a GPU
    decode_ms = []
    for scene in archive.scenes[::7][:300]:
        data = scene.path.read_bytes()
        started = time.perf_counter()
        decode_image(data, scene.name)
        decode_ms.append((time.perf_counter() - started) * 1000)
    print(f"decoding: {np.median(decode_ms):.3f} ms per image (median of {len(decode_ms)})")
    net, card = load_model(args.model, "cpu")
    start = time.perf_counter()
    plain = embed_scenes(
        net, card, archive, archive.indices(), device=torch.device("cpu"), progress=False
    )
    plain_s = time.perf_counter() - start
    plain_ids = np.asarray([scene_id(s.name) for s in archive.scenes], dtype=np.int64)
    order = np.argsort(plain_ids)
    rows = [{"path": "plain", "workers": 1, "seconds": round(plain_s, 1),
             "images_per_s": round(len(plain_ids) / plain_s, 1)}]  # fmt: skip
    print(json.dumps(rows[-1]), flush=True)
    del net
    with tempfile.TemporaryDirectory() as scratch:
        ray.init(include_dashboard=False, log_to_driver=False)
        # warm-up: Ray's workers and the model's first load, outside the timing
        warm = load_archive(args.archive)
        warm_labels = Path(scratch) / "warm.csv"
        lines = (args.archive / "labels.csv").read_text().splitlines()
        warm_labels.write_text("\n".join(lines[:17]) + "\n")
        ray_embed(args.model, args.archive, Path(scratch) / "warm", labels_csv=warm_labels)
        del warm
        for workers in args.workers:
            out = Path(scratch) / f"w{workers}"
            report = ray_embed(
                args.model, args.archive, out, workers=workers, batch_size=args.batch_size
            )
            ids, embeddings, _ = read_embeddings(out)
            same = bool(
                np.array_equal(ids, plain_ids[order])
                and np.allclose(embeddings, plain.embeddings[order], atol=1e-4)
            )
            rows.append({"path": "ray", "workers": workers, "seconds": round(report.seconds, 1),
                         "images_per_s": round(report.images_per_s, 1),
                         "equal_to_plain": same})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
        ray.shutdown()
    result = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "scenes": len(plain_ids),
        "batch_size": args.batch_size,
        "decode_ms_per_image_median": round(float(np.median(decode_ms)), 3),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
